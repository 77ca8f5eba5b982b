r"""Memory-lean PyTorch autograd functions: the default path wherever the Triton kernels do not run.

The reference expressions (:mod:`scatloss.reference`) keep every intermediate of the per-pixel terms
(``relu`` outputs, ``1 - h``, products) or the normalised copies of all ``B*M`` negatives alive for
backward. These :class:`torch.autograd.Function`\ s compute the same values, keep only their inputs
(and, for InfoNCE, per-row norms and the softmax) for backward, and form gradients in place from
closed forms. Values equal the reference up to floating-point reassociation; the tests compare them in
float64 and run ``gradcheck``, including the gradient with respect to the hole mask.

Gradients (``t = 1 - h`` is the fakes' target, ``g`` the upstream gradient, already divided by the
element count for ``reduction="mean"``):

* segmenter, per pixel ``L = t l+(z_f) + h l-(z_f) + l+(z_r)``:
  ``dL/dz_f = l+'(z_f) + h (l-'(z_f) - l+'(z_f))``, ``dL/dz_r = l+'(z_r)``,
  ``dL/dh = l-(z_f) - l+(z_f)``, with hinge ``l+' = -[z < 1]``, ``l-' = [z > -1]`` (zero at the kinks,
  like ``relu``'s), bce ``l+' = sigmoid(z) - 1``, ``l-' = sigmoid(z)``, ls ``l+' = 2(z - 1)``, ``l-' = 2z``;
* generator, per pixel ``L = w lG(z)``: ``dL/dz = w lG'(z)`` (hinge ``lG' = -1``), ``dL/dw = lG(z)``;
* InfoNCE, row ``b`` with cosines ``c_0 = a.p`` and ``c_m = a.n_m`` of the normalised vectors and
  ``s = softmax(c / t)``: ``dL/dc = (s - e_0) / t``. Through ``x^ = x / max(|x|, eps)``,
  ``dL/dx = (dL/dx^ - x^ (x^ . dL/dx^)) / max(|x|, eps)`` (the projection is absent where the norm is
  clamped). For the negatives ``x^ . dL/dx^ = (dL/dc_m) c_m``, so their gradient is one fused
  ``baddbmm`` into a single ``(B, M, D)`` buffer.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import reference as R
from ..masks import resample_hole_unchecked as resample_hole

__all__ = [
    "hole_at",
    "infonce",
    "scat_generator",
    "scat_generator_hole",
    "scat_segmenter",
    "scat_segmenter_hole",
]

_EPS = 1e-12  # F.normalize's


def _scale(g: torch.Tensor, reduction: str, numel: int) -> torch.Tensor:
    return g / numel if reduction == "mean" else g


def _real_term(z: torch.Tensor, kind: str) -> torch.Tensor:
    """:func:`scatloss.reference.real_term` with one allocation (in-place clamp / square)."""
    if kind == "hinge":
        return (1.0 - z).clamp_(min=0.0)
    if kind == "ls":
        return (z - 1.0).square_()
    return R.real_term(z, kind)


def _fake_term(z: torch.Tensor, kind: str) -> torch.Tensor:
    """:func:`scatloss.reference.fake_term` with one allocation (in-place clamp)."""
    if kind == "hinge":
        return (z + 1.0).clamp_(min=0.0)
    return R.fake_term(z, kind)


def _hardtanh_backward(grad: torch.Tensor, z: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``grad * [lo < z < hi]`` (``grad`` broadcast to ``z``'s shape) as one vectorised ATen kernel: much cheaper on
    CPU than a comparison, a bool-to-float copy and a product. With ``lo = -inf`` it is ``grad * [z < hi]`` for
    every finite ``z`` (a ``-inf`` logit gives an infinite loss, where no gradient is meaningful)."""
    return torch.ops.aten.hardtanh_backward(grad, z, lo, hi)


def _real_grad(z: torch.Tensor, kind: str) -> torch.Tensor:
    """:math:`d\\ell^+/dz` for bce and ls (hinge goes through :func:`_hardtanh_backward`)."""
    if kind == "bce":
        return torch.sigmoid(z).sub_(1.0)
    return (z - 1.0).mul_(2.0)


_CHUNK_ELEMS = 1 << 17  # per-pixel temporaries are made for batch chunks of about this many elements (512 KiB fp32
# on CPU; 32x that on other devices, where each chunk's ops are kernel launches)


def _chunks(z: torch.Tensor) -> list[slice] | None:  # None: the whole map at once
    """Batch slices whose per-pixel temporaries stay small, or ``None`` when the whole map is small enough to be
    done in one go (no slicing, no extra Python overhead on small maps)."""
    limit = _CHUNK_ELEMS if z.device.type == "cpu" else 32 * _CHUNK_ELEMS  # fewer, larger launches on a GPU
    per_sample = max(1, math.prod(z.shape[1:]))
    if z.shape[0] * per_sample <= limit:
        return None
    rows = max(1, limit // per_sample)
    return [slice(i, i + rows) for i in range(0, z.shape[0], rows)]


def _each_chunk(z: torch.Tensor) -> list[slice | None]:
    """:func:`_chunks`, with ``[None]`` (the whole map) when one chunk suffices."""
    chunks = _chunks(z)
    return [None] if chunks is None else list(chunks)


def _rows(x: torch.Tensor, sl: slice | None) -> torch.Tensor:
    """``x[sl]`` for a per-pixel tensor, ``x`` itself for a scalar (the upstream gradient of a reduced loss) or
    for ``sl = None`` (the whole batch)."""
    return x[sl] if sl is not None and x.dim() else x


def _segmenter_pixels(zf: torch.Tensor, zr: torch.Tensor, h: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-pixel Eq. 1, ``t l+(zf) + h l-(zf) + l+(zr)`` with ``t = 1 - h``, in the promoted dtype."""
    lp = _real_term(zf, kind)
    m = _fake_term(zf, kind).sub_(lp).mul_(h).add_(lp)
    del lp
    rt = _real_term(zr, kind)
    return m.add_(rt) if m.dtype == torch.promote_types(m.dtype, rt.dtype) else m + rt


def _reduce_chunked(pixels: Any, z: torch.Tensor, out_dtype: torch.dtype, reduction: str) -> torch.Tensor:
    """``R.reduce`` of the per-pixel map ``pixels(sl)``, computed batch chunk by batch chunk when the map is large
    (chunk sums accumulate in at least float32, in a fixed order); ``pixels(None)`` is the whole map."""
    chunks = _chunks(z)
    if chunks is None:
        return R.reduce(pixels(None), reduction).to(out_dtype)
    if reduction == "none":
        out = torch.empty(z.shape, dtype=out_dtype, device=z.device)
        for sl in chunks:
            out[sl] = pixels(sl)
        return out
    acc = torch.promote_types(out_dtype, torch.float32)
    total = torch.zeros((), dtype=acc, device=z.device)
    for sl in chunks:
        total += pixels(sl).sum(dtype=acc)
    if reduction == "mean":
        total = total / z.numel()
    return total.to(out_dtype)


def _segmenter_fake_grad_into(
    buf: torch.Tensor, zf: torch.Tensor, h: torch.Tensor, kind: str, scale: torch.Tensor
) -> torch.Tensor:
    """``dL/dz_f`` written into ``buf`` (which may be ``h`` itself), chunk by chunk: ``h (1 + [|z| < 1]) - [z < 1]``
    for hinge, ``sigmoid(z) - 1 + h`` for bce, ``2 (z - 1 + h)`` for ls, times ``scale``."""
    same = buf is h
    for sl in _each_chunk(zf):
        b, z, hh, sc = _rows(buf, sl), _rows(zf, sl), _rows(h, sl), _rows(scale, sl).to(zf.dtype)
        if kind == "hinge":  # one temporary at a time
            inside = _hardtanh_backward(hh, z, -1.0, 1.0)  # read h before b (possibly h itself) is overwritten
            (b if same else b.copy_(hh)).add_(inside).mul_(sc)
            del inside
            b.add_(_hardtanh_backward(sc.neg(), z, -math.inf, 1.0))
        elif kind == "bce":
            sig = torch.sigmoid(z)
            (b if same else b.copy_(hh)).add_(sig).sub_(1.0).mul_(sc)
        else:
            (b if same else b.copy_(hh)).add_(z).sub_(1.0).mul_(sc * 2.0)
    return buf


def _stash_resampled(ctx: Any, hole: torch.Tensor, like: torch.Tensor, resample: str, mask: torch.Tensor) -> None:
    """Forward side of the buffer reuse: keep ``mask`` (``hole`` at ``like``'s resolution) for backward, outside
    ``save_for_backward`` since backward may overwrite it (no version check), unless it is the caller's tensor."""
    ctx.buffer = None if _hole_at_aliases(hole, like, resample) else mask
    ctx.resample = resample


def _take_resampled(ctx: Any, hole: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Backward side: ``(mask at like's resolution, whether it may be overwritten)``. The stashed buffer is handed
    over once (and the reference dropped, so AccumulateGrad may keep it as the gradient); a second backward through
    the same graph (``retain_graph=True``) resamples again."""
    own, ctx.buffer = ctx.buffer, None
    if own is not None:
        return own, True
    return hole_at(hole, like, ctx.resample), not _hole_at_aliases(hole, like, ctx.resample)


class _SegmenterLoss(torch.autograd.Function):
    """Eq. 1 per pixel. Two ways in, as :class:`_GeneratorLoss`:

    * ``h`` given (``hole`` None): the mask at the logits' resolution, which may require grad
      (``dL/dh = l-(z_f) - l+(z_f)``);
    * ``hole`` given (``h`` None): the caller's mask (no grad), resampled here; when that makes a fresh buffer,
      backward writes ``dL/dz_f`` into it, so the mask and the two gradients are never three maps at once.

    Per-pixel temporaries are made for batch chunks (:func:`_chunks`), never for the whole map.
    """

    @staticmethod
    def forward(
        ctx: Any,
        zf: torch.Tensor,
        zr: torch.Tensor,
        h: torch.Tensor | None,
        hole: torch.Tensor | None,
        resample: str,
        kind: str,
        reduction: str,
    ) -> Any:
        with torch.no_grad():
            hm = hole_at(hole, zf, resample) if hole is not None else h
            if hm is None:
                raise TypeError("h, hole: expected the mask at the logits' resolution or at its own, got neither")
            out_dtype = torch.promote_types(zf.dtype, zr.dtype)
            out = _reduce_chunked(
                lambda sl: _segmenter_pixels(_rows(zf, sl), _rows(zr, sl), _rows(hm, sl), kind),
                zf,
                out_dtype,
                reduction,
            )
        if hole is not None:
            ctx.save_for_backward(zf, zr, hole)
            _stash_resampled(ctx, hole, zf, resample, hm)
        else:
            ctx.save_for_backward(zf, zr, h)
        ctx.from_hole = hole is not None
        ctx.kind, ctx.reduction, ctx.numel = kind, reduction, zf.numel()
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        kind, scale = ctx.kind, _scale(g, ctx.reduction, ctx.numel)
        zf, zr, h_or_hole = ctx.saved_tensors
        gzf = gzr = gh = None
        if ctx.needs_input_grad[1]:
            if kind == "hinge":  # -[z < 1] in one masked broadcast of the upstream scale
                gzr = _hardtanh_backward(scale.neg().to(zr.dtype), zr, -math.inf, 1.0)
            else:
                gzr = _real_grad(zr, kind).mul_(scale).to(zr.dtype)
        if not ctx.from_hole and ctx.needs_input_grad[2]:
            gh = R.fake_term(zf, kind).sub_(R.real_term(zf, kind)).mul_(scale).to(h_or_hole.dtype)
        if ctx.needs_input_grad[0]:
            h, owned = _take_resampled(ctx, h_or_hole, zf) if ctx.from_hole else (h_or_hole, False)
            buf = h if owned else torch.empty_like(zf, memory_format=torch.contiguous_format)
            gzf = _segmenter_fake_grad_into(buf, zf, h.to(zf.dtype), kind, scale)
        return gzf, gzr, gh, None, None, None, None


def hole_at(hole: torch.Tensor, like: torch.Tensor, resample: str) -> torch.Tensor:
    """The hole mask at ``like``'s resolution and dtype (float32 math is kept for reduced precision).

    A bool mask is converted after ``"nearest"`` picks its pixels (so no full-resolution float copy is made
    for it) and before ``"area"``/``"max"`` pooling (at the logits' precision: float64 stays exact).
    """
    size = (like.shape[-2], like.shape[-1])
    if not hole.is_floating_point() and resample != "nearest":
        hole = hole.to(torch.promote_types(like.dtype, torch.float32))
    return resample_hole(hole, size, resample).to(like.dtype)  # type: ignore[arg-type]


def _hole_at_aliases(hole: torch.Tensor, like: torch.Tensor, resample: str) -> bool:
    """Whether :func:`hole_at` returns ``hole`` itself or a view of it rather than a fresh buffer.

    Decided from shapes and dtypes (as :func:`scatloss.masks.resample_hole` decides), not from data pointers,
    so that it traces under ``torch.compile``: only a float mask already in the logits' dtype comes back
    uncopied, at equal sizes or as ``"nearest"``'s strided view for integer factors.
    """
    if hole.dtype != like.dtype:
        return False
    h, w, H, W = like.shape[-2], like.shape[-1], hole.shape[-2], hole.shape[-1]
    if (h, w) == (H, W):
        return True
    return resample == "nearest" and h <= H and w <= W and H % h == 0 and W % w == 0


def _generator_grad_into(w: torch.Tensor, z: torch.Tensor, kind: str, scale: torch.Tensor) -> torch.Tensor:
    """``w * lG'(z) * scale`` written into ``w`` (a buffer only the caller holds); temporaries per batch chunk."""
    if kind == "hinge":  # lG' = -1
        return w.mul_(scale.neg()) if scale.dim() == 0 else w.mul_(scale).neg_()  # one pass over the map if scalar
    for sl in _each_chunk(z):
        ws = _rows(w, sl)
        zero = ws == 0 if kind == "ls" else None  # select, not multiply: 2 (z - 1) overflows for |z| > 1.7e38
        ws.mul_(_real_grad(_rows(z, sl), kind)).mul_(_rows(scale, sl))
        if zero is not None:
            ws.masked_fill_(zero, 0.0)
    return w


def _generator_pixels(z: torch.Tensor, w: torch.Tensor | None, sl: slice | None, kind: str) -> torch.Tensor:
    """Per-pixel Eq. 2 for the batch rows ``sl`` (``z`` already sliced): ``w lG(z)``, or ``lG(z)`` without ``w``."""
    m = R.generator_term(z, kind)
    if w is None:
        return m
    w = _rows(w, sl)
    m = m.mul_(w) if m.dtype == torch.promote_types(m.dtype, w.dtype) else m * w
    if kind == "ls":  # select, not multiply: (z - 1)^2 is inf for |z| > 1.8e19 in float32, and inf * 0 = NaN
        m.masked_fill_(w == 0, 0.0)
    return m


class _GeneratorLoss(torch.autograd.Function):
    """Eq. 2 per pixel. Two ways in:

    * ``w`` given (``hole`` None): a weight map at the logits' resolution, or None for ``region="all"``;
      it may require grad (``dL/dw = lG(z)``).
    * ``hole`` given (``w`` None): the caller's mask, which does not require grad. The Function resamples
      it itself, and when that gives a fresh buffer (not a view of ``hole``), backward turns that buffer
      into the gradient in place instead of allocating one: the resampled mask and the gradient never
      coexist. A second backward through the same graph (``retain_graph=True``) resamples again.
    """

    @staticmethod
    def forward(
        ctx: Any,
        z: torch.Tensor,
        w: torch.Tensor | None,
        hole: torch.Tensor | None,
        resample: str,
        kind: str,
        reduction: str,
    ) -> Any:
        with torch.no_grad():
            if hole is not None:
                w = hole_at(hole, z, resample)
                _stash_resampled(ctx, hole, z, resample, w)
            if kind == "hinge" and reduction != "none":  # -sum(z w) as one reduction, no per-pixel temporary
                total = z.sum() if w is None else torch.vdot(z.reshape(-1), w.to(z.dtype).reshape(-1))
                out = total.mul_(-1.0 / z.numel() if reduction == "mean" else -1.0)
            else:
                out_dtype = z.dtype if w is None else torch.promote_types(z.dtype, w.dtype)
                out = _reduce_chunked(lambda sl: _generator_pixels(_rows(z, sl), w, sl, kind), z, out_dtype, reduction)
        ctx.save_for_backward(z, hole if hole is not None else w)
        ctx.from_hole = hole is not None
        ctx.kind, ctx.reduction, ctx.numel = kind, reduction, z.numel()
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        kind, scale = ctx.kind, _scale(g, ctx.reduction, ctx.numel)
        if ctx.from_hole:
            z, hole = ctx.saved_tensors
            gz = None
            if ctx.needs_input_grad[0]:
                w, owned = _take_resampled(ctx, hole, z)
                gz = _generator_grad_into(w if owned else w.clone(), z, kind, scale.to(z.dtype))
            return gz, None, None, None, None, None
        z, w = ctx.saved_tensors
        gz = gw = None
        if ctx.needs_input_grad[0]:
            if kind == "hinge":  # lG' = -1
                d = torch.ones_like(z).neg_() if w is None else w.to(z.dtype).neg()
            else:
                d = _real_grad(z, kind)
                if w is not None:
                    d = d.mul_(w)
                    if kind == "ls":  # select, not multiply (inf * 0)
                        d.masked_fill_(w == 0, 0.0)
            gz = d.mul_(scale)
        if w is not None and ctx.needs_input_grad[1]:
            gw = (R.generator_term(z, kind) * scale).to(w.dtype)
        return gz, gw, None, None, None, None


def scat_segmenter(
    fake_logits: torch.Tensor, real_logits: torch.Tensor, hole: torch.Tensor, kind: str, reduction: str
) -> torch.Tensor:
    """Eq. 1 per pixel, ``hole`` at the logits' resolution; values and gradients of the reference."""
    return _SegmenterLoss.apply(fake_logits, real_logits, hole, None, "area", kind, reduction)


def scat_segmenter_hole(
    fake_logits: torch.Tensor, real_logits: torch.Tensor, hole: torch.Tensor, resample: str, kind: str, reduction: str
) -> torch.Tensor:
    """Eq. 1 with ``hole`` at any resolution and not requiring grad: the resampled mask's buffer becomes
    ``dL/dz_f`` (the mask and both gradients are never three logit-sized maps at once)."""
    if hole.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "hole: scat_segmenter_hole gives the mask no gradient; use scat_segmenter(zf, zr, hole_at(...))"
        )
    return _SegmenterLoss.apply(fake_logits, real_logits, None, hole, resample, kind, reduction)


def scat_generator(fake_logits: torch.Tensor, weight: torch.Tensor | None, kind: str, reduction: str) -> torch.Tensor:
    """Eq. 2 per pixel, ``weight`` the hole mask at the logits' resolution or ``None`` (all pixels)."""
    return _GeneratorLoss.apply(fake_logits, weight, None, "area", kind, reduction)


def scat_generator_hole(
    fake_logits: torch.Tensor, hole: torch.Tensor, resample: str, kind: str, reduction: str
) -> torch.Tensor:
    """Eq. 2 on the hole region, ``hole`` at any resolution and not requiring grad: the resampled mask's
    buffer becomes the gradient (one logit-sized map alive at a time instead of two)."""
    if hole.requires_grad and torch.is_grad_enabled():
        raise ValueError("hole: scat_generator_hole gives the mask no gradient; use scat_generator(z, hole_at(...))")
    return _GeneratorLoss.apply(fake_logits, None, hole, resample, kind, reduction)


# ----------------------------------------------------------------------------------------------
# InfoNCE
# ----------------------------------------------------------------------------------------------


def _norms(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Row norms ``|x|`` that neither overflow (float32 entries above ~1.8e19 square to infinity) nor underflow:
    :func:`scatloss.reference.row_norms`."""
    if not normalize:
        return torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device)
    return R.row_norms(x)


def _inv(norm: torch.Tensor, normalize: bool) -> torch.Tensor:
    return norm.clamp(min=_EPS).reciprocal() if normalize else norm


def _normalize_backward(x_hat: torch.Tensor, g: torch.Tensor, inv: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """Gradient through ``x / max(|x|, eps)`` for ``(B, D)`` rows, given ``x^`` and ``dL/dx^``."""
    proj = (x_hat * g).sum(dim=-1, keepdim=True) * (norm > _EPS).unsqueeze(-1)
    return (g - x_hat * proj) * inv.unsqueeze(-1)


class _InfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negatives: torch.Tensor,
        temperature: float,
        normalize: bool,
        reduction: str,
    ) -> Any:
        dtype = torch.promote_types(anchor.dtype, torch.float32)
        a, p, n = anchor.to(dtype), positive.to(dtype), negatives.to(dtype)
        with torch.no_grad():
            na, np_, nn_ = _norms(a, normalize), _norms(p, normalize), _norms(n, normalize)
            a_hat = a * _inv(na, normalize).unsqueeze(-1)
            p_hat = p * _inv(np_, normalize).unsqueeze(-1)
            cos_pos = (a_hat * p_hat).sum(dim=-1, keepdim=True)  # (B, 1)
            cos_neg = torch.bmm(n, a_hat.unsqueeze(-1)).squeeze(-1) * _inv(nn_, normalize)  # (B, M)
            logits = torch.cat([cos_pos, cos_neg], dim=1).div_(temperature)
            lse = torch.logsumexp(logits, dim=1)
            loss = lse - logits[:, 0]
            softmax = logits.sub_(lse.unsqueeze(1)).exp_()
            out = R.reduce(loss, reduction)
        ctx.save_for_backward(a, p, n, na, np_, nn_, softmax, cos_neg)
        ctx.temperature, ctx.normalize, ctx.reduction = temperature, normalize, reduction
        ctx.dtypes = (anchor.dtype, positive.dtype, negatives.dtype)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        a, p, n, na, np_, nn_, softmax, cos_neg = ctx.saved_tensors
        t, normalize = ctx.temperature, ctx.normalize
        b = a.shape[0]
        gb = g.to(a.dtype).expand(b) if ctx.reduction != "none" else g.to(a.dtype)
        if ctx.reduction == "mean":
            gb = gb / b
        dc = softmax * (gb / t).unsqueeze(1)  # dL/dcos: (s - e_0) g / t
        dc[:, 0] -= gb / t
        dc_pos, dc_neg = dc[:, :1], dc[:, 1:]
        ia, ip, in_ = _inv(na, normalize), _inv(np_, normalize), _inv(nn_, normalize)
        a_hat, p_hat = a * ia.unsqueeze(-1), p * ip.unsqueeze(-1)
        ga = gp = gn = None
        if ctx.needs_input_grad[0]:
            g_ahat = dc_pos * p_hat + torch.bmm((dc_neg * in_).unsqueeze(1), n).squeeze(1)
            ga = _normalize_backward(a_hat, g_ahat, ia, na) if normalize else g_ahat
            ga = ga.to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            g_phat = dc_pos * a_hat
            gp = _normalize_backward(p_hat, g_phat, ip, np_) if normalize else g_phat
            gp = gp.to(ctx.dtypes[1])
        if ctx.needs_input_grad[2]:
            coef = dc_neg * in_  # (B, M): dL/dn_m = coef_m a^ - coef_m c_m in_m [|n_m| > eps] n_m
            if normalize:  # n^ = n in_ first: coef in_^2 n underflows for huge rows (|n| ~ 1e30: in_^2 ~ 1e-60)
                shrink = (coef * cos_neg * (nn_ > _EPS)).neg_()
                gn = (n * in_.unsqueeze(-1)).mul_(shrink.unsqueeze(-1)).baddbmm_(coef.unsqueeze(-1), a_hat.unsqueeze(1))
            else:
                gn = torch.bmm(coef.unsqueeze(-1), a_hat.unsqueeze(1))
            gn = gn.to(ctx.dtypes[2])
        return ga, gp, gn, None, None, None


def infonce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    normalize: bool,
    reduction: str,
) -> torch.Tensor:
    """Eq. 4 (validated inputs), computed in at least float32; values and gradients of the reference."""
    return _InfoNCE.apply(anchor, positive, negatives, temperature, normalize, reduction)
