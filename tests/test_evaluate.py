"""Tests of scatloss.evaluate: per-bucket L1 / PSNR / SSIM / FID of a generator's composites."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("torchmetrics")

from scatloss import evaluate as ev  # noqa: E402
from scatloss.masks import BUCKET_NAMES, BUCKETS  # noqa: E402


def _photo_images() -> torch.Tensor:
    """Two fixed 48x48 real-photo crops in [-1, 1] (skimage's astronaut and coffee)."""
    data = pytest.importorskip("skimage.data")
    crops = [data.astronaut()[120:168, 200:248], data.coffee()[150:198, 300:348]]
    return torch.stack([torch.from_numpy(c.copy()).permute(2, 0, 1).float() / 127.5 - 1.0 for c in crops])


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(5, 3, 40, 40, generator=g), 5, stride=1, padding=2)
    return (smooth * 2 - 1).clamp(-1, 1)


def identity_of(images: torch.Tensor):
    """A generator that returns the ground truth of the batch it is given (batch_size >= len(images))."""

    def generator(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return images[: corrupted.shape[0]].clone()

    return generator


def return_corrupted(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    return corrupted


# ---- the metrics themselves ------------------------------------------------------------------------------------------


def _ssim_reference(pred: np.ndarray, true: np.ndarray) -> float:
    """SSIM as torchmetrics defines it, computed by scikit-image: Gaussian window (sigma 1.5, 11x11), population
    covariance, mean over every pixel of the image with whole-sample reflection at the borders (torch's
    "reflect"). skimage's own mean drops a border of 5 pixels; padding by 5 first and keeping its full map
    restores the border pixels."""
    metrics = pytest.importorskip("skimage.metrics")
    pad = 5
    p = np.pad(pred, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    t = np.pad(true, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    _, full = metrics.structural_similarity(
        p, t, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    return float(full[pad:-pad, pad:-pad].mean())


def test_metrics_match_numpy_and_skimage_references_on_photos() -> None:
    truth = _photo_images()
    g = torch.Generator().manual_seed(1)
    noisy = (truth + 0.1 * torch.randn(truth.shape, generator=g)).clamp(-1, 1)
    blurred = torch.nn.functional.avg_pool2d(truth, 3, stride=1, padding=1, count_include_pad=False)
    for output in (noisy, blurred):
        got = ev.image_metrics(output, truth)
        for i in range(truth.shape[0]):
            p = ((output[i].double().numpy() + 1) / 2).transpose(1, 2, 0)
            t = ((truth[i].double().numpy() + 1) / 2).transpose(1, 2, 0)
            l1 = np.abs(p - t).mean()
            psnr = 10 * np.log10(1.0 / np.mean((p - t) ** 2))
            assert float(got["l1"][i]) == pytest.approx(l1, rel=1e-9)
            assert float(got["psnr"][i]) == pytest.approx(psnr, rel=1e-6)
            assert float(got["ssim"][i]) == pytest.approx(_ssim_reference(p, t), abs=1e-4)  # float32 SSIM
            assert not bool(got["psnr_capped"][i])


def test_perfect_reconstruction_psnr_is_capped_finite_and_flagged() -> None:
    truth = _photo_images()
    got = ev.image_metrics(truth, truth)
    assert torch.equal(got["l1"], torch.zeros(2, dtype=got["l1"].dtype))
    assert torch.all(torch.isfinite(got["psnr"]))
    assert torch.all(got["psnr"] == ev.PSNR_CAP)
    assert torch.all(got["psnr_capped"])
    assert torch.allclose(got["ssim"], torch.ones_like(got["ssim"]))


def test_outputs_beyond_the_range_are_clipped_like_an_image_file() -> None:
    truth = torch.ones(1, 3, 16, 16)
    assert float(ev.image_metrics(truth * 1.5, truth)["l1"][0]) == 0.0


def test_image_metrics_rejects_bad_inputs() -> None:
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="output.*shape"):
        ev.image_metrics(x, torch.zeros(1, 3, 16, 17))
    with pytest.raises(ValueError, match="at least 11x11"):
        ev.image_metrics(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="output: expected finite"):
        ev.image_metrics(x.clone().fill_(float("nan")), x)
    with pytest.raises(TypeError, match="target"):
        ev.image_metrics(x, x.to(torch.uint8))


# ---- evaluate --------------------------------------------------------------------------------------------------------


def test_every_bucket_gets_images_times_masks_samples(images: torch.Tensor) -> None:
    report = ev.evaluate(return_corrupted, images, masks_per_image=2, seed=0)
    assert [b.name for b in report.buckets] == list(BUCKET_NAMES)
    assert [b.count for b in report.buckets] == [10, 10, 10]
    assert report.n_images == 5 and report.out_of_bucket == 0


def test_samples_are_filed_by_measured_hole_ratio(images: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever bucket a mask was requested for, the sample counts where its measured ratio falls."""

    def fake_mask(height: int, width: int, *, bucket=None, generator=None, seed=None) -> torch.Tensor:
        mask = torch.zeros(1, height, width)
        mask[:, : height // 2] = 1.0  # always 50 % missing -> "40-60%"
        return mask

    monkeypatch.setattr(ev, "free_form_mask", fake_mask)
    report = ev.evaluate(return_corrupted, images, seed=0)
    assert [b.count for b in report.buckets] == [0, 0, 3 * len(images)]
    assert report.buckets[0].l1 is None and report.buckets[0].psnr is None  # empty bucket: no number, no NaN

    def too_big(height: int, width: int, *, bucket=None, generator=None, seed=None) -> torch.Tensor:
        mask = torch.ones(1, height, width)
        mask[:, 0] = 0.0  # ratio just below 1: in no bucket
        return mask

    monkeypatch.setattr(ev, "free_form_mask", too_big)
    report = ev.evaluate(return_corrupted, images, seed=0)
    assert [b.count for b in report.buckets] == [0, 0, 0]
    assert report.out_of_bucket == 3 * len(images)


def test_evaluation_is_deterministic_and_ignores_global_rng(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    first = ev.evaluate(return_corrupted, images, seed=3).to_dict()
    torch.manual_seed(12345)
    torch.rand(100)
    second = ev.evaluate(return_corrupted, images, seed=3).to_dict()
    assert first == second
    other = ev.evaluate(return_corrupted, images, seed=4).to_dict()
    assert other["buckets"] != first["buckets"]


def test_masks_do_not_depend_on_batching(images: torch.Tensor) -> None:
    one = ev.evaluate(return_corrupted, images, seed=1, batch_size=5)
    two = ev.evaluate(return_corrupted, images, seed=1, batch_size=2)
    items = ev.evaluate(return_corrupted, [(img, 0) for img in images], seed=1, batch_size=3)  # dataset of tuples
    for a, b, c in zip(one.buckets, two.buckets, items.buckets, strict=True):
        assert a.count == b.count == c.count
        for key in ("l1", "psnr", "ssim"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-12)
            assert getattr(a, key) == pytest.approx(getattr(c, key), rel=1e-12)


def test_ground_truth_generator_has_zero_l1_and_capped_psnr(images: torch.Tensor) -> None:
    report = ev.evaluate(identity_of(images), images, batch_size=len(images))
    for bucket in report.buckets:
        assert bucket.l1 == 0.0
        assert bucket.psnr == ev.PSNR_CAP and math.isfinite(bucket.psnr)
        assert bucket.psnr_capped == bucket.count == len(images)
        assert bucket.ssim == pytest.approx(1.0)
    assert "capped" in report.to_markdown()


def test_returning_corrupted_input_is_worse_than_returning_ground_truth(images: torch.Tensor) -> None:
    truth = ev.evaluate(identity_of(images), images, batch_size=len(images))
    corrupted = ev.evaluate(return_corrupted, images, batch_size=len(images))
    for good, bad in zip(truth.buckets, corrupted.buckets, strict=True):
        assert bad.l1 > good.l1 and bad.psnr < good.psnr and bad.ssim < good.ssim
        assert bad.psnr_capped == 0
    l1 = [b.l1 for b in corrupted.buckets]
    assert l1 == sorted(l1)  # bigger holes, bigger error


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Dropout(0.5)
        self.seen: list[tuple[bool, bool, bool]] = []

    def forward(self, corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, self.inner.training, torch.is_grad_enabled()))
        return self.inner(corrupted)


def test_module_runs_in_eval_without_grad_and_modes_are_restored(images: torch.Tensor) -> None:
    net = _Recorder()
    net.train()
    net.inner.eval()  # a mixed state must come back exactly
    ev.evaluate(net, images, batch_size=len(images))
    assert net.seen and all(s == (False, False, False) for s in net.seen)
    assert net.training is True and net.inner.training is False


def test_module_modes_are_restored_after_an_error(images: torch.Tensor) -> None:
    class Broken(nn.Module):
        def forward(self, corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    net = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        ev.evaluate(net, images)
    assert net.training is True


def test_json_round_trip_is_exact_and_atomic(images: torch.Tensor, tmp_path: Path) -> None:
    report = ev.evaluate(identity_of(images), images, batch_size=len(images))
    path = report.save_json(tmp_path / "out" / "report.json")
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert ev.EvaluationReport.load_json(path) == report
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]  # no temporary file left behind


def test_markdown_has_every_bucket_and_metric(images: torch.Tensor) -> None:
    report = ev.evaluate(return_corrupted, images)
    table = report.to_markdown()
    header = table.splitlines()[0]
    for name in BUCKET_NAMES:
        assert name in header
    for label in ("Mean L1 ↓", "PSNR (dB) ↑", "SSIM ↑", "FID ↓", "Samples"):
        assert label in table
    assert f"| {report.buckets[1].l1:.4f} |" in table


def test_custom_buckets_are_reported(images: torch.Tensor) -> None:
    report = ev.evaluate(return_corrupted, images, buckets=[(0.1, 0.3), (0.3, 0.5)])
    assert [b.name for b in report.buckets] == ["10-30%", "30-50%"]
    assert report["30-50%"].count == len(images)


def test_fid_is_unavailable_without_weights(images: torch.Tensor, tmp_path: Path) -> None:
    report = ev.evaluate(return_corrupted, images)
    assert report.fid_status.startswith("unavailable:")
    assert all(b.fid is None for b in report.buckets)
    assert report.to_dict()["buckets"][0]["fid"] is None
    missing = ev.evaluate(return_corrupted, images, fid_weights=tmp_path / "nope.pth")
    assert missing.fid_status.startswith("unavailable:") and "not found" in missing.fid_status
    assert all(b.fid is None for b in missing.buckets)


class _TinyFeatures(nn.Module):
    """Stand-in for Inception (which needs weights): per-channel mean and std of uint8 images."""

    num_features = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8
        x = x.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_fid_plumbing_with_a_stand_in_extractor(
    images: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"stand-in")
    monkeypatch.setattr(ev, "_torch_fidelity_available", lambda: True)
    monkeypatch.setattr(ev, "_load_inception", lambda path: _TinyFeatures())
    perfect = ev.evaluate(identity_of(images), images, batch_size=len(images), fid_weights=weights)
    assert perfect.fid_status == "ok"
    assert all(b.fid is not None and abs(b.fid) < 1e-4 for b in perfect.buckets)
    worse = ev.evaluate(return_corrupted, images, batch_size=len(images), fid_weights=weights)
    assert all(b.fid is not None and b.fid > 1e-3 for b in worse.buckets)


def test_missing_torchmetrics_raises_a_helpful_import_error(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchmetrics.functional.image", None)
    with pytest.raises(ImportError, match=r"pip install 'scatloss\[examples\]'"):
        ev.evaluate(return_corrupted, images)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"generator": 3}, TypeError, "generator: expected a callable"),
        ({"masks_per_image": 0}, ValueError, "masks_per_image"),
        ({"batch_size": 1.5}, TypeError, "batch_size"),
        ({"seed": -1}, TypeError, "seed"),
        ({"images": torch.zeros(2, 3, 16, 16) + 3}, ValueError, r"images: expected images in \[-1, 1\]"),
        ({"images": torch.zeros(2, 3, 8, 8)}, ValueError, "at least 11x11"),
        ({"images": []}, ValueError, "at least one image"),
        ({"images": 5}, TypeError, "images"),
        ({"generator": lambda c, h: c[:, :1]}, ValueError, "generator: expected an output"),
        ({"generator": lambda c, h: c * float("nan")}, ValueError, "generator: expected finite"),
        ({"buckets": [(0.4, 0.2)]}, ValueError, "buckets"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs: dict, error: type, match: str) -> None:
    call = {"generator": return_corrupted, "images": torch.zeros(2, 3, 16, 16), **kwargs}
    with pytest.raises(error, match=match):
        ev.evaluate(call.pop("generator"), call.pop("images"), **call)


def test_default_buckets_are_the_papers() -> None:
    assert BUCKETS == ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6))


def test_unavailable_device_is_a_clear_value_error_naming_device(images: torch.Tensor) -> None:
    """Issue 13: evaluate(device='cuda') on a machine without CUDA raised torch's bare AssertionError."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the error path cannot be reached")
    with pytest.raises(ValueError, match=r"device: expected an available device, got 'cuda'.*device='cpu'"):
        ev.evaluate(return_corrupted, images, device="cuda")
    with pytest.raises(ValueError, match=r"device: expected an available device, got 'cuda:1'"):
        ev.evaluate(return_corrupted, images, device=torch.device("cuda", 1))
