r"""Straight-from-the-equation PyTorch implementations: the baseline every fast path is measured against.

These are the per-pixel SCAT terms (Eq. 1, Eq. 2) and InfoNCE (Eq. 4) written as plain autograd
expressions, with no input validation and no dispatch. :mod:`scatloss.functional` validates its inputs
and then runs either the Triton kernels or the memory-lean autograd functions of
:mod:`scatloss.ops.torch_fused`; both are tested against these, and ``benchmarks/bench_kernels.py``
reports them as the ``eager`` baseline. Arguments and semantics are those of the functional twins
(hole mask already at the logits' resolution here, see :func:`scatloss.masks.resample_hole`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "fake_term",
    "generator_term",
    "l2_normalize",
    "real_term",
    "reduce",
    "row_norms",
    "scat_generator_loss",
    "scat_segmenter_loss",
    "semantic_contrastive_loss",
]


def real_term(z: torch.Tensor, kind: str) -> torch.Tensor:
    r""":math:`\ell^+(z)`, the loss for labelling ``z`` real.

    hinge ``relu(1 - z)``, bce ``softplus(-z)``, ls ``(z - 1)^2``.
    """
    if kind == "hinge":
        return F.relu(1.0 - z)
    if kind == "bce":
        return F.softplus(-z)
    return (z - 1.0).square()


def fake_term(z: torch.Tensor, kind: str) -> torch.Tensor:
    r""":math:`\ell^-(z)`, the loss for labelling ``z`` fake: hinge ``relu(1 + z)``, bce ``softplus(z)``, ls ``z^2``."""
    if kind == "hinge":
        return F.relu(1.0 + z)
    if kind == "bce":
        return F.softplus(z)
    return z.square()


def generator_term(z: torch.Tensor, kind: str) -> torch.Tensor:
    r""":math:`\ell^G(z)`, the generator's loss for a fake scored ``z``: hinge ``-z``, else :func:`real_term`."""
    if kind == "hinge":
        return -z
    return real_term(z, kind)


def reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    """``"mean"`` / ``"sum"`` over every element, or ``"none"``."""
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    return x


def scat_segmenter_loss(
    fake_logits: torch.Tensor, real_logits: torch.Tensor, hole: torch.Tensor, kind: str, reduction: str
) -> torch.Tensor:
    """Eq. 1: ``(1 - h) l+(S(x-)) + h l-(S(x-)) + l+(S(x))`` per pixel; ``hole`` at the logits' resolution."""
    per_pixel = (1.0 - hole) * real_term(fake_logits, kind) + hole * fake_term(fake_logits, kind)
    return reduce(per_pixel + real_term(real_logits, kind), reduction)


def scat_generator_loss(
    fake_logits: torch.Tensor, weight: torch.Tensor | None, kind: str, reduction: str
) -> torch.Tensor:
    """Eq. 2: ``w lG(S(x-))`` per pixel, ``w`` the hole mask (released code) or ``None`` (all pixels, the paper).

    Pixels with ``w = 0`` are selected out, not multiplied by 0: a least-squares term of a logit above ~1.8e19
    is infinite in float32, and ``inf * 0`` would make the loss NaN."""
    per_pixel = generator_term(fake_logits, kind)
    if weight is not None:
        per_pixel = torch.where(weight != 0, per_pixel * weight, torch.zeros_like(per_pixel))
    return reduce(per_pixel, reduction)


def row_norms(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norms of the rows of ``x`` (last dim), without overflow or underflow of the squares.

    ``torch.linalg.vector_norm`` squares the entries in the input's dtype, so a float32 row with an entry above
    ~1.8e19 gets an infinite norm (and ``F.normalize`` turns it into zeros). Half, bfloat16 and float32 rows are
    therefore accumulated in float64 (exact wherever the norm is representable); float64 rows (and rows on MPS,
    which has no float64) are divided by their largest absolute entry first and scaled back. Zero rows have norm
    0; rows with NaN or infinite entries a NaN or infinite norm.
    """
    if x.dtype != torch.float64 and x.device.type != "mps":  # (MPS has no float64)
        return torch.linalg.vector_norm(x, dim=-1, dtype=torch.float64).to(x.dtype)
    scale = x.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.linalg.vector_norm(x / scale, dim=-1) * scale.squeeze(-1)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, dim=-1, eps=eps)``, i.e. ``x / max(|x|, eps)``, with the norm of :func:`row_norms`."""
    return x / row_norms(x).clamp(min=eps).unsqueeze(-1)


def l2_normalize_additive(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / (|x| + eps)``: the authors' release normalises this way (``eps = 1e-7``)."""
    return x / (row_norms(x) + eps).unsqueeze(-1)


def semantic_contrastive_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    normalize: bool,
    reduction: str,
    normalize_eps: float | None = None,
) -> torch.Tensor:
    """Eq. 4, InfoNCE with one positive and ``M`` negatives, computed in at least float32.

    ``normalize_eps=None`` normalises as ``F.normalize`` (``x / max(|x|, 1e-12)``); a float ``e`` as the release
    (``x / (|x| + e)``).
    """
    dtype = torch.promote_types(anchor.dtype, torch.float32)
    a, p, n = anchor.to(dtype), positive.to(dtype), negatives.to(dtype)
    if normalize and normalize_eps is not None:
        a, p, n = (l2_normalize_additive(x, normalize_eps) for x in (a, p, n))
    elif normalize:
        a, p, n = l2_normalize(a), l2_normalize(p), l2_normalize(n)
    pos = (a * p).sum(dim=-1, keepdim=True)  # (B, 1)
    neg = torch.einsum("bd,bmd->bm", a, n)  # (B, M)
    logits = torch.cat([pos, neg], dim=1) / temperature
    loss = torch.logsumexp(logits, dim=1) - logits[:, 0]
    return reduce(loss, reduction)
