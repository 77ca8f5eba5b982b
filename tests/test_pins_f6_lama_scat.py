"""Tests pinning behaviour that mutation testing (run f6, helper h11) found unchecked in
``scatloss.adapters.lama.SCATAdversarialLoss`` (``_check_pred``, ``criterion``) and in the fused SCAT ops' mask
handling (``scatloss.ops.scat._mask_for``).

LaMa adapter: the 4-D check of the discriminator's patch maps, the options the adapter hands to its
:class:`~scatloss.SCATCriterion` (``semantic_pool``, ``negatives_from``, the frozen segmenter of the generator
step) and the criterion's rebuild when the segmenter is replaced. Fused ops (Triton interpreter on CPU): logit maps
with a side of 1 or 0, and masks at an integer multiple of the logits in one direction only. Each test compares
with an independent expectation: an exact error message, a hand-computed InfoNCE value, or
:mod:`scatloss.reference` on a mask resampled by :func:`scatloss.masks.resample_hole`.
"""

from __future__ import annotations

import importlib.util
import math
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

from typing import Any  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import scatloss.functional as SF  # noqa: E402
from scatloss import reference as R  # noqa: E402
from scatloss.adapters.lama import SCATAdversarialLoss  # noqa: E402
from scatloss.masks import resample_hole  # noqa: E402
from scatloss.nets import UNetSegmenter  # noqa: E402
from scatloss.ops import _interpreting  # noqa: E402
from tests._pins import B, C, S, holes, patch_d, tiny_seg  # noqa: E402


def lama_loss(**kwargs: Any) -> SCATAdversarialLoss:
    torch.manual_seed(0)
    return SCATAdversarialLoss(segmenter=tiny_seg(), **kwargs)


def lama_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(real in [0, 1], composite fake, hole mask)``."""
    real = torch.rand(B, C, S, S, generator=torch.Generator().manual_seed(2))
    mask = holes()
    pred = torch.rand(B, C, S, S, generator=torch.Generator().manual_seed(3))
    return real, mask * pred + (1 - mask) * real, mask


# ----------------------------------------------------------------------------------------------------------------------
# SCATAdversarialLoss._check_pred
# ----------------------------------------------------------------------------------------------------------------------


def test_lama_patch_maps_must_be_4d() -> None:
    """A ``(B, 1, w)`` patch map has the right batch and channel but is not ``(B, 1, h, w)``: the 4-D error names
    the argument (generator and discriminator losses)."""
    loss = lama_loss(gp_coef=0.0)
    real, fake, mask = lama_batch()
    good = torch.zeros(B, 1, 2, 2)
    flat = torch.zeros(B, 1, 4)
    with pytest.raises(ValueError, match=r"^discr_fake_pred: expected a 4-D tensor, got shape \(2, 1, 4\)$"):
        loss.generator_loss(real, fake, good, flat, mask)
    with pytest.raises(ValueError, match=r"^discr_real_pred: expected a 4-D tensor, got shape \(2, 1, 4\)$"):
        loss.discriminator_loss(real, fake, flat, good, mask)


# ----------------------------------------------------------------------------------------------------------------------
# SCATAdversarialLoss.criterion: what reaches the SCATCriterion
# ----------------------------------------------------------------------------------------------------------------------


def _equal_negatives_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``real`` constant 0.5 (with ``fill=0.5`` every negative and the corrupted input equal the positive)."""
    real = torch.full((B, C, S, S), 0.5)
    mask = holes()
    pred = torch.rand(B, C, S, S, generator=torch.Generator().manual_seed(4))
    return real, mask * pred + (1 - mask) * real, mask


def test_lama_flatten_pooling_reaches_the_criterion() -> None:
    """``semantic_pool="flatten"`` on layer "1" (``(2, 8, 8)`` maps): the head takes ``2 * 8 * 8`` features and,
    every negative equal to the positive, ``L_sem = log(1 + B)`` (``B`` negatives per image)."""
    d = patch_d()
    loss = lama_loss(
        discriminator=d, semantic_layer="1", semantic_pool="flatten", feature_dim=128, fill=0.5, temperature=0.5
    )
    real, fake, mask = _equal_negatives_batch()
    pred = torch.zeros(B, 1, 2, 2)
    _, metrics = loss.generator_loss(real, fake, pred, pred, mask)
    assert float(metrics["contra_sem"]) == pytest.approx(math.log(1 + B), abs=1e-5)


def test_lama_global_negatives_reach_the_criterion(monkeypatch: pytest.MonkeyPatch) -> None:
    """``negatives_from="global"`` under a stand-in 2-rank group (this process rank 0; rank 1 holds the same
    masks): each image gets the ``2 B`` masks of both ranks as negatives, so with every negative equal to the
    positive ``L_sem = log(1 + 2 B)`` (local negatives would give ``log(1 + B)``)."""
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)

    def all_gather(parts: list[torch.Tensor], tensor: torch.Tensor, group: Any = None) -> None:
        for part in parts:
            part.copy_(tensor)

    monkeypatch.setattr(dist, "all_gather", all_gather)
    loss = lama_loss(discriminator=patch_d(), semantic_layer="3", negatives_from="global", fill=0.5, temperature=0.5)
    real, fake, mask = _equal_negatives_batch()
    pred = torch.zeros(B, 1, 2, 2)
    _, metrics = loss.generator_loss(real, fake, pred, pred, mask)
    assert float(metrics["contra_sem"]) == pytest.approx(math.log(1 + 2 * B), abs=1e-5)


def test_lama_generator_loss_leaves_the_segmenter_without_gradient() -> None:
    """The generator's SCAT term trains G only: its backward reaches ``fake_batch`` but deposits no gradient on the
    segmenter (trained by the discriminator's optimiser), whose ``requires_grad`` is left on."""
    loss = lama_loss()
    real, fake, mask = lama_batch()
    fake.requires_grad_(True)
    pred = torch.zeros(B, 1, 2, 2)
    total, _ = loss.generator_loss(real, fake, pred, pred, mask)
    total.backward()
    assert fake.grad is not None and float(fake.grad.abs().sum()) > 0
    params = list(loss.segmenter.parameters())
    assert params and all(p.requires_grad and p.grad is None for p in params)


def test_lama_replaced_segmenter_is_the_one_scat_runs() -> None:
    """After ``loss.segmenter = other`` (the module ``discriminator_parameters()`` now returns), the segmenter's
    SCAT term is computed with ``other``: Eq. 1 of :mod:`scatloss.reference` on ``other``'s logits."""
    loss = lama_loss(gp_coef=0.0)
    real, fake, mask = lama_batch()
    pred = torch.zeros(B, 1, 2, 2)
    loss.discriminator_loss(real, fake, pred, pred, mask)  # builds the criterion for the first segmenter
    torch.manual_seed(7)
    other = UNetSegmenter(3, base_channels=2, depth=2).eval()
    loss.segmenter = other
    _, metrics = loss.discriminator_loss(real, fake, pred, pred, mask)
    with torch.no_grad():
        want = R.scat_segmenter_loss(other(fake), other(real), mask, "hinge", "mean")
    assert float(metrics["scat_seg"]) == pytest.approx(float(want), rel=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# ops.scat._mask_for (Triton kernels under the interpreter)
# ----------------------------------------------------------------------------------------------------------------------

cpu_tier = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or not _interpreting(),
    reason="needs triton; the kernels run on CPU tensors under TRITON_INTERPRET=1",
)


def _logits(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2).to(dtype)


def _hole(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.5).to(dtype)


@cpu_tier
@pytest.mark.parametrize("size", [(1, 3), (3, 1)])
@pytest.mark.parametrize("resample", ["area", "max"])
def test_fused_scat_resamples_a_mask_that_is_no_multiple_along_one_side(size: tuple[int, int], resample: str) -> None:
    """Logits of height (width) 1 and a ``4 x 4`` mask: ``4`` is no multiple of the other side ``3``, so the mask
    is resampled to ``size`` as :func:`resample_hole` does, for both SCAT losses (per pixel)."""
    fake, real = _logits(B, 1, *size, seed=1), _logits(B, 1, *size, seed=2)
    hole = _hole((B, 1, 4, 4), seed=3)
    at = resample_hole(hole, size, resample)
    got = SF.scat_segmenter_loss(fake, real, hole, resample=resample, reduction="none", backend="triton")
    torch.testing.assert_close(got, R.scat_segmenter_loss(fake, real, at, "hinge", "none"), rtol=1e-12, atol=1e-12)
    got = SF.scat_generator_loss(fake, hole, resample=resample, reduction="none", backend="triton")
    torch.testing.assert_close(got, R.scat_generator_loss(fake, at, "hinge", "none"), rtol=1e-12, atol=1e-12)


@cpu_tier
@pytest.mark.parametrize(("size", "mask_size"), [((4, 2), (4, 6)), ((2, 4), (6, 4))])
def test_fused_scat_averages_a_low_precision_mask_in_the_kernels_precision(
    size: tuple[int, int], mask_size: tuple[int, int]
) -> None:
    """A bfloat16 binary mask three times the logits' size along one side (the same along the other) is read at its
    own resolution: its ``1 x 3`` (``3 x 1``) blocks are averaged in float64 (the float64 logits' precision),
    giving exactly the reference on the float64 mask's average (``1/3``, ``2/3``), not bfloat16's rounding of
    them."""
    fake, real = _logits(B, 1, *size, seed=4), _logits(B, 1, *size, seed=5)
    hole = _hole((B, 1, *mask_size), seed=6, dtype=torch.bfloat16)
    at = resample_hole(hole.double(), size, "area")
    assert ((at > 0) & (at < 1)).any()  # some blocks are partly hole
    got = SF.scat_segmenter_loss(fake, real, hole, reduction="none", backend="triton")
    torch.testing.assert_close(got, R.scat_segmenter_loss(fake, real, at, "hinge", "none"), rtol=1e-12, atol=1e-12)
    got = SF.scat_generator_loss(fake, hole, reduction="none", backend="triton")
    torch.testing.assert_close(got, R.scat_generator_loss(fake, at, "hinge", "none"), rtol=1e-12, atol=1e-12)


@cpu_tier
@pytest.mark.parametrize("size", [(0, 3), (0, 4)])
def test_fused_scat_kernels_take_logits_without_rows(size: tuple[int, int]) -> None:
    """The fused kernels' layer (:mod:`scatloss.ops.scat`, validated inputs) on logits of height 0 and a ``4 x 4``
    mask: nothing to resample; the per-pixel loss is an empty ``(B, 1, 0, w)`` map, its sum 0 and its mean NaN (the
    mean of nothing, as torch). The functional API refuses such a map by name before it reaches the kernels."""
    from scatloss.ops import scat as fused

    fake, real = torch.zeros(B, 1, *size), torch.zeros(B, 1, *size)
    hole = _hole((B, 1, 4, 4), seed=7, dtype=torch.float32)
    assert fused.scat_segmenter_loss(fake, real, hole, reduction="none").shape == (B, 1, *size)
    assert float(fused.scat_segmenter_loss(fake, real, hole, reduction="sum")) == 0.0
    assert math.isnan(float(fused.scat_generator_loss(fake, hole, reduction="mean")))
    with pytest.raises(ValueError, match="^fake_logits: expected a logit map with at least one row and one column"):
        SF.scat_segmenter_loss(fake, real, hole, reduction="none", backend="triton")


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or _interpreting(), reason="needs CUDA with TRITON_INTERPRET=0 (compiled kernels)"
)
@pytest.mark.parametrize("size", [(4, 4), (2, 2), (2, 4)])
@pytest.mark.parametrize("resample", ["area", "nearest", "max"])
def test_fused_scat_reads_a_bool_mask_as_its_float_twin_on_cuda(size: tuple[int, int], resample: str) -> None:
    """Compiled kernels: a bool mask (read through a uint8 view) gives the same per-pixel losses as the same mask in
    float, read at its own ``4 x 8`` resolution for ``(h, w)`` logits (blocks ``1 x 2``, ``2 x 4``, ``2 x 2``)."""
    fake, real = _logits(B, 1, *size, seed=8).cuda(), _logits(B, 1, *size, seed=9).cuda()
    hole = _hole((B, 1, 4, 8), seed=10, dtype=torch.bool).cuda()
    for got, want in (
        (
            SF.scat_segmenter_loss(fake, real, hole, resample=resample, reduction="none", backend="triton"),
            SF.scat_segmenter_loss(fake, real, hole.double(), resample=resample, reduction="none", backend="triton"),
        ),
        (
            SF.scat_generator_loss(fake, hole, resample=resample, reduction="none", backend="triton"),
            SF.scat_generator_loss(fake, hole.double(), resample=resample, reduction="none", backend="triton"),
        ),
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
