"""Tests pinning what a full mutation run of ``scatloss.functional``'s ``semantic_contrastive_loss`` and
``scat_generator_loss`` found unchecked (session 5): the argument each input check names."""

from __future__ import annotations

import re

import pytest
import torch

from scatloss import functional as F


def _semantic_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g), torch.randn(2, 3, 4, generator=g)


def test_semantic_positive_must_be_2d_and_the_error_names_it() -> None:
    """A 3-D ``positive`` is refused by its own check (``(B, D)``), naming ``positive`` and its shape."""
    a, p, n = _semantic_inputs()
    with pytest.raises(ValueError, match=re.escape("positive: expected a 2-D tensor, got shape (1, 2, 4)")):
        F.semantic_contrastive_loss(a, p.unsqueeze(0), n)


def test_semantic_empty_batch_error_names_the_anchor() -> None:
    """A batch of 0 is one named error (the anchor's), not a NaN."""
    a, p, n = _semantic_inputs()
    with pytest.raises(ValueError, match=re.escape("anchor: expected a non-empty batch (B >= 1), got shape (0, 4)")):
        F.semantic_contrastive_loss(a[:0], p[:0], n[:0])


@pytest.mark.parametrize("which", ["positive", "negatives"])
def test_semantic_device_mismatch_lists_every_input(which: str) -> None:
    """Inputs on different devices: one error listing the device of anchor, positive and negatives."""
    a, p, n = _semantic_inputs()
    if which == "positive":
        p = p.to("meta")
    else:
        n = n.to("meta")
    want = (
        "device mismatch: expected all inputs on one device, got anchor on cpu, "
        f"positive on {p.device}, negatives on {n.device}"
    )
    with pytest.raises(ValueError, match=re.escape(want)):
        F.semantic_contrastive_loss(a, p, n)


def test_scat_generator_hole_batch_must_match_the_logits() -> None:
    """A hole mask with another batch size than the logits is refused, naming ``hole`` and both sizes (it would
    otherwise broadcast or fail inside the resampling)."""
    z = torch.randn(2, 1, 4, 4)
    hole = torch.zeros(3, 1, 8, 8)
    hole[..., 2:4, 2:4] = 1
    with pytest.raises(ValueError, match=re.escape("hole: expected batch size 2 to match the other inputs, got 3")):
        F.scat_generator_loss(z, hole)
