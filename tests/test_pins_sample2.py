"""Tests pinning behaviour that mutation testing found unchecked in sample2.

Sample2 = surviving mutants of ``scatloss.adapters`` (``_common``, ``aotgan``, ``lama``), ``scatloss.evaluate``,
``scatloss.functional`` and ``scatloss.masks``. Each test compares with an independent expectation (a hand-computed
value, the documented argument name of an error, a pixel count re-derived here) on inputs where a surviving mutant
behaves differently.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import scatloss.functional as SF
import scatloss.masks as masks_module
from scatloss import evaluate as ev
from scatloss.adapters import aotgan as aotgan_module
from scatloss.adapters._common import layer_channels
from scatloss.adapters.aotgan import SCATDiscriminator, SCATGANLoss
from scatloss.adapters.lama import SCATAdversarialLoss
from tests._pins import (
    B,
    C,
    S,
    aot_images,
    composite,
    holes,
    patch_d,
    scat_d,
    smooth_images,
    tiny_seg,
)
from tests._pins import channel_map as _channel_map
from tests._pins import identity as _identity


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return smooth_images()


def test_layer_channels_of_the_root_module_counts_through_all_children() -> None:
    """``layer=""`` (the whole module, as named by ``named_modules()``): the last conv's ``out_channels``."""
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(5, 7, 3), nn.ReLU()))
    assert layer_channels(net, "") == 7
    assert layer_channels(net, "2") == 7
    assert layer_channels(net, "1") == 5


# ----------------------------------------------------------------------------------------------------------------------
# aotgan.SCATDiscriminator / SCATGANLoss
# ----------------------------------------------------------------------------------------------------------------------


def test_scat_discriminator_accepts_mean_pooling() -> None:
    """``semantic_pool="mean"`` is one of the documented choices: accepted and kept."""
    d = scat_d(semantic_pool="mean")
    assert d.semantic_pool == "mean"
    assert d.feature_dim == 4  # the conv feeding the auto semantic layer has 2 * c = 4 channels


def test_gan_loss_scat_kind_error_names_scat_kind() -> None:
    """An unknown ``scat_kind`` raises ``ValueError`` naming ``scat_kind``."""
    with pytest.raises(ValueError, match=r"^scat_kind: expected one of 'hinge', 'bce', 'ls', got 'wgan'$"):
        SCATGANLoss(scat_kind="wgan")  # type: ignore[arg-type]


def test_gan_loss_last_terms_starts_as_an_empty_dict() -> None:
    """Before any call :attr:`last_terms` is an empty dict (loggers can iterate it)."""
    assert SCATGANLoss().last_terms == {}


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
def test_gan_loss_objective_uses_the_discriminator_head() -> None:
    """The objective's semantic term projects with the SCATDiscriminator's own head (the one ``generator_parameters``
    hands to optimG), of the sizes given to the wrapper; ``out_features=0`` is refused by name at construction."""
    torch.manual_seed(0)
    d = SCATDiscriminator(patch_d(), segmenter=tiny_seg(), hidden_features=4, out_features=3)
    head = SCATGANLoss().criterion(d).objective.semantic.projection
    assert head is d.projection
    assert [tuple(m.weight.shape) for m in head if isinstance(m, nn.Linear)] == [(4, d.feature_dim), (3, 4)]
    with pytest.raises(ValueError, match=r"^out_features: expected a positive int \(a projection head size\), got 0$"):
        SCATDiscriminator(patch_d(), segmenter=tiny_seg(), hidden_features=4, out_features=0)


def test_gan_loss_mask_batch_error_names_masks() -> None:
    """A hole mask of another batch size than ``real`` raises ``ValueError`` naming ``masks``."""
    real = aot_images()
    with pytest.raises(ValueError, match=r"^masks: expected batch size 2 to match the other inputs, got 1$"):
        SCATGANLoss()(scat_d(), real, real, holes(1))


def test_gan_loss_broadcasts_the_head_only_on_the_first_ddp_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under DDP the projection head is broadcast from rank 0 on the first call only, not on every call."""
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no process group yet")
    calls: list[int] = []
    real_broadcast = aotgan_module.broadcast_parameters

    def counting(params, group=None):  # type: ignore[no-untyped-def]
        calls.append(len(params))
        real_broadcast(params, group)

    monkeypatch.setattr(aotgan_module, "broadcast_parameters", counting)
    real, masks = aot_images(), holes()
    fake = composite(real, masks)
    loss = SCATGANLoss()
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{Path(tmp) / 'store'}", rank=0, world_size=1)
        try:
            wrapped = nn.parallel.DistributedDataParallel(scat_d())
            loss(wrapped, fake, real, masks)
            loss(wrapped, fake, real, masks)
        finally:
            dist.destroy_process_group()
    assert calls == [4]  # once, with the head's two weights and two biases


# ----------------------------------------------------------------------------------------------------------------------
# lama.SCATAdversarialLoss: mask_scale_mode="max"
# ----------------------------------------------------------------------------------------------------------------------


def test_lama_max_mask_scale_mode_marks_every_patch_touching_a_hole() -> None:
    """``mask_scale_mode="max"``: a 16x16 mask goes to the 2x2 patch map by max over 8x8 blocks, so one hole pixel
    marks its whole block. Hinge with masked-only generator term and ``D(fake) = -1``: ``adv = mean(m)``."""
    torch.manual_seed(0)
    loss = SCATAdversarialLoss(
        segmenter=tiny_seg(),
        kind="hinge",
        allow_scale_mask=True,
        mask_scale_mode="max",
        use_unmasked_for_gen=False,
        use_unmasked_for_discr=False,
    )
    real = torch.rand(B, C, S, S, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(B, 1, S, S)
    mask[0, 0, 1, 1] = 1.0  # block (0, 0) of sample 0
    mask[1, 0, 9, 2:4] = 1.0  # block (1, 0) of sample 1
    fake = mask * torch.rand_like(real) + (1 - mask) * real
    pred = torch.full((B, 1, 2, 2), -1.0)
    _, metrics = loss.generator_loss(real, fake, pred, pred, mask)
    # m = [[1, 0], [0, 0]] and [[0, 0], [1, 0]]: 2 of 8 patches; area would give 2/64 / 8, nearest 0
    assert float(metrics["gen_adv_term"]) == pytest.approx(0.25, abs=1e-7)


# ----------------------------------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------------------------------


def _hole_values_recorder(seen: list[torch.Tensor]):  # type: ignore[no-untyped-def]
    def recorder(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        seen.append(corrupted[hole.expand_as(corrupted) > 0.5])
        return corrupted

    return recorder


@pytest.mark.parametrize("fill", [None, -0.5])
def test_segmentation_confusion_fills_the_holes_of_the_generator_input(images: torch.Tensor, fill) -> None:  # type: ignore[no-untyped-def]
    """G's input holds ``fill`` in every hole pixel (default 1.0, as documented)."""
    seen: list[torch.Tensor] = []
    kwargs = {} if fill is None else {"fill": fill}
    report = ev.segmentation_confusion(_channel_map, _hole_values_recorder(seen), images, **kwargs)
    expected = 1.0 if fill is None else fill
    assert report.fill == expected
    assert len(seen) == 3 and all(v.numel() > 0 for v in seen)
    for values in seen:
        assert torch.all(values == expected)


def test_evaluate_fills_the_holes_of_the_generator_input(images: torch.Tensor) -> None:
    """``evaluate(fill=...)`` writes ``fill`` into the holes G sees."""
    pytest.importorskip("torchmetrics")
    seen: list[torch.Tensor] = []
    ev.evaluate(_hole_values_recorder(seen), images, buckets=((0.1, 0.3),), fill=0.25)
    assert len(seen) == 1 and seen[0].numel() > 0
    assert torch.all(seen[0] == 0.25)


def test_confusion_buckets_count_hole_and_known_pixels(images: torch.Tensor) -> None:
    """Each bucket pools ``count * H * W`` pixels, split into hole pixels (ratio inside the bucket) and known."""
    report = ev.segmentation_confusion(_channel_map, _identity, images, buckets=((0.1, 0.3), (0.3, 0.5)))
    for bucket in (*report.buckets, report.overall):
        total = bucket.count * 16 * 16
        assert bucket.count == (3 if bucket.name != "all" else 6)
        assert bucket.hole_pixels + bucket.known_pixels == total
        lo, hi = bucket.bounds
        assert lo * total <= bucket.hole_pixels < hi * total


def test_segmenter_p_generated_names_output() -> None:
    """An unknown ``output`` of ``segmenter_p_generated`` raises ``ValueError`` naming ``output``."""
    with pytest.raises(ValueError, match=r"^output: expected one of 'logit_real', 'prob_generated', got 'logit'$"):
        ev.segmenter_p_generated(_channel_map, torch.zeros(1, 3, 4, 4), output="logit")  # type: ignore[arg-type]


class _RecordingFeatures(nn.Module):
    """Stand-in for Inception: records its uint8 inputs, returns per-channel mean and std."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        x = x.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_fid_feeds_grey_images_as_three_equal_channels(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """1-channel images reach the FID extractor as ``(B, 3, H, W)`` uint8 with three copies of the grey channel."""
    pytest.importorskip("torchmetrics")
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"stand-in")
    extractor = _RecordingFeatures()
    monkeypatch.setattr(ev, "_torch_fidelity_available", lambda: True)
    monkeypatch.setattr(ev, "_load_inception", lambda path: extractor)
    grey = torch.linspace(-1, 1, 3 * 12 * 12).view(3, 1, 12, 12)
    report = ev.evaluate(_identity, grey, buckets=((0.1, 0.3),), fid_weights=weights)
    assert report.fid_status == "ok"
    assert report.buckets[0].count == 3
    real_inputs = [x for x in extractor.seen if x.shape[0] == 3]
    assert real_inputs, "the extractor saw no batch of the 3 images"
    want = ((grey + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    for x in extractor.seen:
        assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == (3, 12, 12)
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert any(torch.equal(x[:, :1], want) for x in real_inputs)  # the ground truths, unchanged


# ----------------------------------------------------------------------------------------------------------------------
# functional: errors name the argument that is wrong
# ----------------------------------------------------------------------------------------------------------------------


def test_adversarial_discriminator_loss_names_empty_real_logits() -> None:
    """An empty ``real_logits`` (no batch) raises ``ValueError`` naming ``real_logits``."""
    with pytest.raises(ValueError, match=r"^real_logits: expected a non-empty batch \(B >= 1\), got shape \(0, 1\)$"):
        SF.adversarial_discriminator_loss(torch.zeros(2, 1), torch.zeros(0, 1))


def test_reconstruction_loss_names_an_empty_prediction() -> None:
    """An empty batch (prediction and image both ``(0, C, H, W)``) raises ``ValueError`` naming ``prediction``."""
    with pytest.raises(ValueError, match=r"^prediction: expected a non-empty batch \(B >= 1\)"):
        SF.reconstruction_loss(torch.zeros(0, 3, 4, 4), torch.zeros(0, 3, 4, 4))


# ----------------------------------------------------------------------------------------------------------------------
# masks: the fill-in fallback
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "n_min"), [((1, 5), 3), ((5, 5), 9)])
def test_fallback_takes_a_ring_of_exactly_the_needed_size_without_drawing(shape: tuple[int, int], n_min: int) -> None:
    """When the dilation ring holds exactly the missing pixel count, all of it is added and ``gen`` is not used
    (seeded mask streams stay the same): from the centre pixel, the ring is its 2 (1x5) or 8 (5x5) neighbours."""
    mask = np.zeros(shape, dtype=bool)
    mask[shape[0] // 2, shape[1] // 2] = True
    gen = torch.Generator().manual_seed(3)
    before = gen.get_state()
    masks_module._grow(mask, 1, n_min, gen)
    expected = np.zeros(shape, dtype=bool)
    cy, cx = shape[0] // 2, shape[1] // 2
    expected[max(0, cy - 1) : cy + 2, cx - 1 : cx + 2] = True
    np.testing.assert_array_equal(mask, expected)
    assert torch.equal(gen.get_state(), before)
