r"""Fused SCAT losses (Eq. 1 and Eq. 2): one Triton pass per loss, loss and gradient together.

Called by :func:`scatloss.functional.scat_segmenter_loss` and
:func:`scatloss.functional.scat_generator_loss` when the backend resolves to ``"triton"``, with
inputs already validated; the math is the reference's (see :mod:`scatloss.functional`) and the
kernels, their gradients and the custom-op registration live in :mod:`scatloss.ops._scat_triton`.

Behaviour worth knowing:

* **Mask resolution.** When the mask's ``(H, W)`` is an integer multiple of the logits' ``(h, w)``
  (``k_h = H/h`` and ``k_w = W/w`` may differ) the kernel reads the mask at its own resolution and
  resamples each ``k_h x k_w`` block in registers (area, nearest, max), as
  :func:`scatloss.masks.resample_hole` would. Other ratios (including a mask *smaller* than the
  logits) are first resampled with PyTorch, which allocates one ``(B, 1, h, w)`` float mask.
* **Mask dtype.** Float masks are read in their own dtype; a bool mask is reinterpreted as uint8
  (``Tensor.view``, no copy).
* **Strides.** Logits and mask are read through their strides (channels-last, slices, a mask
  expanded over the batch with stride 0): no input is copied or written to.
* **Precision.** Math in float32 (float64 for float64 logits); the loss comes back in the logits'
  dtype (their promoted dtype for the segmenter), gradients in each input's dtype.
* **Gradients.** To the logits only: the hole mask is data. A mask that requires grad (the reference
  would differentiate it) raises ``NotImplementedError`` rather than silently getting none. Not twice
  differentiable (first-order training losses).
* **Determinism / sync.** Fixed-order reductions (bitwise reproducible), no host synchronisation,
  so a step is CUDA-graph capturable.
"""

from __future__ import annotations

from typing import Any

import torch

from ..masks import resample_hole_unchecked as resample_hole

__all__ = ["scat_generator_loss", "scat_segmenter_loss"]


def _ops() -> Any:
    from . import _scat_triton  # imports triton; registers scatloss::scat_fwd / scat_bwd

    return _scat_triton


def _mask_for(hole: torch.Tensor, like: torch.Tensor, resample: str) -> torch.Tensor:
    """The mask as the kernel reads it: its own resolution if an integer multiple, else resampled."""
    if hole.requires_grad and torch.is_grad_enabled():
        raise NotImplementedError(
            "hole: the fused SCAT kernels treat the mask as data and give it no gradient, but it requires grad; "
            "pass hole.detach(), or backend='torch' for a gradient with respect to the mask"
        )
    h, w = like.shape[-2], like.shape[-1]
    H, W = hole.shape[-2], hole.shape[-1]
    if h > 0 and w > 0 and (h > H or w > W or H % h or W % w):
        return resample_hole(hole, (h, w), resample)  # type: ignore[arg-type]  # documented fallback
    return hole.view(torch.uint8) if hole.dtype == torch.bool else hole


def _needs_grad(x: torch.Tensor | None) -> bool:
    return x is not None and x.requires_grad and torch.is_grad_enabled()


def scat_segmenter_loss(
    fake_logits: torch.Tensor,
    real_logits: torch.Tensor,
    hole: torch.Tensor,
    *,
    kind: str = "hinge",
    resample: str = "area",
    reduction: str = "mean",
) -> torch.Tensor:
    """Fused :func:`scatloss.functional.scat_segmenter_loss` (validated inputs; same arguments and result)."""
    loss, _, _ = _ops().scat_fwd(
        fake_logits,
        real_logits,
        _mask_for(hole, fake_logits, resample),
        kind,
        "segmenter",
        resample,
        reduction,
        _needs_grad(fake_logits),
        _needs_grad(real_logits),
    )
    return loss


def scat_generator_loss(
    fake_logits: torch.Tensor,
    hole: torch.Tensor,
    *,
    kind: str = "hinge",
    region: str = "hole",
    resample: str = "area",
    reduction: str = "mean",
) -> torch.Tensor:
    """Fused :func:`scatloss.functional.scat_generator_loss` (validated inputs; same arguments and result)."""
    mask = _mask_for(hole, fake_logits, resample) if region == "hole" else None
    loss, _, _ = _ops().scat_fwd(
        fake_logits,
        None,
        mask,
        kind,
        "gen_hole" if region == "hole" else "gen_all",
        resample,
        reduction,
        _needs_grad(fake_logits),
        False,
    )
    return loss
