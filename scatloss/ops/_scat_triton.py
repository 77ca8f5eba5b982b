r"""Triton kernels and custom ops for the SCAT per-pixel term (imported lazily by :mod:`scatloss.ops.scat`).

One forward kernel covers the three uses of the per-pixel term (``target``):

* ``"segmenter"``: fakes with target :math:`t = 1 - \bar h` plus reals with target 1,
  :math:`L = t\,\ell^+(z_f) + \bar h\,\ell^-(z_f) + \ell^+(z_r)`;
* ``"gen_hole"``: :math:`L = \bar h\,\ell^G(z_f)`;  ``"gen_all"``: :math:`L = \ell^G(z_f)`;

where :math:`\bar h` is the hole mask resampled to the logits' grid *inside the kernel*: each
program reads the ``k_h x k_w`` block of the full-resolution mask under its output pixel (area: block
mean, max: block max, nearest: the block's top-left pixel), so the resampled mask never exists in
memory. Everything is computed in float32 (float64 for float64 inputs) and stored in the logits' dtype.

Gradients (per pixel, computed in the same pass as the loss):

=====  =====================================  =========================  ===========
kind   :math:`d\ell^+/dz`                     :math:`d\ell^-/dz`         :math:`d\ell^G/dz`
=====  =====================================  =========================  ===========
hinge  :math:`-[z < 1]`                        :math:`[z > -1]`           :math:`-1`
bce    :math:`\sigma(z) - 1`                   :math:`\sigma(z)`          as :math:`\ell^+`
ls     :math:`2(z - 1)`                        :math:`2z`                 as :math:`\ell^+`
=====  =====================================  =========================  ===========

(the hinge subgradient at the kink is 0, as ``relu``'s backward in PyTorch), so the fake pixel's
derivative is :math:`t\,\ell^{+\prime} + \bar h\,\ell^{-\prime}` (for bce :math:`\sigma(z) - t`, for ls
:math:`2(z - t)`). The loss is a sum of per-pixel terms, so with upstream gradient ``g`` (a scalar
for ``mean``/``sum``, a map for ``none``) the input gradient is ``g * scale * dL/dz`` with
``scale = 1/(B h w)`` for ``mean``. Why save ``dL/dz`` rather than recompute it in backward:
recomputing needs the logits *and* the full-resolution mask again (``k_h k_w`` mask reads per pixel,
16 for a 4x larger mask) plus the transcendental functions; the saved derivative is one
logits-sized tensor in the logits' dtype (no more than autograd would keep for the reference path)
and the backward is a single streaming multiply. When no input needs a gradient (``no_grad`` or
detached inputs) the gradient stores are compiled out and nothing is saved.

Reductions are deterministic: each program writes the fp32 sum of its block to a buffer, and a
one-program kernel adds the buffer in a fixed order (no atomics), so the same inputs give a
bitwise-identical loss.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._triton_common import acc_dtype, launch, log1p, next_pow2, register_op, to_acc

__all__ = ["scat_bwd", "scat_fwd"]

KINDS = {"hinge": 0, "bce": 1, "ls": 2}
TARGETS = {"segmenter": 0, "gen_hole": 1, "gen_all": 2}
RESAMPLES = {"nearest": 0, "area": 1, "max": 2}

_BLOCK = 1024  # pixels per program (4 warps, 8 per thread); the kernels are bandwidth-bound
_BLOCK_W_MAX = 128  # tile width: one warp covers 128 contiguous pixels of a row (4 per thread)
_BLOCK_SUM = 1024  # partial sums read per step by the final reduction


@triton.jit
def _terms(z, KIND: tl.constexpr):
    """:math:`\\ell^+(z), d\\ell^+/dz, \\ell^-(z), d\\ell^-/dz` for one kind (see the module docstring)."""
    if KIND == 0:  # hinge: relu(1 - z), relu(1 + z)
        lp = tl.maximum(1.0 - z, 0.0)
        dp = tl.where(z < 1.0, -1.0, 0.0)
        lm = tl.maximum(1.0 + z, 0.0)
        dm = tl.where(z > -1.0, 1.0, 0.0)
    elif KIND == 1:  # bce from logits: softplus(-z), softplus(z) with one exp and one log
        e = tl.exp(-tl.abs(z))  # in (0, 1]: no overflow
        soft = log1p(e)
        sig = tl.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))
        lp = tl.maximum(-z, 0.0) + soft
        dp = sig - 1.0
        lm = tl.maximum(z, 0.0) + soft
        dm = sig
    else:  # least squares: (z - 1)^2, z^2
        lp = (z - 1.0) * (z - 1.0)
        dp = 2.0 * (z - 1.0)
        lm = z * z
        dm = 2.0 * z
    return lp, dp, lm, dm


@triton.jit
def _tile(h, w, n_hb, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, INDEX64: tl.constexpr):
    """This program's sample ``b`` (int64), row and column indices ``i`` ``(BLOCK_H, 1)``, ``j`` ``(1, BLOCK_W)``
    of its tile of the ``(h, w)`` map, and the in-bounds mask. Grid ``(B * n_hb, n_wb)``: no per-pixel division,
    and ``j`` is an ``arange``, so loads along a unit-stride row are contiguous (vectorised)."""
    pid = tl.program_id(0)
    b = (pid // n_hb).to(tl.int64)
    i = (pid % n_hb) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    j = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    valid = (i < h) & (j < w)
    if INDEX64:  # a single sample spans 2**31 elements or more: 64-bit in-sample offsets
        i = i.to(tl.int64)
        j = j.to(tl.int64)
    return b, i, j, valid


# fmt: off
@triton.jit
def _scat_fwd_kernel(
    zf_ptr, zr_ptr, hole_ptr,  # logits (fake, real) and the hole mask at its own resolution
    map_ptr, part_ptr, gf_ptr, gr_ptr,  # outputs: per-pixel map, per-program sums, dL/dz (fake, real)
    h, w, n_hb,  # logit map size and the number of row blocks per sample
    sf_b, sf_h, sf_w, sr_b, sr_h, sr_w, sh_b, sh_h, sh_w,  # strides (the channel dim has size 1)
    kh, kw, inv_k,  # the mask block under one logit pixel, and 1 / (kh * kw)
    KIND: tl.constexpr, TARGET: tl.constexpr, RESAMPLE: tl.constexpr,
    WRITE_MAP: tl.constexpr, WRITE_PART: tl.constexpr, GRAD_F: tl.constexpr, GRAD_R: tl.constexpr,
    F64: tl.constexpr, INDEX64: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    # fmt: on
    b, i, j, valid = _tile(h, w, n_hb, BLOCK_H, BLOCK_W, INDEX64)
    out = b * h * w + i * w + j  # outputs are contiguous (B, 1, h, w)

    zf = to_acc(tl.load(zf_ptr + b * sf_b + i * sf_h + j * sf_w, mask=valid, other=0.0), F64)
    lp, dp, lm, dm = _terms(zf, KIND)

    if TARGET != 2:  # the hole mask, resampled in registers
        h_ptrs = hole_ptr + b * sh_b + (i * kh) * sh_h + (j * kw) * sh_w  # top-left of the block
        if RESAMPLE == 1:  # area: block mean
            hv = to_acc(tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32), F64)
            for di in range(0, kh):
                for dj in range(0, kw):
                    hv += to_acc(tl.load(h_ptrs + di * sh_h + dj * sh_w, mask=valid, other=0), F64)
            hv = hv * inv_k
        else:  # nearest: the top-left pixel; max: the block max
            hv = to_acc(tl.load(h_ptrs, mask=valid, other=0), F64)
            if RESAMPLE == 2:
                for di in range(0, kh):
                    for dj in range(0, kw):
                        v = to_acc(tl.load(h_ptrs + di * sh_h + dj * sh_w, mask=valid, other=0), F64)
                        hv = tl.maximum(hv, v)

    if TARGET == 0:  # segmenter: fake with target 1 - h, real with target 1
        t = 1.0 - hv
        loss = t * lp + hv * lm
        grad_f = t * dp + hv * dm
        zr = to_acc(tl.load(zr_ptr + b * sr_b + i * sr_h + j * sr_w, mask=valid, other=0.0), F64)
        lpr, dpr, _lmr, _dmr = _terms(zr, KIND)
        loss += lpr
        if GRAD_R:
            tl.store(gr_ptr + out, dpr.to(gr_ptr.dtype.element_ty), mask=valid)
    else:  # generator: l^G, weighted by the hole (gen_hole) or not (gen_all)
        if KIND == 0:
            lg = -zf
            dg = zf * 0.0 - 1.0
        else:
            lg = lp
            dg = dp
        if TARGET == 1:  # select, not multiply: a masked-out ls term can be inf (|z| > 1.8e19), and inf * 0 = NaN
            loss = tl.where(hv != 0, hv * lg, 0.0)
            grad_f = tl.where(hv != 0, hv * dg, 0.0)
        else:
            loss = lg
            grad_f = dg

    if GRAD_F:
        tl.store(gf_ptr + out, grad_f.to(gf_ptr.dtype.element_ty), mask=valid)
    if WRITE_MAP:
        tl.store(map_ptr + out, loss.to(map_ptr.dtype.element_ty), mask=valid)
    if WRITE_PART:
        part = tl.sum(tl.sum(tl.where(valid, loss, 0.0), axis=1), axis=0)
        tl.store(part_ptr + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1), part)


@triton.jit
def _sum_kernel(part_ptr, out_ptr, n, scale, F64: tl.constexpr, BLOCK: tl.constexpr):
    """``out = scale * sum(part)`` by one program, always in the same order (deterministic)."""
    offs = tl.arange(0, BLOCK)
    acc = to_acc(tl.zeros([BLOCK], dtype=tl.float32), F64)
    for start in range(0, n, BLOCK):
        acc += tl.load(part_ptr + start + offs, mask=start + offs < n, other=0.0)
    tl.store(out_ptr, (tl.sum(acc, axis=0) * scale).to(out_ptr.dtype.element_ty))


@triton.jit
def _scale_grad_kernel(
    g_ptr, d_ptr, out_ptr, h, w, n_hb, sg_b, sg_h, sg_w, scale,
    F64: tl.constexpr, INDEX64: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    """``out = g * scale * d``; ``g`` is the upstream gradient (strides 0 when it is a scalar)."""
    b, i, j, valid = _tile(h, w, n_hb, BLOCK_H, BLOCK_W, INDEX64)
    flat = b * h * w + i * w + j  # d and out are contiguous (B, 1, h, w)
    g = to_acc(tl.load(g_ptr + b * sg_b + i * sg_h + j * sg_w, mask=valid, other=0.0), F64)
    d = to_acc(tl.load(d_ptr + flat, mask=valid, other=0.0), F64)
    tl.store(out_ptr + flat, (g * scale * d).to(out_ptr.dtype.element_ty), mask=valid)


# ------------------------------------------------------------------------------------------------
# ops
# ------------------------------------------------------------------------------------------------


def _tiling(h: int, w: int) -> tuple[int, int, int, int]:
    """``(BLOCK_H, BLOCK_W, n_hb, n_wb)``: tiles of at most ``_BLOCK`` pixels, as wide as the row allows."""
    block_w = min(next_pow2(w), _BLOCK_W_MAX)
    block_h = min(next_pow2(h), max(1, _BLOCK // block_w))
    return block_h, block_w, triton.cdiv(h, block_h), triton.cdiv(w, block_w)


def _index64(*extents: int) -> bool:
    """Whether an in-sample offset can reach 2**31 (then the kernels index in int64)."""
    return max(extents, default=0) >= 2**31


def _extent(t: torch.Tensor) -> int:
    """The largest in-sample element offset of a ``(B, 1, H, W)`` tensor (strides may be 0 or huge)."""
    return (t.shape[2] - 1) * abs(t.stride(2)) + (t.shape[3] - 1) * abs(t.stride(3)) if t.numel() else 0


def _out_dtype(fake: torch.Tensor, real: torch.Tensor | None) -> torch.dtype:
    return fake.dtype if real is None else torch.promote_types(fake.dtype, real.dtype)


def _scat_fwd(
    fake: torch.Tensor,
    real: torch.Tensor | None,
    hole: torch.Tensor | None,
    kind: str,
    target: str,
    resample: str,
    reduction: str,
    grad_fake: bool,
    grad_real: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss (scalar or ``(B, 1, h, w)`` map) and the saved derivatives ``dL/dz`` (empty when not needed).

    ``hole`` is ``(B, 1, k_h h, k_w w)`` (float, or bool viewed as uint8); ``None`` for ``gen_all``.
    """
    B, _, h, w = fake.shape
    n_pix = B * h * w
    out_dtype = _out_dtype(fake, real)
    dev = fake.device
    block_h, block_w, n_hb, n_wb = _tiling(h, w)
    n_prog = B * n_hb * n_wb if n_pix > 0 else 0
    write_map = reduction == "none"
    loss = torch.empty((B, 1, h, w) if write_map else (), dtype=out_dtype, device=dev)
    part = torch.empty((n_prog,), dtype=acc_dtype(out_dtype), device=dev)
    gf = torch.empty((B, 1, h, w) if grad_fake else (0,), dtype=fake.dtype, device=dev)
    zr = fake if real is None else real  # a valid pointer when there are no reals (never read)
    gr = torch.empty((B, 1, h, w) if grad_real and real is not None else (0,), dtype=zr.dtype, device=dev)
    hp = fake if hole is None else hole
    kh, kw = (1, 1) if hole is None or n_pix == 0 else (hole.shape[2] // h, hole.shape[3] // w)
    rs = 0 if kh * kw == 1 else RESAMPLES[resample]
    f64 = acc_dtype(out_dtype) == torch.float64
    index64 = _index64(h * w, _extent(fake), _extent(zr), _extent(hp))
    if n_prog > 0:
        launch(
            _scat_fwd_kernel, (B * n_hb, n_wb),
            fake, zr, hp, loss, part, gf, gr,
            h, w, n_hb,
            fake.stride(0), fake.stride(2), fake.stride(3),
            zr.stride(0), zr.stride(2), zr.stride(3),
            hp.stride(0), hp.stride(2), hp.stride(3),
            kh, kw, 1.0 / (kh * kw),
            KIND=KINDS[kind], TARGET=TARGETS[target], RESAMPLE=rs,
            WRITE_MAP=write_map, WRITE_PART=not write_map, GRAD_F=grad_fake, GRAD_R=grad_real and real is not None,
            F64=f64, INDEX64=index64, BLOCK_H=block_h, BLOCK_W=block_w,
        )  # fmt: skip
    if not write_map:
        scale = 1.0 / n_pix if reduction == "mean" and n_pix > 0 else 1.0
        if n_pix == 0 and reduction == "mean":
            scale = float("nan")  # mean of nothing, as torch
        launch(_sum_kernel, (1,), part, loss, n_prog, scale, F64=f64, BLOCK=_BLOCK_SUM)
    return loss, gf, gr


def _scat_fwd_fake(fake, real, hole, kind, target, resample, reduction, grad_fake, grad_real):  # type: ignore[no-untyped-def]
    B, _, h, w = fake.shape
    loss = fake.new_empty((B, 1, h, w) if reduction == "none" else (), dtype=_out_dtype(fake, real))
    gf = fake.new_empty((B, 1, h, w) if grad_fake else (0,))
    gr = (fake if real is None else real).new_empty((B, 1, h, w) if grad_real and real is not None else (0,))
    return loss, gf, gr


def _scat_bwd(grad: torch.Tensor, d: torch.Tensor, scale: float) -> torch.Tensor:
    """``grad * scale * d`` for a saved ``(B, 1, h, w)`` derivative ``d``; ``grad`` is 0-d or ``(B, 1, h, w)``."""
    B, _, h, w = d.shape
    out = torch.empty_like(d, memory_format=torch.contiguous_format)
    n_pix = d.numel()
    if grad.dim() == 0:
        sb = sh = sw = 0
    else:
        sb, sh, sw = grad.stride(0), grad.stride(2), grad.stride(3)
    f64 = acc_dtype(d.dtype, grad.dtype) == torch.float64
    block_h, block_w, n_hb, n_wb = _tiling(h, w)
    index64 = _index64(h * w, 0 if grad.dim() == 0 else _extent(grad))
    if n_pix > 0:
        launch(
            _scale_grad_kernel, (B * n_hb, n_wb),
            grad, d, out, h, w, n_hb, sb, sh, sw, scale,
            F64=f64, INDEX64=index64, BLOCK_H=block_h, BLOCK_W=block_w,
        )  # fmt: skip
    return out


def _scat_bwd_fake(grad: torch.Tensor, d: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.empty_like(d, memory_format=torch.contiguous_format)


scat_fwd = register_op("scat_fwd", _scat_fwd, _scat_fwd_fake)
scat_bwd = register_op("scat_bwd", _scat_bwd, _scat_bwd_fake)


def _setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def]
    fake, real, hole, kind, target, resample, reduction, grad_fake, grad_real = inputs
    _, gf, gr = output
    ctx.save_for_backward(gf, gr)
    ctx.grad_fake, ctx.grad_real = grad_fake, grad_real and real is not None
    n_pix = fake.numel()
    ctx.scale = 1.0 / n_pix if reduction == "mean" and n_pix > 0 else 1.0


def _backward(ctx, grad_loss, _grad_gf, _grad_gr):  # type: ignore[no-untyped-def]
    gf, gr = ctx.saved_tensors
    d_fake = scat_bwd(grad_loss, gf, ctx.scale) if ctx.grad_fake and ctx.needs_input_grad[0] else None
    d_real = scat_bwd(grad_loss, gr, ctx.scale) if ctx.grad_real and ctx.needs_input_grad[1] else None
    # the hole mask is data: no gradient flows to it (see scatloss.ops.scat)
    return d_fake, d_real, None, None, None, None, None, None, None


scat_fwd.register_autograd(_backward, setup_context=_setup_context)
