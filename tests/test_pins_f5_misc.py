"""Tests pinning behaviour that mutation testing found unreached or unchecked outside the functions run in full
in session 5 (``scatloss.evaluate``'s Inception loader, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torchmetrics.image.fid as tm_fid

from scatloss import evaluate as ev


def test_inception_loader_asks_torchmetrics_for_the_2048_pool_features_of_the_given_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``_load_inception`` builds torchmetrics' ``NoTrainInceptionV3`` with the FID-compatible network name, the
    2048-d pool features and the local weights path it was given (never ``None``: that would download)."""
    calls: list[dict[str, Any]] = []

    class Recorder:
        def __init__(self, **kwargs: Any) -> None:
            calls.append(kwargs)

    monkeypatch.setattr(tm_fid, "NoTrainInceptionV3", Recorder)
    weights = tmp_path / "pt_inception.pth"
    out = ev._load_inception(weights)
    assert isinstance(out, Recorder)
    assert calls == [
        {
            "name": "inception-v3-compat",
            "features_list": ["2048"],
            "feature_extractor_weights_path": str(weights),
        }
    ]
