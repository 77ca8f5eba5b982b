"""Tests pinning behaviour that mutation testing found unchecked in ``scatloss.evaluate`` (group f5):
``image_metrics``, ``segmentation_confusion`` and ``detectability``.

Each test compares with an independent expectation: a float64 reference computed here, the documented contract
(clipping, the PSNR cap, eval mode, devices, defaults), an exact error message, or a detectability training run
re-derived step by step from its recipe (the probe's batches, masks, composites and Eq. 1 loss via
``scatloss.reference``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import scatloss.masks as masks_module
from scatloss import evaluate as ev
from scatloss import reference
from scatloss.masks import BUCKETS, MaskGenerator
from tests._pins import channel_map as _channel_map
from tests._pins import identity as _identity
from tests._pins import smooth_images
from tests.test_pins_evaluate import _documented_mask_seed


def _keeping(factory: Any, store: list[Any]) -> Any:
    """A probe factory that also appends each probe it builds to ``store``."""

    def build() -> nn.Module:
        store.append(factory())
        return store[-1]

    return build


class _Stop(Exception):
    """Raised by recording callables to end a run once they have seen what a test needs."""


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return smooth_images()


def _many_images(n: int, seed: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- image_metrics ---------------------------------------------------------------------------------------------------


def test_image_metrics_names_output_when_it_is_not_a_4d_float_tensor() -> None:
    """A non-float or non-4-D ``output`` is an error naming ``output`` (checked before ``target``)."""
    pytest.importorskip("torchmetrics")
    target = torch.zeros(1, 3, 12, 12)
    with pytest.raises(TypeError, match=r"^output: expected a floating-point tensor"):
        ev.image_metrics(torch.zeros(1, 3, 12, 12, dtype=torch.long), target)
    with pytest.raises(ValueError, match=r"^output: expected a 4-D tensor, got shape \(3, 12, 12\)$"):
        ev.image_metrics(torch.zeros(3, 12, 12), torch.zeros(3, 12, 12))


def test_image_metrics_accepts_images_of_exactly_the_ssim_window() -> None:
    """``H, W >= SSIM_MIN_SIZE``: 11x11 images are scored (a perfect copy: L1 0, SSIM 1, PSNR capped)."""
    pytest.importorskip("torchmetrics")
    x = torch.linspace(-1, 1, 3 * 11 * 11).reshape(1, 3, 11, 11)
    got = ev.image_metrics(x, x)
    assert float(got["l1"][0]) == 0.0
    assert float(got["ssim"][0]) == pytest.approx(1.0, abs=1e-6)
    assert bool(got["psnr_capped"][0]) and float(got["psnr"][0]) == ev.PSNR_CAP


def test_image_metrics_clips_values_below_minus_one_on_both_sides() -> None:
    """Values below -1 are clipped to 0 on the [0, 1] scale, in ``output`` and in ``target``: no error remains."""
    pytest.importorskip("torchmetrics")
    black = torch.full((1, 3, 12, 12), -1.0)
    below = torch.full((1, 3, 12, 12), -1.5)
    assert float(ev.image_metrics(below, black)["l1"][0]) == 0.0
    assert float(ev.image_metrics(black, below)["l1"][0]) == 0.0


def test_image_metrics_scores_float32_inputs_in_float64() -> None:
    """L1 is computed in float64 from float32 inputs: it equals a float64 numpy reference to 1e-15, and two equal
    float32 images whose ``(x + 1) / 2`` is not exact in float32 still have L1 exactly 0."""
    pytest.importorskip("torchmetrics")
    g = torch.Generator().manual_seed(2)
    output = torch.rand(2, 3, 12, 12, generator=g) * 2 - 1
    target = torch.rand(2, 3, 12, 12, generator=g) * 2 - 1
    o, t = output.double().numpy(), target.double().numpy()
    want = np.abs(np.clip((o + 1) / 2, 0, 1) - np.clip((t + 1) / 2, 0, 1)).mean(axis=(1, 2, 3))
    got = ev.image_metrics(output, target)["l1"]
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-15)
    tiny = torch.full((1, 3, 12, 12), 1e-8)  # float32 rounds (1e-8 + 1) / 2 to 0.5, float64 does not
    assert float(ev.image_metrics(tiny, tiny.clone())["l1"][0]) == 0.0


def test_finite_psnr_above_the_cap_is_capped_and_flagged() -> None:
    """An error of 1e-6 on [0, 1] (MSE 1e-12, PSNR 120 dB, finite) is reported at the cap and flagged."""
    pytest.importorskip("torchmetrics")
    target = torch.zeros(1, 3, 12, 12, dtype=torch.float64)
    output = target + 2e-6  # 1e-6 on the [0, 1] scale
    got = ev.image_metrics(output, target)
    assert bool(got["psnr_capped"][0])
    assert float(got["psnr"][0]) == ev.PSNR_CAP


def _psnr_exactly_the_cap() -> torch.Tensor:
    """A (1, 1, 12, 12) float64 image whose PSNR against zeros is exactly 100.0 in torchmetrics.

    Pixel errors are integers ``m`` times 2**-53 (exact after ``(x + 1) / 2``): all at ``m0`` (MSE ~ 1e-10), one
    raised by ``c + a`` and one lowered by ``a``, which moves the MSE by tiny steps (found by search)."""
    m0, c, a = 90071945510, 33, 240300
    m = torch.full((1, 1, 12, 12), float(m0), dtype=torch.float64)
    m[0, 0, 0, 0] += c + a
    m[0, 0, 0, 1] -= a
    return 2 * m * 2.0**-53


def test_psnr_of_exactly_the_cap_is_not_flagged() -> None:
    """Only PSNRs *above* the cap (or infinite) are flagged: a PSNR of exactly 100 dB stays unflagged."""
    tm = pytest.importorskip("torchmetrics.functional.image")
    output = _psnr_exactly_the_cap()
    target = torch.zeros_like(output)
    pred, true = (output + 1) / 2, (target + 1) / 2
    raw = tm.peak_signal_noise_ratio(pred, true, data_range=1.0, reduction="none", dim=(1, 2, 3))
    if float(raw[0]) != 100.0:
        pytest.skip(f"this torchmetrics computes {float(raw[0])!r} for the constructed pair, not exactly 100.0")
    got = ev.image_metrics(output, target)
    assert float(got["psnr"][0]) == 100.0
    assert not bool(got["psnr_capped"][0])


# ---- segmentation_confusion: arguments, defaults, devices, modes, out-of-bucket samples ------------------------------


def test_segmentation_confusion_errors_name_their_argument(images: torch.Tensor) -> None:
    """Bad ``buckets``, ``masks_per_image`` and ``output`` are errors naming that argument."""
    with pytest.raises(TypeError, match=r"^buckets: expected a non-empty sequence of \(lo, hi\) pairs"):
        ev.segmentation_confusion(_channel_map, _identity, images, buckets=())
    with pytest.raises(ValueError, match=r"^masks_per_image: expected a positive int, got 0$"):
        ev.segmentation_confusion(_channel_map, _identity, images, masks_per_image=0)
    with pytest.raises(ValueError, match=r"^output: expected one of 'logit_real', 'prob_generated', got 'logits'$"):
        ev.segmentation_confusion(_channel_map, _identity, images, output="logits")  # type: ignore[arg-type]


def test_segmentation_confusion_default_batch_size_is_eight() -> None:
    """Without ``batch_size`` the generator gets 8 images per call: 10 images -> batches of 8 and 2 per draw."""
    sizes: list[int] = []

    def counting(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        sizes.append(corrupted.shape[0])
        return corrupted

    ev.segmentation_confusion(_channel_map, counting, _many_images(10), buckets=((0.05, 0.5),))
    assert sizes == [8, 2]


def test_segmentation_confusion_records_masks_per_image(images: torch.Tensor) -> None:
    """The report keeps ``masks_per_image``, and every bucket has images x masks samples."""
    report = ev.segmentation_confusion(_channel_map, _identity, images, masks_per_image=2)
    assert report.masks_per_image == 2
    assert [b.count for b in report.buckets] == [2 * len(images)] * 3


class _MetaParameterG(nn.Module):
    """A generator whose only parameter lives on the meta device; records its inputs' devices, then stops."""

    def __init__(self, stop: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros((), device="meta"))
        self.stop = stop
        self.devices: list[tuple[torch.device, torch.device]] = []

    def forward(self, corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        self.devices.append((corrupted.device, hole.device))
        if self.stop:
            raise _Stop
        return corrupted


_META = torch.device("meta")


def test_segmentation_confusion_runs_on_the_generators_device(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``device=None``: the generator's parameters' device wins over the CPU images (here meta)."""
    monkeypatch.setattr(ev, "hole_ratio", lambda hole: torch.full((hole.shape[0],), 0.1))  # meta has no data
    g = _MetaParameterG()
    with pytest.raises(_Stop):
        ev.segmentation_confusion(_channel_map, g, images)
    assert g.devices == [(_META, _META)]


def _accept_meta_batches(name: str, x: Any) -> torch.Tensor:
    """``_check_batch`` without the value-range check, which needs data that meta tensors lack."""
    return x if x.dim() == 4 else x.unsqueeze(0)


def test_segmentation_confusion_runs_on_the_images_device(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``device=None`` and a plain-function generator: the run goes to the device of an ``images`` tensor."""
    monkeypatch.setattr(ev, "hole_ratio", lambda hole: torch.full((hole.shape[0],), 0.1))
    monkeypatch.setattr(ev, "_check_batch", _accept_meta_batches)
    seen: list[tuple[torch.device, torch.device]] = []

    def recorder(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        seen.append((corrupted.device, hole.device))
        raise _Stop

    with pytest.raises(_Stop):
        ev.segmentation_confusion(_channel_map, recorder, images.to("meta"))
    assert seen == [(_META, _META)]


def test_segmentation_confusion_runs_a_module_segmenter_in_eval_mode(images: torch.Tensor) -> None:
    """An ``nn.Module`` segmenter runs in eval mode, and its train flag is restored afterwards."""

    class Seg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.modes: list[bool] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.modes.append(self.training)
            return x[:, :1]

    seg = Seg().train()
    ev.segmentation_confusion(seg, _identity, images, buckets=((0.05, 0.5),))
    assert seg.modes == [False]
    assert seg.training


def test_out_of_bucket_samples_do_not_hide_the_rest_of_their_batch(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a batch where one sample falls in no bucket, the other samples are still scored in their bucket."""
    calls = {"n": 0}

    def first_too_big(height: int, width: int, *, bucket=None, generator=None, seed=None) -> torch.Tensor:
        mask = torch.zeros(1, height, width)
        if calls["n"] % len(images) == 0:
            mask[:] = 1.0
            mask[:, 0] = 0.0  # ratio 15/16: in no default bucket
        else:
            mask[:, : height // 2] = 1.0  # ratio 1/2: "40-60%"
        calls["n"] += 1
        return mask

    monkeypatch.setattr(ev, "free_form_mask", first_too_big)
    report = ev.segmentation_confusion(_channel_map, _identity, images, batch_size=len(images))
    assert report.out_of_bucket == 3  # the first image of each of the 3 bucket draws
    assert [b.count for b in report.buckets] == [0, 0, 3 * (len(images) - 1)]
    assert report.overall.count == 3 * (len(images) - 1)


# ---- detectability: argument checks ----------------------------------------------------------------------------------


def _tiny_probe() -> nn.Module:
    return nn.Conv2d(3, 1, 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, r"^steps: expected a positive int, got 0$"),
        ({"batch_size": 0}, ValueError, r"^batch_size: expected a positive int, got 0$"),
        ({"seed": -1}, TypeError, r"^seed: expected a non-negative int, got int -1$"),
        ({"seed": True}, TypeError, r"^seed: expected a non-negative int, got bool True$"),
        ({"seed": "3"}, TypeError, r"^seed: expected a non-negative int, got str '3'$"),
        ({"lr": True}, ValueError, r"^lr: expected a positive float, got True$"),
        ({"lr": "0.1"}, ValueError, r"^lr: expected a positive float, got '0.1'$"),
    ],
)
def test_detectability_argument_errors(images: torch.Tensor, kwargs: dict, error: type, match: str) -> None:
    """Bad ``steps``, ``batch_size``, ``seed`` and ``lr`` are errors naming the argument (bools are not numbers)."""
    settings = {"steps": 1, "batch_size": 2, "segmenter": _tiny_probe, **kwargs}
    with pytest.raises(error, match=match):
        ev.detectability(_identity, images, images[:1], **settings)


# ---- detectability: the training run, re-derived step by step -------------------------------------------------------


class _RecordingProbe(nn.Module):
    """A 1x1-conv probe that records, in training mode, each input and the logits it returned."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.training:
            self.seen.append((x.detach().clone(), out.detach().clone()))
        return out


class _AdamSpy(torch.optim.Adam):
    """``torch.optim.Adam`` that records how it was built."""

    built: list[dict[str, Any]] = []

    def __init__(self, params: Any, **kwargs: Any) -> None:
        params = list(params)
        _AdamSpy.built.append({"params": params, **kwargs})
        super().__init__(params, **kwargs)


@pytest.fixture
def adam_spy(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    _AdamSpy.built = []
    monkeypatch.setattr(torch.optim, "Adam", _AdamSpy)
    return _AdamSpy.built


def test_detectability_training_run_follows_its_recipe(images: torch.Tensor, adam_spy: list[dict[str, Any]]) -> None:
    """Each probe step: ``batch_size`` training images drawn by ``randint`` from a generator seeded with the
    (seed, 1) recipe seed, masks from ``MaskGenerator(buckets, seed = (seed, 2) recipe seed mod 2**62)``, G fed
    ``corrupt(image, hole, fill)`` and the hole, the probe fed the composite (in the images' dtype) then the image,
    Adam with the given lr and betas on the probe's parameters, the report's ``last_loss`` Eq. 1 (BCE) of the last
    step; then held-out scoring with every option passed on, in batches of ``max(batch_size, 8)``."""
    seed, steps, batch, fill = 3, 3, 2, -0.5
    buckets = ((0.1, 0.3), (0.3, 0.5))
    test_images = _many_images(9)
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    init_seeds: list[int] = []
    probes: list[_RecordingProbe] = []

    def generator(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        calls.append((corrupted.clone(), hole.clone()))
        return torch.full(corrupted.shape, 0.25, dtype=torch.float64)  # float64 on purpose

    def factory() -> nn.Module:
        init_seeds.append(torch.initial_seed())
        probes.append(_RecordingProbe())
        return probes[-1]

    report = ev.detectability(
        generator, images, test_images, steps=steps, batch_size=batch, lr=0.01, betas=(0.6, 0.99),
        segmenter=factory, seed=seed, buckets=buckets, masks_per_image=2, fill=fill, threshold=0.3,
    )  # fmt: skip
    (probe,) = probes
    assert init_seeds == [seed]
    assert len(adam_spy) == 1
    assert adam_spy[0]["lr"] == 0.01 and adam_spy[0]["betas"] == (0.6, 0.99)
    assert [id(p) for p in adam_spy[0]["params"]] == [id(p) for p in probe.parameters()]

    order = torch.Generator().manual_seed(_documented_mask_seed(seed, 1, (0.0, 1.0), 0))
    masks = MaskGenerator(16, 16, buckets=buckets, seed=_documented_mask_seed(seed, 2, (0.0, 1.0), 0) % 2**62)
    assert len(probe.seen) == 2 * steps
    for step in range(steps):
        image = images[torch.randint(len(images), (batch,), generator=order)]
        hole = masks.sample(batch)
        corrupted, g_hole = calls[step]
        assert torch.equal(g_hole, hole)
        torch.testing.assert_close(corrupted, image * (1 - hole) + fill * hole, rtol=0, atol=1e-7)
        (comp, _), (real, _) = probe.seen[2 * step], probe.seen[2 * step + 1]
        assert comp.dtype == torch.float32
        torch.testing.assert_close(comp, hole * 0.25 + (1 - hole) * image, rtol=0, atol=1e-7)
        assert torch.equal(real, image)
    fake_logits, real_logits = probe.seen[-2][1], probe.seen[-1][1]
    want_loss = float(reference.scat_segmenter_loss(fake_logits, real_logits, hole, "bce", "mean"))
    assert report.probe is not None
    assert report.probe.pop("last_loss") == pytest.approx(want_loss, abs=2e-6)
    assert report.probe == {"steps": steps, "batch_size": batch, "lr": 0.01, "kind": "bce", "train_images": 3}

    scoring = calls[steps:]  # batches of 8 then 1, each: bucket x mask draws
    assert [c.shape[0] for c, _ in scoring] == [8] * 4 + [1] * 4
    for corrupted, hole in scoring:
        assert bool((corrupted[hole.expand_as(corrupted) > 0.5] == fill).all())
    assert (report.seed, report.masks_per_image, report.fill, report.threshold) == (seed, 2, fill, 0.3)
    assert tuple(b.bounds for b in report.buckets) == buckets
    assert [b.count for b in report.buckets] == [18, 18] and report.n_images == 9


def test_detectability_scores_in_batches_of_at_least_the_training_batch(images: torch.Tensor) -> None:
    """A training batch above 8 is also the scoring batch: 12 held-out images go to G as 10 + 2."""
    sizes: list[int] = []

    def counting(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        sizes.append(corrupted.shape[0])
        return corrupted

    ev.detectability(
        counting, images, _many_images(12), steps=1, batch_size=10, segmenter=_tiny_probe, buckets=((0.05, 0.5),)
    )
    assert sizes == [10, 10, 2]  # one training step, then the scoring batches


class _FixedMasks:
    """Fast stand-in for ``MaskGenerator``: the same 4x4 hole in every mask."""

    def __init__(self, height: int, width: int, *, buckets: Any = BUCKETS, seed: int = 0) -> None:
        self.height, self.width = height, width

    def sample(self, n: int) -> torch.Tensor:
        mask = torch.zeros(n, 1, self.height, self.width)
        mask[..., 4:8, 4:8] = 1.0
        return mask


class _BiasProbe(nn.Module):
    """The cheapest probe: one learnt logit for every pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * 0 + self.bias


def test_detectability_defaults(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch, adam_spy: list[dict[str, Any]]
) -> None:
    """Defaults: 300 steps of 8 images, Adam lr 4e-4 and betas (0.5, 0.999), seed 0, BCE, one mask per image, fill
    1.0 (white holes) and threshold 0.5."""
    monkeypatch.setattr(masks_module, "MaskGenerator", _FixedMasks)
    fills: list[float] = []
    seeds: list[int] = []

    def generator(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        if not fills:
            fills.append(float(corrupted[0, 0, 5, 5]))  # a hole pixel of the first training batch
        return corrupted

    def factory() -> nn.Module:
        seeds.append(torch.initial_seed())
        return _BiasProbe()

    report = ev.detectability(generator, images, images[:1], segmenter=factory)
    assert report.probe is not None
    assert {k: v for k, v in report.probe.items() if k != "last_loss"} == {
        "steps": 300, "batch_size": 8, "lr": 4e-4, "kind": "bce", "train_images": 3,
    }  # fmt: skip
    assert adam_spy[0]["lr"] == 4e-4 and adam_spy[0]["betas"] == (0.5, 0.999)
    assert seeds == [0] and fills == [1.0]
    assert (report.seed, report.masks_per_image, report.fill, report.threshold) == (0, 1, 1.0, 0.5)


def test_detectability_does_not_move_parameters_a_step_did_not_use(images: torch.Tensor) -> None:
    """Gradients are reset to None between steps: a parameter used only in the first step gets no Adam update
    (no stale momentum) in the later ones."""

    class FirstStepOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)
            self.extra = nn.Parameter(torch.zeros(()))
            self.calls = 0
            self.after_first_step: torch.Tensor | None = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls == 3:  # first call of the second step
                self.after_first_step = self.extra.detach().clone()
            out = self.conv(x)
            return out + self.extra if self.calls <= 2 else out

    probes: list[FirstStepOnly] = []
    ev.detectability(
        _identity,
        images,
        images[:1],
        steps=3,
        batch_size=2,
        segmenter=_keeping(FirstStepOnly, probes),
    )
    (probe,) = probes
    assert probe.after_first_step is not None and float(probe.after_first_step) != 0.0  # step 1 moved it
    assert torch.equal(probe.extra.detach(), probe.after_first_step)


def test_detectability_records_a_non_finite_last_loss_as_none(images: torch.Tensor) -> None:
    """A NaN training loss is reported as ``last_loss = None``, so the report stays strict JSON."""

    class NaNWhileTraining(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * math.nan if self.training else x[:, :1]

    report = ev.detectability(_identity, images, images[:1], steps=1, batch_size=2, segmenter=NaNWhileTraining)
    assert report.probe is not None and report.probe["last_loss"] is None
    assert "NaN" not in report.to_json()


# ---- detectability: devices -----------------------------------------------------------------------------------------


def test_detectability_runs_on_the_generators_device(images: torch.Tensor) -> None:
    """``device=None``: the generator's parameters' device (meta) wins over the CPU training images."""
    g = _MetaParameterG()
    with pytest.raises(_Stop):
        ev.detectability(g, images, images, steps=1, batch_size=2, segmenter=_tiny_probe)
    assert g.devices == [(_META, _META)]


def test_detectability_runs_on_the_training_images_device(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``device=None`` and a plain-function generator: the probe trains on the device of a ``train_images`` tensor."""
    monkeypatch.setattr(ev, "_check_batch", _accept_meta_batches)
    seen: list[tuple[torch.device, torch.device]] = []

    def recorder(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        seen.append((corrupted.device, hole.device))
        raise _Stop

    with pytest.raises(_Stop):
        ev.detectability(recorder, images.to("meta"), images, steps=1, batch_size=2, segmenter=_tiny_probe)
    assert seen == [(_META, _META)]


def test_detectability_moves_the_probe_and_the_batches_to_the_device(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``device="meta"``: G gets meta images and masks, and the probe (built on the CPU) is moved to meta."""
    monkeypatch.setattr(ev, "_check_prediction", lambda prediction, batch: None)  # needs data meta lacks
    seen: list[tuple[torch.device, torch.device]] = []

    def recorder(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        seen.append((corrupted.device, hole.device))
        return corrupted

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)
            self.devices: list[tuple[torch.device, torch.device]] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.devices.append((x.device, self.conv.weight.device))
            raise _Stop

    probes: list[Probe] = []
    with pytest.raises(_Stop):
        ev.detectability(
            recorder, images, images, steps=1, batch_size=2, device="meta",
            segmenter=_keeping(Probe, probes),
        )  # fmt: skip
    assert seen == [(_META, _META)]
    assert probes[0].devices == [(_META, _META)]


def test_detectability_explicit_device_wins_over_the_generators(images: torch.Tensor) -> None:
    """``device="cpu"`` with a generator holding meta parameters: training and scoring both run on the CPU."""
    g = _MetaParameterG(stop=False)
    report = ev.detectability(
        g, images, images[:1], steps=1, batch_size=2, segmenter=_tiny_probe, device="cpu", buckets=((0.05, 0.5),)
    )
    assert report.overall.count == 1
    assert g.devices == [(torch.device("cpu"), torch.device("cpu"))] * 2  # one training step, one scoring batch


def test_detectability_forks_the_rng_of_a_cuda_run_device_only(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's init runs under ``torch.random.fork_rng`` over the run's device when it is a CUDA device, and
    over no CUDA device otherwise (checked through the arguments, as this machine may have no GPU)."""
    forked: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        forked.append(kwargs.get("devices", "missing"))
        raise _Stop

    monkeypatch.setattr(torch.random, "fork_rng", spy)
    with pytest.raises(_Stop):
        ev.detectability(_identity, images, images, steps=1, segmenter=_tiny_probe, device="cpu")
    cuda = torch.device("cuda", 1)
    monkeypatch.setattr(ev, "_resolve_device", lambda device, generator, images: cuda)  # no CUDA needed: stops first
    with pytest.raises(_Stop):
        ev.detectability(_identity, images, images, steps=1, segmenter=_tiny_probe, device="cuda:1")
    assert forked == [[], [cuda]]
