r"""Triton kernels and custom ops for InfoNCE (imported lazily by :mod:`scatloss.ops.infonce`).

Per anchor row ``b`` (``a = anchor[b]``, ``p = positive[b]``, ``n_j = negatives[b, j]``, ``t`` the temperature):

.. math::
    \hat x = x / \max(\lVert x\rVert, \epsilon),\quad c_0 = \hat a\cdot\hat p,\quad c_j = \hat a\cdot\hat n_j,\quad
    s = c / t,\quad \ell = \operatorname{lse}(s_0, s_1, \dots, s_M) - s_0

(``F.normalize`` with ``eps = 1e-12``; ``normalize=False`` sets ``\hat x = x``). Each norm is taken of
``x / max|x|`` and scaled back (:func:`_inv_norm_vec`), so huge or tiny rows do not overflow or underflow.
Nothing normalised is ever written: a row's dot products are taken with the *raw* row and scaled by its inverse norm,
:math:`c_j = (\hat a\cdot n_j)/\max(\lVert n_j\rVert, \epsilon)`, both sums coming from the same load.

Forward. Grid ``(B, S)``: program ``(b, s)`` streams a contiguous run of ``BLOCK_M``-row tiles of
``negatives[b]`` and keeps an online (max, sum-exp) pair; split 0 also takes the positive. A
one-program kernel merges the ``S`` pairs of every row in a fixed order into ``lse_b``, the loss and
its reduction (deterministic, no atomics). ``S > 1`` only when ``B`` alone cannot fill the GPU.
Saved for backward: the inputs (references, not copies) and ``lse`` (``B`` floats). Norms are
recomputed in the backward from the rows it loads anyway: a length-``D`` reduction on data already in
registers, which also keeps ``F.normalize``'s clamp (:math:`\lVert x\rVert < \epsilon`) exact.

Backward. With upstream ``g_b`` (times ``1/B`` for ``mean``), :math:`\pi_j = e^{s_j - \mathrm{lse}}`
(softmax) and :math:`\gamma = g_b / t`:

.. math::
    \frac{\partial\ell}{\partial s_0} = \pi_0 - 1,\quad \frac{\partial\ell}{\partial s_j} = \pi_j
    \;\Rightarrow\;
    G_a := \frac{\partial\ell}{\partial\hat a} = \gamma\Big[(\pi_0 - 1)\,\hat p + \sum_j \pi_j\,\hat n_j\Big],\quad
    \frac{\partial\ell}{\partial\hat p} = \gamma(\pi_0 - 1)\,\hat a,\quad
    \frac{\partial\ell}{\partial\hat n_j} = \gamma\,\pi_j\,\hat a.

Through the normalisation, :math:`d(x/\lVert x\rVert) = (g - \hat x(\hat x\cdot g))/\lVert x\rVert`;
with the clamp, :math:`\partial\ell/\partial x = r\,(g - \chi\,\hat x(\hat x\cdot g))`,
:math:`r = 1/\max(\lVert x\rVert,\epsilon)`, :math:`\chi = [\lVert x\rVert \ge \epsilon]` (``clamp_min``'s
backward passes at equality). Since :math:`\hat n_j\cdot\hat a = c_j`:

.. math::
    \frac{\partial\ell}{\partial n_j} = \gamma\,\pi_j\,r_j\,(\hat a - \chi_j\,c_j\,r_j\,n_j),\qquad
    \frac{\partial\ell}{\partial p} = \gamma(\pi_0 - 1)\,r_p\,(\hat a - \chi_p\,c_0\,r_p\,p),\qquad
    \frac{\partial\ell}{\partial a} = r_a\,(G_a - \chi_a\,\hat a(\hat a\cdot G_a)).

Grid ``(B, S)`` again: each program re-reads its tiles once, writes ``dn_j`` (only if negatives need a
gradient) and its share of :math:`G_a` to a ``(B, S, D)`` buffer; a ``(B,)`` kernel sums the shares
in order and applies the anchor's normalisation. Only inputs that require grad get a gradient
written (the semantic loss's positives and negatives are often computed without autograd).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._triton_common import launch, next_pow2, register_op, target_programs, to_acc

__all__ = ["infonce_bwd", "infonce_fwd"]

EPS = 1e-12  # F.normalize's default
_TILE_ELEMS = 4096  # elements of one (BLOCK_M, BLOCK_D) negatives tile held in registers


def _tiles(M: int, D: int) -> tuple[int, int]:
    block_d = next_pow2(D)
    block_m = max(1, min(next_pow2(M), _TILE_ELEMS // block_d))
    return block_d, block_m


def _splits(B: int, n_tiles: int, device: torch.device) -> tuple[int, int]:
    """(number of splits S, tiles per split) so that ``B * S`` programs fill the device, none empty."""
    want = max(1, min(n_tiles, triton.cdiv(target_programs(device), max(B, 1))))
    per = triton.cdiv(n_tiles, want)
    return triton.cdiv(n_tiles, per), per


def _num_warps(elems: int) -> int:
    """Warps for a program holding ``elems``-element register tiles: at most 8 fp32 values per thread per tile up
    to 4096 elements (a full ``(BLOCK_M, BLOCK_D)`` tile with 4 warps took up to 255 registers per thread on
    sm_90, see benchmarks/triton_resources.py), 16 warps beyond."""
    return 4 if elems <= 1024 else (8 if elems <= 4096 else 16)


@triton.jit
def _row(ptr, b, stride_b, stride_d, offs_d, mask_d, F64: tl.constexpr):
    return to_acc(tl.load(ptr + b * stride_b + offs_d * stride_d, mask=mask_d, other=0.0), F64)


@triton.jit
def _inv_norm_vec(x, NORMALIZE: tl.constexpr, EPS_: tl.constexpr):
    """(1 / max(||x||, eps), [||x|| >= eps]) of a row ``x``; (1, 0) without normalisation.

    The norm is taken of ``x / max|x|`` and scaled back, so it neither overflows (entries above ~1.8e19 in
    float32, whose squares are infinite) nor underflows."""
    if NORMALIZE:
        amax = tl.max(tl.abs(x), axis=0)
        sc = tl.where(amax > 0, amax, 1.0)
        y = x * (1.0 / sc)
        nrm = tl.sqrt(tl.sum(y * y, axis=0)) * sc
        return 1.0 / tl.maximum(nrm, EPS_), tl.where(nrm >= EPS_, 1.0, 0.0)
    else:
        z = tl.sum(x * 0.0, axis=0)
        return z + 1.0, z


@triton.jit
def _inv_norm_rows(x, NORMALIZE: tl.constexpr, EPS_: tl.constexpr):
    """:func:`_inv_norm_vec` of each row of a ``(BLOCK_M, BLOCK_D)`` tile."""
    if NORMALIZE:
        amax = tl.max(tl.abs(x), axis=1)
        sc = tl.where(amax > 0, amax, 1.0)
        y = x * (1.0 / sc)[:, None]
        nrm = tl.sqrt(tl.sum(y * y, axis=1)) * sc
        return 1.0 / tl.maximum(nrm, EPS_), tl.where(nrm >= EPS_, 1.0, 0.0)
    else:
        z = tl.sum(x * 0.0, axis=1)
        return z + 1.0, z


# fmt: off
@triton.jit
def _fwd_partial_kernel(
    a_ptr, p_ptr, n_ptr, ml_ptr, s0_ptr,
    B, M, D, tiles_per_split, n_splits, inv_t,
    sa_b, sa_d, sp_b, sp_d, sn_b, sn_m, sn_d,
    NORMALIZE: tl.constexpr, EPS_: tl.constexpr, F64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # fmt: on
    b = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    a = _row(a_ptr, b, sa_b, sa_d, offs_d, mask_d, F64)
    inv_a, _keep_a = _inv_norm_vec(a, NORMALIZE, EPS_)
    a_hat = a * inv_a

    # the positive, in split 0 only (a masked load costs no traffic elsewhere)
    first = s == 0
    mask_p = offs_d < tl.where(first, D, 0)
    p = _row(p_ptr, b, sp_b, sp_d, offs_d, mask_p, F64)
    inv_p, _keep_p = _inv_norm_vec(p, NORMALIZE, EPS_)
    s0 = tl.sum(a_hat * p, axis=0) * inv_p * inv_t
    m_i = tl.where(first, s0, float("-inf"))
    l_i = to_acc(tl.where(first, 1.0, 0.0), F64)

    offs_m = tl.arange(0, BLOCK_M)
    row0 = s * tiles_per_split * BLOCK_M
    for t in range(0, tiles_per_split):
        rows = row0 + t * BLOCK_M + offs_m
        mask_m = rows < M
        ptrs = n_ptr + b * sn_b + rows.to(tl.int64)[:, None] * sn_m + offs_d[None, :] * sn_d
        n = to_acc(tl.load(ptrs, mask=mask_m[:, None] & mask_d[None, :], other=0.0), F64)
        inv_n, _keep_n = _inv_norm_rows(n, NORMALIZE, EPS_)
        sj = tl.where(mask_m, tl.sum(n * a_hat[None, :], axis=1) * inv_n * inv_t, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(sj, axis=0))
        safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # an all-masked history stays at (-inf, 0)
        l_i = l_i * tl.exp(m_i - safe) + tl.sum(tl.exp(sj - safe), axis=0)
        m_i = m_new

    tl.store(ml_ptr + b * n_splits + s, m_i)
    tl.store(ml_ptr + B * n_splits + b * n_splits + s, l_i)
    tl.store(s0_ptr + b, s0, mask=first)


# fmt: off
@triton.jit
def _fwd_combine_kernel(
    ml_ptr, s0_ptr, lse_ptr, loss_ptr, B, n_splits, scale,
    WRITE_MAP: tl.constexpr, F64: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr,
):
    # fmt: on
    """Merge the splits' (max, sum-exp) pairs into lse and the loss; reduce over B in a fixed order."""
    offs_b = tl.arange(0, BLOCK_B)
    offs_s = tl.arange(0, BLOCK_S)
    total = to_acc(tl.zeros([BLOCK_B], dtype=tl.float32), F64)
    for start in range(0, B, BLOCK_B):
        rows = start + offs_b
        mask_b = rows < B
        mask = mask_b[:, None] & (offs_s[None, :] < n_splits)
        idx = rows[:, None] * n_splits + offs_s[None, :]
        m = tl.load(ml_ptr + idx, mask=mask, other=float("-inf"))
        sumexp = tl.load(ml_ptr + B * n_splits + idx, mask=mask, other=0.0)
        m_max = tl.max(m, axis=1)
        safe = tl.where(m_max == float("-inf"), 0.0, m_max)
        lse = safe + tl.log(tl.where(mask_b, tl.sum(sumexp * tl.exp(m - safe[:, None]), axis=1), 1.0))
        loss = lse - tl.load(s0_ptr + rows, mask=mask_b, other=0.0)
        tl.store(lse_ptr + rows, lse, mask=mask_b)
        if WRITE_MAP:
            tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=mask_b)
        else:
            total += tl.where(mask_b, loss, 0.0)
    if not WRITE_MAP:
        tl.store(loss_ptr, (tl.sum(total, axis=0) * scale).to(loss_ptr.dtype.element_ty))


# fmt: off
@triton.jit
def _bwd_kernel(
    g_ptr, a_ptr, p_ptr, n_ptr, lse_ptr, ga_part_ptr, dp_ptr, dn_ptr,
    M, D, tiles_per_split, n_splits, inv_t, scale,
    sg_b, sa_b, sa_d, sp_b, sp_d, sn_b, sn_m, sn_d,
    NORMALIZE: tl.constexpr, EPS_: tl.constexpr, F64: tl.constexpr,
    NEED_A: tl.constexpr, NEED_P: tl.constexpr, NEED_N: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # fmt: on
    b = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    a = _row(a_ptr, b, sa_b, sa_d, offs_d, mask_d, F64)
    inv_a, _keep_a = _inv_norm_vec(a, NORMALIZE, EPS_)
    a_hat = a * inv_a
    lse = tl.load(lse_ptr + b)
    gamma = to_acc(tl.load(g_ptr + b * sg_b), F64) * scale * inv_t  # g_b / t

    # positive (split 0): pi_0 - 1 enters G_a, and dl/dp
    first = s == 0
    mask_p = offs_d < tl.where(first, D, 0)
    p = _row(p_ptr, b, sp_b, sp_d, offs_d, mask_p, F64)
    inv_p, keep_p = _inv_norm_vec(p, NORMALIZE, EPS_)
    c0 = tl.sum(a_hat * p, axis=0) * inv_p
    w0 = tl.where(first, tl.exp(c0 * inv_t - lse) - 1.0, 0.0)  # pi_0 - 1
    acc = (w0 * inv_p) * p  # running (1/gamma) G_a
    if NEED_P:
        dp = gamma * w0 * inv_p * (a_hat - (keep_p * c0 * inv_p) * p)
        tl.store(dp_ptr + b * D + offs_d, dp.to(dp_ptr.dtype.element_ty), mask=mask_p)

    if NEED_A or NEED_N:
        offs_m = tl.arange(0, BLOCK_M)
        row0 = s * tiles_per_split * BLOCK_M
        for t in range(0, tiles_per_split):
            rows = row0 + t * BLOCK_M + offs_m
            mask_m = rows < M
            mask = mask_m[:, None] & mask_d[None, :]
            rows64 = rows.to(tl.int64)
            ptrs = n_ptr + b * sn_b + rows64[:, None] * sn_m + offs_d[None, :] * sn_d
            n = to_acc(tl.load(ptrs, mask=mask, other=0.0), F64)
            inv_n, keep_n = _inv_norm_rows(n, NORMALIZE, EPS_)
            c = tl.sum(n * a_hat[None, :], axis=1) * inv_n
            w = tl.where(mask_m, tl.exp(c * inv_t - lse), 0.0) * inv_n  # pi_j * r_j
            if NEED_A:
                acc += tl.sum(w[:, None] * n, axis=0)
            if NEED_N:
                dn = (gamma * w)[:, None] * (a_hat[None, :] - (keep_n * c * inv_n)[:, None] * n)
                out = dn_ptr + (b * M + rows64)[:, None] * D + offs_d[None, :]
                tl.store(out, dn.to(dn_ptr.dtype.element_ty), mask=mask)
    if NEED_A:
        tl.store(ga_part_ptr + (b * n_splits + s) * D + offs_d, gamma * acc, mask=mask_d)


# fmt: off
@triton.jit
def _bwd_anchor_kernel(
    ga_part_ptr, a_ptr, da_ptr, D, n_splits, sa_b, sa_d,
    NORMALIZE: tl.constexpr, EPS_: tl.constexpr, F64: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # fmt: on
    """dl/da = r_a (G_a - chi_a a_hat (a_hat . G_a)), G_a summed over the splits in order."""
    b = tl.program_id(0).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    g = tl.load(ga_part_ptr + b * n_splits * D + offs_d, mask=mask_d, other=0.0)
    for s in range(1, n_splits):
        g += tl.load(ga_part_ptr + (b * n_splits + s) * D + offs_d, mask=mask_d, other=0.0)
    a = _row(a_ptr, b, sa_b, sa_d, offs_d, mask_d, F64)
    inv_a, keep_a = _inv_norm_vec(a, NORMALIZE, EPS_)
    a_hat = a * inv_a
    da = inv_a * (g - (keep_a * tl.sum(a_hat * g, axis=0)) * a_hat)
    tl.store(da_ptr + b * D + offs_d, da.to(da_ptr.dtype.element_ty), mask=mask_d)


# ------------------------------------------------------------------------------------------------
# ops
# ------------------------------------------------------------------------------------------------


def _compute_dtype(anchor: torch.Tensor) -> torch.dtype:
    return torch.promote_types(anchor.dtype, torch.float32)  # as the reference: at least float32


def _infonce_fwd(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    normalize: bool,
    reduction: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss (scalar or ``(B,)``) and ``lse`` (``(B,)``, saved for backward)."""
    B, M, D = negatives.shape
    cd = _compute_dtype(anchor)
    dev = anchor.device
    block_d, block_m = _tiles(M, D)
    n_splits, per = _splits(B, triton.cdiv(M, block_m), dev)
    ml = torch.empty((2, B, n_splits), dtype=cd, device=dev)
    s0 = torch.empty((B,), dtype=cd, device=dev)
    lse = torch.empty((B,), dtype=cd, device=dev)
    write_map = reduction == "none"
    loss = torch.empty((B,) if write_map else (), dtype=cd, device=dev)
    f64 = cd == torch.float64
    if B > 0:
        launch(
            _fwd_partial_kernel, (B, n_splits),
            anchor, positive, negatives, ml, s0,
            B, M, D, per, n_splits, 1.0 / temperature,
            anchor.stride(0), anchor.stride(1), positive.stride(0), positive.stride(1),
            negatives.stride(0), negatives.stride(1), negatives.stride(2),
            NORMALIZE=normalize, EPS_=EPS, F64=f64, BLOCK_M=block_m, BLOCK_D=block_d,
            num_warps=_num_warps(block_m * block_d),
        )  # fmt: skip
    block_s = next_pow2(n_splits)
    scale = (1.0 / B if B > 0 else float("nan")) if reduction == "mean" else 1.0
    launch(
        _fwd_combine_kernel, (1,),
        ml, s0, lse, loss, B, n_splits, scale,
        WRITE_MAP=write_map, F64=f64, BLOCK_B=max(1, min(next_pow2(B), 4096 // block_s)), BLOCK_S=block_s,
    )  # fmt: skip
    return loss, lse


def _infonce_fwd_fake(anchor, positive, negatives, temperature, normalize, reduction):  # type: ignore[no-untyped-def]
    B = negatives.shape[0]
    cd = _compute_dtype(anchor)
    return anchor.new_empty((B,) if reduction == "none" else (), dtype=cd), anchor.new_empty((B,), dtype=cd)


def _infonce_bwd(
    grad: torch.Tensor,
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    lse: torch.Tensor,
    temperature: float,
    normalize: bool,
    scale: float,
    need_anchor: bool,
    need_positive: bool,
    need_negatives: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for (anchor, positive, negatives); an input that needs none gets an empty tensor."""
    B, M, D = negatives.shape
    dev = anchor.device
    cd = lse.dtype
    block_d, block_m = _tiles(M, D)
    n_tiles = triton.cdiv(M, block_m) if (need_anchor or need_negatives) else 1
    n_splits, per = _splits(B, n_tiles, dev)
    da = torch.empty((B, D) if need_anchor else (0,), dtype=anchor.dtype, device=dev)
    dp = torch.empty((B, D) if need_positive else (0,), dtype=positive.dtype, device=dev)
    dn = torch.empty((B, M, D) if need_negatives else (0,), dtype=negatives.dtype, device=dev)
    part = torch.empty((B, n_splits, D) if need_anchor else (0,), dtype=cd, device=dev)
    f64 = cd == torch.float64
    if B > 0 and (need_anchor or need_positive or need_negatives):
        launch(
            _bwd_kernel, (B, n_splits),
            grad, anchor, positive, negatives, lse, part, dp, dn,
            M, D, per, n_splits, 1.0 / temperature, scale,
            grad.stride(0) if grad.dim() else 0,
            anchor.stride(0), anchor.stride(1), positive.stride(0), positive.stride(1),
            negatives.stride(0), negatives.stride(1), negatives.stride(2),
            NORMALIZE=normalize, EPS_=EPS, F64=f64,
            NEED_A=need_anchor, NEED_P=need_positive, NEED_N=need_negatives,
            BLOCK_M=block_m, BLOCK_D=block_d, num_warps=_num_warps(block_m * block_d),
        )  # fmt: skip
        if need_anchor:
            launch(
                _bwd_anchor_kernel, (B,),
                part, anchor, da, D, n_splits, anchor.stride(0), anchor.stride(1),
                NORMALIZE=normalize, EPS_=EPS, F64=f64, BLOCK_D=block_d, num_warps=_num_warps(block_d),
            )  # fmt: skip
    return da, dp, dn


def _infonce_bwd_fake(grad, anchor, positive, negatives, lse, temperature, normalize, scale, need_a, need_p, need_n):  # type: ignore[no-untyped-def]
    B, M, D = negatives.shape
    return (
        anchor.new_empty((B, D) if need_a else (0,)),
        positive.new_empty((B, D) if need_p else (0,)),
        negatives.new_empty((B, M, D) if need_n else (0,)),
    )


infonce_fwd = register_op("infonce_fwd", _infonce_fwd, _infonce_fwd_fake)
infonce_bwd = register_op("infonce_bwd", _infonce_bwd, _infonce_bwd_fake)


def _setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def]
    anchor, positive, negatives, temperature, normalize, reduction = inputs
    _, lse = output
    ctx.save_for_backward(anchor, positive, negatives, lse)
    ctx.temperature, ctx.normalize = temperature, normalize
    B = negatives.shape[0]
    ctx.scale = 1.0 / B if reduction == "mean" and B > 0 else 1.0


def _backward(ctx, grad_loss, _grad_lse):  # type: ignore[no-untyped-def]
    anchor, positive, negatives, lse = ctx.saved_tensors
    need_a, need_p, need_n = ctx.needs_input_grad[:3]
    da, dp, dn = infonce_bwd(
        grad_loss, anchor, positive, negatives, lse, ctx.temperature, ctx.normalize, ctx.scale, need_a, need_p, need_n
    )
    return (da if need_a else None), (dp if need_p else None), (dn if need_n else None), None, None, None


infonce_fwd.register_autograd(_backward, setup_context=_setup_context)
