"""Tests pinning behaviour that mutation testing found unchecked in ``scatloss.evaluate``.

Each test compares with an independent expectation (hand-written Markdown, hand-counted samples, the documented
error text, a mask seed re-derived here from its documented recipe) on inputs where a surviving mutant differs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from scatloss import evaluate as ev
from scatloss.masks import free_form_mask
from tests._pins import channel_map as _channel_map
from tests._pins import identity as _identity
from tests._pins import smooth_images

# ---- image_metrics: which argument an error names --------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return smooth_images()


def test_image_metrics_names_target_when_it_is_not_a_float_tensor() -> None:
    """A non-float ``target`` is a TypeError naming ``target``."""
    pytest.importorskip("torchmetrics")
    output = torch.zeros(1, 3, 12, 12)
    with pytest.raises(TypeError, match=r"^target: expected a floating-point tensor"):
        ev.image_metrics(output, torch.zeros(1, 3, 12, 12, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^target: expected a 4-D tensor"):
        ev.image_metrics(output, torch.zeros(3, 12, 12))


def test_image_metrics_names_target_when_it_holds_nan() -> None:
    """NaN in ``target`` (only) is a ValueError naming ``target`` and counting the bad images."""
    pytest.importorskip("torchmetrics")
    target = torch.zeros(2, 3, 12, 12)
    target[1, 0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"^target: expected finite values, got NaN or inf in 1 image\(s\)$"):
        ev.image_metrics(torch.zeros(2, 3, 12, 12), target)


# ---- EvaluationReport.to_markdown: the exact table ------------------------------------------------------------------


def test_evaluation_report_markdown_exact_text() -> None:
    """The full Markdown of a hand-built report: labels, capped stars only on capped buckets, the capped list."""
    report = ev.EvaluationReport(
        buckets=(
            ev.BucketMetrics("0-20%", (0.0, 0.2), 2, 0.01234, 31.456, 0.9, psnr_capped=1, fid=12.5),
            ev.BucketMetrics("20-40%", (0.2, 0.4), 2, 0.25, 20.0, 0.5, psnr_capped=0, fid=None),
            ev.BucketMetrics("40-60%", (0.4, 0.6), 1, 0.0, 100.0, 1.0, psnr_capped=1, fid=3.0),
            ev.BucketMetrics("60-80%", (0.6, 0.8), 0, None, None, None),
        ),
        n_images=2,
        masks_per_image=1,
        seed=7,
        fill=1.0,
        psnr_cap=100.0,
        out_of_bucket=3,
        fid_status="ok",
    )
    expected = (
        "| Metric | 0-20% | 20-40% | 40-60% | 60-80% |\n"
        "|:--|--:|--:|--:|--:|\n"
        "| Mean L1 ↓ | 0.0123 | 0.2500 | 0.0000 | – |\n"
        "| PSNR (dB) ↑ | 31.46* | 20.00 | 100.00* | – |\n"
        "| SSIM ↑ | 0.900 | 0.500 | 1.000 | – |\n"
        "| FID ↓ | 12.50 | – | 3.00 | – |\n"
        "| Samples | 2 | 2 | 1 | 0 |\n"
        "\n"
        "2 images x 1 mask(s) per bucket, seed 7, holes filled with 1; "
        "metrics on the composite vs the ground truth in [0, 1].\n"
        "\\* includes samples with infinite PSNR (MSE = 0) or above the cap, capped at 100 dB "
        "(0-20%: 1, 40-60%: 1).\n"
        "3 sample(s) had a hole ratio outside every bucket and were not scored.\n"
        "FID: ok.\n"
    )
    assert report.to_markdown() == expected
    assert str(report) == expected


# ---- evaluate: FID that becomes unavailable mid-run -----------------------------------------------------------------


class _TinyFeatures(nn.Module):
    """Stand-in for Inception: per-channel mean and std of uint8 images."""

    num_features = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_fid_on_two_channel_images_reports_unavailable_instead_of_failing(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FID set up, then 2-channel images: every fid is None and the status says why; the run still completes."""
    pytest.importorskip("torchmetrics")
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"stand-in")
    monkeypatch.setattr(ev, "_torch_fidelity_available", lambda: True)
    monkeypatch.setattr(ev, "_load_inception", lambda path: _TinyFeatures())
    two_channel = torch.zeros(2, 2, 12, 12)
    report = ev.evaluate(_identity, two_channel, buckets=((0.0, 0.3), (0.3, 0.6)), fid_weights=weights)
    assert report.fid_status == "unavailable: FID needs 1- or 3-channel images, got 2 channels"
    assert [b.fid for b in report.buckets] == [None, None]
    assert [b.count for b in report.buckets] == [2, 2]


# ---- fixed masks: the documented seed recipe ------------------------------------------------------------------------


def _documented_mask_seed(seed: int, index: int, bucket: tuple[float, float], k: int) -> int:
    """The 63-bit seed recipe: two uint32 words of numpy's SeedSequence of (seed, i, lo, hi in 1e-6, k)."""
    words = [seed, index, round(bucket[0] * 1_000_000), round(bucket[1] * 1_000_000), k]
    a, b = (int(v) for v in np.random.SeedSequence(words).generate_state(2, dtype=np.uint32))
    return (a << 31) ^ b


def test_fixed_masks_come_from_the_documented_63_bit_seed(images: torch.Tensor) -> None:
    """The holes G sees are free_form_mask drawn from a generator seeded by the 63-bit (seed, i, bucket, k) seed."""
    seen: list[torch.Tensor] = []

    def recorder(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        seen.append(hole.clone())
        return corrupted

    buckets = ((0.1, 0.3), (0.3, 0.5))
    ev.segmentation_confusion(_channel_map, recorder, images, buckets=buckets, masks_per_image=2, seed=11)
    assert len(seen) == 4  # one batch x 2 buckets x 2 masks, in that order
    seeds = []
    for call, (bucket, k) in enumerate((b, k) for b in buckets for k in range(2)):
        for i in range(len(images)):
            s = _documented_mask_seed(11, i, bucket, k)
            seeds.append(s)
            want = free_form_mask(16, 16, bucket=bucket, generator=torch.Generator().manual_seed(s))
            assert torch.equal(seen[call][i], want)
    assert max(seeds) >= 2**32  # the seeds use more than 32 bits


# ---- image sources -------------------------------------------------------------------------------------------------


class _MapDataset:
    """A map-style dataset: ``__len__`` and ``__getitem__`` only (no ``__iter__``), items ``(image, label)``."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < len(self.images):
            raise IndexError(i)
        return self.images[i], i


def test_map_style_dataset_without_iter_is_accepted(images: torch.Tensor) -> None:
    """A dataset with only __len__/__getitem__ is read by index, every image once."""
    report = ev.segmentation_confusion(_channel_map, _identity, _MapDataset(images), batch_size=2)
    assert report.n_images == len(images)
    assert [b.count for b in report.buckets] == [len(images)] * 3


def test_a_full_batch_is_processed_before_the_next_item_is_read(images: torch.Tensor) -> None:
    """Streams are re-batched without read-ahead: G runs on a full batch before the next item is fetched."""
    calls: list[int] = []

    def stream():
        yield images[0]
        yield images[1]
        raise RuntimeError("source broken")

    def counting(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        calls.append(corrupted.shape[0])
        return corrupted

    with pytest.raises(RuntimeError, match="source broken"):
        ev.segmentation_confusion(_channel_map, counting, stream(), batch_size=2)
    assert calls == [2, 2, 2]  # the first batch went through all 3 buckets before the broken third item


# ---- ConfusionReport.to_markdown: the exact table -------------------------------------------------------------------


def test_confusion_report_markdown_exact_text() -> None:
    """The full Markdown of a hand-built confusion report, note included."""
    report = ev.ConfusionReport(
        buckets=(
            ev.ConfusionBucket("0-20%", (0.0, 0.2), 3, 0.75, 0.5, 0.25, 10, 90),
            ev.ConfusionBucket("20-40%", (0.2, 0.4), 0, None, None, None),
        ),
        overall=ev.ConfusionBucket("all", (0.0, 0.4), 3, 0.75, 0.5, 0.25, 10, 90),
        threshold=0.5,
        n_images=3,
        masks_per_image=1,
        seed=4,
    )
    expected = (
        "| Hole detection | 0-20% | 20-40% | all |\n"
        "|:--|--:|--:|--:|\n"
        "| AUROC | 0.750 | – | 0.750 |\n"
        "| AP | 0.500 | – | 0.500 |\n"
        "| IoU @ 0.5 | 0.250 | – | 0.250 |\n"
        "| Samples | 3 | 0 | 3 |\n"
        "\n"
        "3 images x 1 mask(s) per bucket, seed 4; the segmenter sees the composite (prediction in the holes, "
        "ground truth elsewhere); positives = hole pixels. AUROC 0.5 = the holes cannot be told from the known "
        "pixels.\n"
    )
    assert report.to_markdown() == expected


# ---- segmentation_confusion: defaults, argument names, device, counts, fill ------------------------------------------


def test_segmentation_confusion_default_seed_is_zero(images: torch.Tensor) -> None:
    """Without ``seed`` the report says seed 0 and equals an explicit ``seed=0`` run."""
    default = ev.segmentation_confusion(_channel_map, _identity, images)
    assert default.seed == 0
    assert default == ev.segmentation_confusion(_channel_map, _identity, images, seed=0)


def test_segmentation_confusion_bad_batch_size_names_batch_size(images: torch.Tensor) -> None:
    """``batch_size=0`` is a ValueError naming ``batch_size``."""
    with pytest.raises(ValueError, match=r"^batch_size: expected a positive int, got 0$"):
        ev.segmentation_confusion(_channel_map, _identity, images, batch_size=0)


def test_segmentation_confusion_runs_the_generator_on_the_requested_device(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``device=`` is where G runs: with ``device="meta"`` G receives meta tensors (CPU images are moved)."""
    # Measuring hole ratios needs data, which meta tensors lack: measure on the CPU for this test.
    monkeypatch.setattr(ev, "hole_ratio", lambda hole: torch.full((hole.shape[0],), 0.1))
    seen: list[tuple[torch.device, torch.device]] = []

    class Stop(Exception):
        pass

    def recorder(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        seen.append((corrupted.device, hole.device))
        raise Stop

    with pytest.raises(Stop):
        ev.segmentation_confusion(_channel_map, recorder, images, device="meta")
    assert seen == [(torch.device("meta"), torch.device("meta"))]


def test_segmentation_confusion_counts_out_of_bucket_samples(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Samples whose hole ratio is in no bucket are counted (positively) in ``out_of_bucket``, not scored."""

    def too_big(height: int, width: int, *, bucket=None, generator=None, seed=None) -> torch.Tensor:
        mask = torch.ones(1, height, width)
        mask[:, 0] = 0.0  # ratio 15/16: in no default bucket
        return mask

    monkeypatch.setattr(ev, "free_form_mask", too_big)
    report = ev.segmentation_confusion(_channel_map, _identity, images, batch_size=2)
    assert report.out_of_bucket == 3 * len(images)
    assert [b.count for b in report.buckets] == [0, 0, 0] and report.overall.count == 0
    assert f"{3 * len(images)} sample(s) fell in no bucket." in report.to_markdown()


def test_segmentation_confusion_records_the_fill(images: torch.Tensor) -> None:
    """The report keeps the ``fill`` it was run with, as a float."""
    report = ev.segmentation_confusion(_channel_map, _identity, images, fill=0.5)
    assert report.fill == 0.5
    zero = ev.segmentation_confusion(_channel_map, _identity, images, fill=0)
    assert zero.fill == 0.0 and isinstance(zero.fill, float)


# ---- detectability: default probe and lr checks ---------------------------------------------------------------------


def test_default_probe_rejects_an_odd_width(images: torch.Tensor) -> None:
    """The default probe needs even sides: an odd width (even height) is a ValueError naming train_images."""
    odd = torch.zeros(2, 3, 16, 15)
    with pytest.raises(ValueError, match=r"^train_images: the default probe needs even image sides, got 16x15$"):
        ev.detectability(_identity, odd, images, steps=1, batch_size=2)


@pytest.mark.parametrize("lr", [0.0, 0, -1e-3])
def test_detectability_rejects_a_non_positive_lr(images: torch.Tensor, lr: float) -> None:
    """``lr <= 0`` is a ValueError naming ``lr``."""
    with pytest.raises(ValueError, match=r"^lr: expected a positive float, got "):
        ev.detectability(_identity, images, images, steps=1, batch_size=2, lr=lr)
