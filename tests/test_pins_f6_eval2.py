"""Tests pinning behaviour of :mod:`scatloss.evaluate` that mutation testing (run f6, helper h10) found unchecked.

The per-bucket FID (a number from 2 samples on, hand-computed for a one-feature stand-in of Inception that, like
Inception, only takes uint8 images; None when one side has fewer than 2 samples or when the value is not finite),
the torch-fidelity check behind ``fid_status``, the iterables ``evaluate`` accepts (a DataLoader: a length but no
indexing; a dict is refused), the metrics' dtype on MPS, :class:`~scatloss.evaluate.ConfusionReport`'s Markdown
note (probe settings, samples in no bucket), ``EvaluationReport[name]``, the IoU's ``P(generated) >= threshold``
(a score equal to the threshold counts as a hole) and (CUDA only) the FID state on the run's device. Each test
compares with an independent expectation: a hand-computed value, the documented contract or an exact message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("torchmetrics")
pytest.importorskip("torchmetrics.image.fid")  # decides torchmetrics' torch-fidelity flag before any test runs

from scatloss import evaluate as ev  # noqa: E402

_CPU = torch.device("cpu")
_TWO_BUCKETS = ((0.05, 0.3), (0.3, 0.6))


class _MeanFeature(nn.Module):
    """Stand-in for Inception: one feature, the mean of a uint8 image on [0, 1] (times ``scale``).

    Like torch-fidelity's Inception it refuses anything but uint8 images, and it has no ``num_features``
    attribute, so torchmetrics probes it with a dummy image to learn its feature size."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise TypeError(f"expecting uint8 images, got {x.dtype}")
        return (x.float() / 255).mean(dim=(1, 2, 3)).unsqueeze(1) * self.scale


def _grey_images() -> torch.Tensor:
    """Two flat 16x16 RGB images at the 8-bit levels 40 and 200 (exact on the uint8 grid)."""
    levels = torch.tensor([40.0, 200.0]) / 127.5 - 1.0
    return levels.view(2, 1, 1, 1).expand(2, 3, 16, 16).contiguous()


def _frechet_1d(a: list[float], b: list[float]) -> float:
    """Fréchet distance of two 1-D Gaussians fitted with the unbiased variance: (m_a - m_b)^2 + (s_a - s_b)^2."""

    def fit(x: list[float]) -> tuple[float, float]:
        m = sum(x) / len(x)
        return m, math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1))

    (ma, sa), (mb, sb) = fit(a), fit(b)
    return (ma - mb) ** 2 + (sa - sb) ** 2


def _fid_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, extractor: nn.Module) -> Path:
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"stand-in")
    monkeypatch.setattr(ev, "_torch_fidelity_available", lambda: True)
    monkeypatch.setattr(ev, "_load_inception", lambda path: extractor)
    return weights


class _WhiteFill:
    """A generator that predicts white (1.0) everywhere and records the holes it is given, bucket by bucket."""

    def __init__(self) -> None:
        self.holes: list[torch.Tensor] = []

    def __call__(self, corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        self.holes.append(hole.clone())
        return torch.ones_like(corrupted)


# ----------------------------------------------------------------------------------------------------------------------
# FID
# ----------------------------------------------------------------------------------------------------------------------


def test_fid_of_a_two_sample_bucket_is_the_frechet_distance_of_the_uint8_features(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two images, one mask per bucket: every bucket has 2 samples, the least FID needs, so its ``fid`` is a
    number: the Fréchet distance between the features of the ground truths and of the composites (white holes),
    both fed as uint8 images (``normalize=False``: the extractor only ever sees uint8, also when torchmetrics
    probes its feature size)."""
    weights = _fid_setup(monkeypatch, tmp_path, _MeanFeature())
    images = _grey_images()
    generator = _WhiteFill()
    report = ev.evaluate(generator, images, buckets=_TWO_BUCKETS, batch_size=2, fid_weights=weights)
    assert report.fid_status == "ok"
    assert [b.count for b in report.buckets] == [2, 2]
    real = [40 / 255, 200 / 255]
    for bucket, hole in zip(report.buckets, generator.holes, strict=True):
        ratio = [float(h.mean()) for h in hole]
        fake = [(1 - r) * v + r for r, v in zip(ratio, real, strict=True)]
        assert bucket.fid == pytest.approx(_frechet_1d(real, fake), rel=1e-4, abs=1e-6)
        assert bucket.fid > 1e-3


def test_fid_that_overflows_is_reported_as_none_and_the_report_stays_strict_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Features of order 1e30 (finite float32) give an FID of order 1e60, infinite in the features' float32: the
    bucket's ``fid`` is None (never inf), so ``to_json`` (``allow_nan=False``) still works."""
    weights = _fid_setup(monkeypatch, tmp_path, _MeanFeature(scale=1e30))
    report = ev.evaluate(_WhiteFill(), _grey_images(), buckets=_TWO_BUCKETS, batch_size=2, fid_weights=weights)
    assert report.fid_status == "ok"
    assert [b.fid for b in report.buckets] == [None, None]
    assert [b["fid"] for b in json.loads(report.to_json())["buckets"]] == [None, None]


def test_fid_compute_gives_none_when_either_side_has_fewer_than_two_samples() -> None:
    """FID needs 2 samples of *each* distribution (torchmetrics raises otherwise): 3 real and 1 fake, or 1 real
    and 3 fake, give None instead of an error; 3 and 3 give the Fréchet distance."""
    u8 = torch.tensor([10, 90, 250], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 3, 4, 4)
    for n_real, n_fake in ((3, 1), (1, 3)):
        (metric,) = ev._fid_metrics(_MeanFeature(), 1, _CPU)
        metric.update(u8[:n_real], real=True)
        metric.update(u8[:n_fake].flip(0), real=False)
        assert ev._fid_compute(metric) is None
    (metric,) = ev._fid_metrics(_MeanFeature(), 1, _CPU)
    metric.update(u8, real=True)
    metric.update(u8 // 2, real=False)
    want = _frechet_1d([10 / 255, 90 / 255, 250 / 255], [5 / 255, 45 / 255, 125 / 255])
    assert ev._fid_compute(metric) == pytest.approx(want, rel=1e-4)


def test_torch_fidelity_check_follows_whether_the_package_can_be_imported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``_torch_fidelity_available`` is True when a ``torch_fidelity`` package is importable and False when it is
    not; without it, an existing weights file gives the documented ``fid_status`` and no FID."""
    package = tmp_path / "site" / "torch_fidelity"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    with monkeypatch.context() as m:
        m.delitem(sys.modules, "torch_fidelity", raising=False)
        m.syspath_prepend(str(tmp_path / "site"))
        assert ev._torch_fidelity_available() is True
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # what a failed import leaves: not importable
    assert ev._torch_fidelity_available() is False
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"weights")
    report = ev.evaluate(_WhiteFill(), _grey_images(), buckets=_TWO_BUCKETS, fid_weights=weights)
    assert report.fid_status == (
        "unavailable: torchmetrics' FrechetInceptionDistance needs torch-fidelity, which is not installed "
        "(pip install torch-fidelity)"
    )
    assert [b.fid for b in report.buckets] == [None, None]


# ----------------------------------------------------------------------------------------------------------------------
# evaluate: inputs, dtype, report lookup
# ----------------------------------------------------------------------------------------------------------------------


def test_evaluate_takes_a_dataloader_and_refuses_a_dict() -> None:
    """A DataLoader (a length but no indexing) is iterated: its ``[images]`` batches score exactly like the
    tensor itself. A dict is not an iterable of images: a TypeError with the documented message."""
    images = _grey_images()
    loader = DataLoader(TensorDataset(images), batch_size=1)
    from_loader = ev.evaluate(_WhiteFill(), loader, buckets=_TWO_BUCKETS)
    assert from_loader.n_images == 2
    assert from_loader.to_dict() == ev.evaluate(_WhiteFill(), images, buckets=_TWO_BUCKETS).to_dict()
    with pytest.raises(
        TypeError,
        match=r"^images: expected a \(N, C, H, W\) tensor, a dataset or an iterable of image tensors, got dict$",
    ):
        ev.evaluate(_WhiteFill(), {"a": images[0]}, buckets=_TWO_BUCKETS)


def test_metrics_are_float32_on_mps_and_float64_elsewhere() -> None:
    """``image_metrics`` scores in float64, or float32 on MPS (which has no float64)."""
    assert ev._metric_dtype(torch.device("mps")) is torch.float32
    assert ev._metric_dtype(torch.device("mps", 0)) is torch.float32
    assert ev._metric_dtype(_CPU) is torch.float64
    assert ev._metric_dtype(torch.device("cuda", 0)) is torch.float64
    images = _grey_images()
    assert ev.image_metrics(images, images.flip(0))["l1"].dtype == torch.float64


def test_evaluation_report_is_indexed_by_bucket_name() -> None:
    """``report[name]`` is the bucket of that name, whatever its position; an unknown name is a KeyError listing
    the names."""
    buckets = tuple(
        ev.BucketMetrics(name, bounds, count, 0.1 * count, 30.0, 0.9)
        for name, bounds, count in (("0-20%", (0.0, 0.2), 1), ("20-40%", (0.2, 0.4), 2), ("40-60%", (0.4, 0.6), 3))
    )
    report = ev.EvaluationReport(buckets=buckets, n_images=1, masks_per_image=1, seed=0)
    assert [report[name].count for name in ("40-60%", "0-20%", "20-40%")] == [3, 1, 2]
    with pytest.raises(KeyError, match=r"name: expected one of \['0-20%', '20-40%', '40-60%'\], got 'all'"):
        report["all"]


# ----------------------------------------------------------------------------------------------------------------------
# Segmentation confusion
# ----------------------------------------------------------------------------------------------------------------------


def test_confusion_markdown_note_lists_the_probe_settings_and_the_samples_in_no_bucket() -> None:
    """The note under the table keeps the run description, then names the probe's settings ("key value", comma
    separated) and the samples that fell in no bucket."""
    bucket = ev.ConfusionBucket("0-20%", (0.0, 0.2), 2, 0.75, 0.5, 0.25, 10, 30)
    overall = dataclasses.replace(bucket, name="all")
    report = ev.ConfusionReport(
        buckets=(bucket,),
        overall=overall,
        threshold=0.5,
        n_images=3,
        masks_per_image=2,
        seed=7,
        out_of_bucket=4,
        probe={"steps": 5, "lr": 0.01},
    )
    note = report.to_markdown().split("\n\n")[-1]
    assert note == (
        "3 images x 2 mask(s) per bucket, seed 7; the segmenter sees the composite (prediction in the holes, ground "
        "truth elsewhere); positives = hole pixels. AUROC 0.5 = the holes cannot be told from the known pixels. "
        "Probe segmenter trained from scratch on the generator's composites (steps 5, lr 0.01). "
        "4 sample(s) fell in no bucket.\n"
    )


def test_confusion_iou_counts_a_score_equal_to_the_threshold_as_generated() -> None:
    """The IoU is that of ``P(generated) >= threshold``: a segmenter answering exactly 0.5 everywhere, with
    threshold 0.5, calls every pixel generated, so each bucket's IoU is its hole fraction (holes / all pixels)."""

    def half(x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1, *x.shape[-2:]), 0.5)

    report = ev.segmentation_confusion(
        half, _WhiteFill(), _grey_images(), buckets=_TWO_BUCKETS, threshold=0.5, output="prob_generated"
    )
    for bucket in (*report.buckets, report.overall):
        assert bucket.hole_pixels > 0
        assert bucket.iou == pytest.approx(bucket.hole_pixels / (bucket.hole_pixels + bucket.known_pixels), abs=0)


@pytest.mark.gpu
def test_fid_on_cuda_keeps_the_metric_state_on_the_run_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``device="cuda"``: the extractor and every bucket's FID state live on the GPU, and the run gives the same
    FIDs as on the CPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cuda = torch.device("cuda", torch.cuda.current_device())
    metrics = ev._fid_metrics(_MeanFeature(), 2, cuda)
    assert [m.real_features_sum.device for m in metrics] == [cuda, cuda]
    weights = _fid_setup(monkeypatch, tmp_path, _MeanFeature())
    on_gpu = ev.evaluate(
        _WhiteFill(), _grey_images(), buckets=_TWO_BUCKETS, batch_size=2, fid_weights=weights, device=cuda
    )
    on_cpu = ev.evaluate(_WhiteFill(), _grey_images(), buckets=_TWO_BUCKETS, batch_size=2, fid_weights=weights)
    assert on_gpu.fid_status == "ok"
    for g, c in zip(on_gpu.buckets, on_cpu.buckets, strict=True):
        assert g.fid == pytest.approx(c.fid, rel=1e-4, abs=1e-6)
