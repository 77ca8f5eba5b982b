"""Tests pinning behaviour that mutation testing (run f6, helper h5) found unchecked in ``scatloss.evaluate``'s FID
set-up and report serialisation.

The exact ``fid_status`` reasons (no weights, torch-fidelity missing, weights that fail to load), the device the
FID feature extractor is moved to, the saturation of out-of-range predictions when composites are quantised to
uint8 for FID, the indentation of :meth:`ConfusionReport.to_json` and the strict (NaN-free) JSON of
:meth:`EvaluationReport.to_json`. FID runs with a tiny stand-in feature extractor (Inception needs weights that are
never downloaded). Each test compares with an independent expectation: the documented text or contract, or a
hand-derived value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from scatloss import evaluate as ev
from tests._pins import identity as _identity
from tests._pins import smooth_images

pytest.importorskip("torchmetrics")


class _RecordingFeatures(nn.Module):
    """Stand-in for Inception: per-channel mean and std of uint8 images; records its inputs and ``to()`` devices."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.moved_to: list[Any] = []

    def to(self, *args: Any, **kwargs: Any) -> _RecordingFeatures:  # type: ignore[override]
        self.moved_to.append(args[0] if args else kwargs.get("device"))
        return super().to(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        x = x.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "weights.pth"
    path.write_bytes(b"stand-in")
    return path


def _with_stand_in(monkeypatch: pytest.MonkeyPatch) -> list[_RecordingFeatures]:
    """Make FID available with a fresh recording stand-in extractor per run; returns the extractors built."""
    built: list[_RecordingFeatures] = []

    def load(path: Path) -> _RecordingFeatures:
        built.append(_RecordingFeatures())
        return built[-1]

    monkeypatch.setattr(ev, "_torch_fidelity_available", lambda: True)
    monkeypatch.setattr(ev, "_load_inception", load)
    return built


# ---- fid_status: the exact reasons ----------------------------------------------------------------------------------


def test_fid_status_reasons_are_exact(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each documented way FID is unavailable gives its exact reason (also in the Markdown footnote)."""
    images = smooth_images()
    no_weights = ev.evaluate(_identity, images)
    expected = (
        "unavailable: no Inception weights given (fid_weights=None); scatloss never downloads weights, "
        "pass the path of a local copy"
    )
    assert no_weights.fid_status == expected
    assert no_weights.to_markdown().endswith(f"FID: {expected}.\n")

    monkeypatch.setattr(ev, "_torch_fidelity_available", lambda: False)
    no_fidelity = ev.evaluate(_identity, images, fid_weights=weights)
    assert no_fidelity.fid_status == (
        "unavailable: torchmetrics' FrechetInceptionDistance needs torch-fidelity, which is not installed "
        "(pip install torch-fidelity)"
    )

    def damaged(path: Path) -> nn.Module:
        raise RuntimeError("damaged file")

    monkeypatch.setattr(ev, "_torch_fidelity_available", lambda: True)
    monkeypatch.setattr(ev, "_load_inception", damaged)
    broken = ev.evaluate(_identity, images, fid_weights=str(weights))
    assert (
        broken.fid_status == f"unavailable: could not load Inception weights from {weights}: RuntimeError: damaged file"
    )
    for report in (no_weights, no_fidelity, broken):
        assert [b.fid for b in report.buckets] == [None, None, None]


# ---- FID: extractor device and uint8 quantisation -------------------------------------------------------------------


def test_fid_extractor_is_moved_to_the_run_device(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The feature extractor is moved to the evaluation device (here the explicit ``device="cpu"``)."""
    built = _with_stand_in(monkeypatch)
    report = ev.evaluate(_identity, smooth_images(), device="cpu", fid_weights=weights)
    assert report.fid_status == "ok"
    assert len(built) == 1
    assert [torch.device(d) if d is not None else None for d in built[0].moved_to] == [torch.device("cpu")]


def _constant(value: float) -> Any:
    def generator(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return torch.full_like(corrupted, value)

    return generator


@pytest.mark.parametrize(("beyond", "extreme", "pixel"), [(2.0, 1.0, 255), (-2.0, -1.0, 0)])
def test_fid_saturates_out_of_range_predictions(
    weights: Path, monkeypatch: pytest.MonkeyPatch, beyond: float, extreme: float, pixel: int
) -> None:
    """Predictions beyond [-1, 1] reach FID as the saturated uint8 value (255 or 0), exactly as +-1 would.

    Generator outputs are not range-checked; the image metrics clip them, and FID's uint8 encoding
    ``round((x + 1) * 127.5)`` clamped to [0, 255] must not wrap around (2.0 -> 382.5 would wrap to 126 in uint8,
    -2.0 -> -128 to 128, and a clamp at 256 to 0).
    """
    built = _with_stand_in(monkeypatch)
    images = smooth_images()
    out = ev.evaluate(_constant(beyond), images, batch_size=len(images), fid_weights=weights)
    at_edge = ev.evaluate(_constant(extreme), images, batch_size=len(images), fid_weights=weights)
    assert out.fid_status == at_edge.fid_status == "ok"
    seen_out, seen_edge = built[0].inputs, built[1].inputs
    assert len(seen_out) == len(seen_edge) == 2 * len(out.buckets)  # real and fake per bucket
    for a, b in zip(seen_out, seen_edge, strict=True):
        assert a.dtype == torch.uint8
        assert torch.equal(a, b)
    fakes = seen_out[1::2]  # each bucket: ground truths first, then composites
    assert all(bool((f == pixel).any()) for f in fakes)
    assert [b.fid for b in out.buckets] == [b.fid for b in at_edge.buckets]


# ---- JSON ------------------------------------------------------------------------------------------------------------


def _confusion_report(auroc: float | None = 0.75) -> ev.ConfusionReport:
    bucket = ev.ConfusionBucket("0-20%", (0.0, 0.2), 2, auroc, 0.5, 0.25, hole_pixels=10, known_pixels=90)
    overall = ev.ConfusionBucket("all", (0.0, 0.2), 2, auroc, 0.5, 0.25, hole_pixels=10, known_pixels=90)
    return ev.ConfusionReport((bucket,), overall, threshold=0.5, n_images=2, masks_per_image=1, seed=3)


def test_confusion_report_json_indentation(tmp_path: Path) -> None:
    """``to_json`` indents by 2 by default, honours ``indent`` (None = one line) and ``save_json`` uses the default."""
    report = _confusion_report()
    text = report.to_json()
    lines = text.splitlines()
    assert lines[:3] == ["{", '  "buckets": [', "    {"]
    assert lines[3] == '      "name": "0-20%",'
    assert json.loads(text) == report.to_dict()
    compact = report.to_json(indent=None)
    assert "\n" not in compact and compact.startswith('{"buckets": [{"name": "0-20%", ')
    assert report.to_json(indent=4).splitlines()[1] == '    "buckets": ['
    path = report.save_json(tmp_path / "confusion.json")
    assert path.read_text(encoding="utf-8") == text + "\n"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_report_json_is_strict(bad: float) -> None:
    """Both reports' JSON is strict: a NaN or infinite value is a ValueError, never ``NaN`` / ``Infinity`` text."""
    report = ev.EvaluationReport(
        buckets=(ev.BucketMetrics("0-20%", (0.0, 0.2), 1, 0.1, 20.0, 0.5, fid=bad),),
        n_images=1,
        masks_per_image=1,
        seed=0,
    )
    for indent in (2, None):
        with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
            report.to_json(indent=indent)
        with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
            _confusion_report(auroc=bad).to_json(indent=indent)
