"""Tests pinning behaviour that mutation testing (run f6, helper h2) found unchecked in scattered functions.

LaMa's ``extra_mask_weight_for_gen`` below 1 (a fractional extra weight on the holes of the generator's global
term), the layout of the fused segmenter loss's ``dL/dz_f`` for strided logits, and the fused segmenter loss
handing the mask it resampled in forward to backward as the gradient's buffer (resampled once, not twice). Each
test compares with an independent expectation: a hand-computed value, the reference loss or the documented
contract of :mod:`scatloss.ops.torch_fused`.
"""

from __future__ import annotations

import math

import pytest
import torch

import scatloss.ops.torch_fused as TF
import scatloss.reference as R
from scatloss.adapters.lama import SCATAdversarialLoss
from tests._pins import B, C, S, holes, tiny_seg

KINDS = ("hinge", "bce", "ls")

# ----------------------------------------------------------------------------------------------------------------------
# adapters.lama: the generator's global term
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [0.5, 2.0])
def test_lama_fractional_extra_mask_weight_scales_the_holes_of_the_generator_term(extra: float) -> None:
    """With ``mask_as_fake_target`` the generator's global term is ``mean(l_G(D(fake)) * (1 + extra * mask))`` for
    any ``extra_mask_weight_for_gen > 0``, a fractional one included: zero logits give ``ln 2 (1 + extra * mean(m))``
    (bce, LaMa's non-saturating ``softplus(-z)``)."""
    torch.manual_seed(0)
    loss = SCATAdversarialLoss(segmenter=tiny_seg(), mask_as_fake_target=True, extra_mask_weight_for_gen=extra)
    real = torch.rand(B, C, S, S, generator=torch.Generator().manual_seed(2))
    mask = holes()
    fake = mask * 0.25 + (1 - mask) * real
    pred = torch.zeros(B, 1, S, S)
    _, metrics = loss.generator_loss(real, fake, pred, pred, mask)
    want = math.log(2.0) * (1.0 + extra * mask.mean().item())
    assert metrics["gen_adv_term"].item() == pytest.approx(want, rel=1e-6)
    assert want > math.log(2.0) * 1.1  # the holes' weight shows: an unweighted mean would be ln 2


# ----------------------------------------------------------------------------------------------------------------------
# ops.torch_fused: the segmenter loss's gradient buffer
# ----------------------------------------------------------------------------------------------------------------------


def _strided_logits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(base, zf, zr, h)``: ``zf`` a transposed (dense, non-contiguous) ``(2, 1, 4, 6)`` view of the leaf
    ``base``, ``zr`` plain, ``h`` a float64 mask at the logits' size."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(2, 1, 6, 4, generator=g, dtype=torch.float64).mul(2).requires_grad_()
    zf = base.transpose(-1, -2)
    zr = torch.randn(2, 1, 4, 6, generator=g, dtype=torch.float64).requires_grad_()
    h = (torch.rand(2, 1, 4, 6, generator=g) > 0.5).to(torch.float64)
    return base, zf, zr, h


@pytest.mark.parametrize("kind", KINDS)
def test_fused_segmenter_gives_a_contiguous_fake_gradient_for_strided_logits(kind: str) -> None:
    """``dL/dz_f`` of the fused Eq. 1 equals the reference's and is allocated in contiguous layout, whatever the
    fake logits' strides (as the Triton backend's and the from-hole path's resampled buffer): for a transposed
    ``z_f``, with the mask at the logits' size given as ``h`` or as a same-size ``hole`` (no fresh buffer)."""
    base, zf, zr, h = _strided_logits(3)
    assert not zf.is_contiguous()
    (want,) = torch.autograd.grad(R.scat_segmenter_loss(zf, zr, h, kind, "mean"), zf)
    for loss in (TF.scat_segmenter(zf, zr, h, kind, "mean"), TF.scat_segmenter_hole(zf, zr, h, "area", kind, "mean")):
        (got,) = torch.autograd.grad(loss, zf)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert got.is_contiguous(), got.stride()
        assert got.stride() == (24, 24, 6, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_fused_segmenter_turns_the_mask_resampled_in_forward_into_the_fake_gradient(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scat_segmenter_hole`` with a mask 2x the logits' size resamples it once, in forward, and backward writes
    ``dL/dz_f`` into that very buffer (the documented reuse: mask and two gradients never three maps at once); a
    second backward through the same graph (``retain_graph=True``) resamples again. Gradients equal the
    reference's."""
    made: list[torch.Tensor] = []
    real_hole_at = TF.hole_at

    def counting_hole_at(hole: torch.Tensor, like: torch.Tensor, resample: str) -> torch.Tensor:
        out = real_hole_at(hole, like, resample)
        made.append(out)
        return out

    g = torch.Generator().manual_seed(4)
    zf = torch.randn(2, 1, 4, 6, generator=g, dtype=torch.float64).mul(2).requires_grad_()
    zr = torch.randn(2, 1, 4, 6, generator=g, dtype=torch.float64).requires_grad_()
    hole = torch.rand(2, 1, 8, 12, generator=g, dtype=torch.float64)
    h = torch.nn.functional.avg_pool2d(hole, 2)  # the "area" mask at the logits' size, computed here
    want = torch.autograd.grad(R.scat_segmenter_loss(zf, zr, h, kind, "sum"), (zf, zr))

    monkeypatch.setattr(TF, "hole_at", counting_hole_at)
    loss = TF.scat_segmenter_hole(zf, zr, hole, "area", kind, "sum")
    assert len(made) == 1  # forward
    gzf, gzr = torch.autograd.grad(loss, (zf, zr), retain_graph=True)
    assert len(made) == 1, "the first backward resampled the mask again instead of reusing forward's buffer"
    assert gzf.data_ptr() == made[0].data_ptr()
    for got, ref in zip((gzf, gzr), want, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    gzf2, gzr2 = torch.autograd.grad(loss, (zf, zr))
    assert len(made) == 2  # the buffer was handed over: the second backward resamples
    for got, ref in zip((gzf2, gzr2), want, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
