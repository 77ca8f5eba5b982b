"""The memory-lean autograd functions (scatloss.ops.torch_fused) equal the equation-form reference.

They are the default path wherever the Triton kernels do not run (every CPU tensor), so they are held to
the reference in float64 (values, gradients of every input including the hole mask, gradcheck), on odd
shapes, and in reduced precision against a float32 truth.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd import gradcheck

from scatloss import reference as R
from scatloss.ops import torch_fused as TF
from scatloss.utils import peak_memory_bytes

KINDS = ("hinge", "bce", "ls")
REDUCTIONS = ("mean", "sum", "none")


def _maps(seed: int, b: int = 2, h: int = 5, w: int = 7, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    zf = (torch.randn(b, 1, h, w, generator=g) * 2).to(dtype).requires_grad_()
    zr = (torch.randn(b, 1, h, w, generator=g) * 2).to(dtype).requires_grad_()
    hole = torch.rand(b, 1, h, w, generator=g).to(dtype).requires_grad_()
    return zf, zr, hole


def _grads(out: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    upstream = torch.randn_like(out) if out.dim() else torch.tensor(1.7, dtype=out.dtype)
    return torch.autograd.grad(out, inputs, upstream)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_segmenter_equals_reference_with_every_gradient(kind: str, reduction: str) -> None:
    zf, zr, hole = _maps(0)
    ours, ref = TF.scat_segmenter(zf, zr, hole, kind, reduction), R.scat_segmenter_loss(zf, zr, hole, kind, reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.manual_seed(1)
    g_ours = _grads(ours, (zf, zr, hole))
    torch.manual_seed(1)
    g_ref = _grads(ref, (zf, zr, hole))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda x, y, m: TF.scat_segmenter(x, y, m, kind, reduction), (zf, zr, hole))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", (True, False))
def test_generator_equals_reference_with_every_gradient(kind: str, reduction: str, weighted: bool) -> None:
    zf, _, hole = _maps(2)
    w = hole if weighted else None
    ours, ref = TF.scat_generator(zf, w, kind, reduction), R.scat_generator_loss(zf, w, kind, reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    inputs = (zf, hole) if weighted else (zf,)
    if weighted:
        assert gradcheck(lambda x, m: TF.scat_generator(x, m, kind, reduction), inputs)
    else:
        assert gradcheck(lambda x: TF.scat_generator(x, None, kind, reduction), inputs)


@pytest.mark.parametrize("normalize", (True, False))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", (0.07, 1.0))
def test_infonce_equals_reference_with_every_gradient(normalize: bool, reduction: str, temperature: float) -> None:
    g = torch.Generator().manual_seed(3)
    a, p = torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64)
    n = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (a, p, n))
    ours = TF.infonce(*inputs, temperature, normalize, reduction)
    ref = R.semantic_contrastive_loss(*inputs, temperature, normalize, reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad(ours.sum(), inputs)
    g_ref = torch.autograd.grad(ref.sum(), inputs)
    for x, y in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)
    assert gradcheck(lambda x, y, z: TF.infonce(x, y, z, temperature, normalize, reduction), inputs)


def test_infonce_zero_vectors_match_f_normalize_gradients() -> None:
    """Where the norm is clamped (a zero vector) the gradient is g / eps, as through F.normalize."""
    g = torch.Generator().manual_seed(4)
    a, p = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g, dtype=torch.float64)
    n = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    a[0], p[1], n[2, 1] = 0.0, 0.0, 0.0
    inputs = tuple(t.requires_grad_() for t in (a, p, n))
    ours = TF.infonce(*inputs, 0.5, True, "mean")
    ref = R.semantic_contrastive_loss(*inputs, 0.5, True, "mean")
    torch.testing.assert_close(ours, ref)
    for x, y in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(ref, inputs), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9 * y.abs().max().item())


@given(
    b=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**16),
)
def test_segmenter_equals_reference_on_odd_shapes(b: int, h: int, w: int, kind: str, seed: int) -> None:
    zf, zr, hole = _maps(seed, b, h, w)
    ours, ref = TF.scat_segmenter(zf, zr, hole, kind, "mean"), R.scat_segmenter_loss(zf, zr, hole, kind, "mean")
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for x, y in zip(torch.autograd.grad(ours, (zf, zr, hole)), torch.autograd.grad(ref, (zf, zr, hole)), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
@pytest.mark.parametrize("kind", KINDS)
def test_reduced_precision_is_close_to_a_float32_truth(dtype: torch.dtype, kind: str) -> None:
    zf, zr, hole = (t.detach() for t in _maps(5, 2, 16, 16, torch.float32))
    low = [t.to(dtype).requires_grad_() for t in (zf, zr)]
    truth_in = [t.to(dtype).float().requires_grad_() for t in (zf, zr)]
    ours = TF.scat_segmenter(low[0], low[1], hole.to(dtype), kind, "mean")
    truth = R.scat_segmenter_loss(truth_in[0], truth_in[1], hole.to(dtype).float(), kind, "mean")
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    assert ours.dtype == dtype
    torch.testing.assert_close(ours.float(), truth, rtol=tol, atol=tol)
    for x, y in zip(torch.autograd.grad(ours, low), torch.autograd.grad(truth, truth_in), strict=True):
        assert x.dtype == dtype
        torch.testing.assert_close(x.float(), y, rtol=tol, atol=tol * y.abs().max().item())


def test_forward_only_needs_no_graph_and_leaves_inputs_untouched() -> None:
    zf, zr, hole = (t.detach() for t in _maps(6))
    before = [t.clone() for t in (zf, zr, hole)]
    with torch.no_grad():
        out = TF.scat_segmenter(zf, zr, hole, "hinge", "mean")
        TF.scat_generator(zf, hole, "bce", "none")
        TF.infonce(zf.flatten(1), zr.flatten(1), zf.flatten(1)[:, None], 0.07, True, "mean")
    assert out.grad_fn is None
    for a, b in zip((zf, zr, hole), before, strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# generator from the full-resolution mask: the resampled buffer becomes the gradient
# ----------------------------------------------------------------------------------------------

_MASK_CASES = [
    # (mask dtype, mask (H, W), resample): fresh buffers (pooled, converted) and views of the caller's mask
    (torch.float64, (10, 21), "area"),
    (torch.float64, (10, 21), "max"),
    (torch.float64, (10, 21), "nearest"),  # a strided view of the caller's mask: must not be written
    (torch.float64, (5, 7), "area"),  # same size: the caller's mask itself
    (torch.bool, (10, 14), "nearest"),
    (torch.bool, (10, 14), "area"),
    (torch.float32, (5, 7), "area"),  # same size, other dtype: a converted copy
    (torch.float64, (8, 9), "area"),  # not an integer multiple: adaptive pooling
]


@pytest.mark.parametrize("op", ("generator", "segmenter"))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("mask_dtype", "mask_hw", "resample"), _MASK_CASES)
@pytest.mark.parametrize("chunk", (None, 35, 70))  # per-pixel temporaries for the whole batch, 1 or 2 samples
def test_from_hole_paths_match_reference_and_survive_a_second_backward(
    op: str,
    kind: str,
    reduction: str,
    mask_dtype: torch.dtype,
    mask_hw: tuple[int, int],
    resample: str,
    chunk: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The mask resampled inside the autograd function (whose buffer backward reuses for a gradient) against the
    reference on the mask resampled outside, for every mask kind: fresh buffers and views of the caller's mask."""
    if chunk is not None:
        monkeypatch.setattr(TF, "_CHUNK_ELEMS", chunk)
    g = torch.Generator().manual_seed(11)
    logits = [(torch.randn(3, 1, 5, 7, generator=g, dtype=torch.float64) * 2).requires_grad_() for _ in range(2)]
    hole = torch.rand(3, 1, *mask_hw, generator=g, dtype=torch.float64)
    hole = hole > 0.5 if mask_dtype == torch.bool else hole.to(mask_dtype)
    before = hole.clone()
    if op == "generator":
        logits = logits[:1]
        ours = TF.scat_generator_hole(logits[0], hole, resample, kind, reduction)
        ref = R.scat_generator_loss(logits[0], TF.hole_at(hole, logits[0], resample), kind, reduction)
    else:
        ours = TF.scat_segmenter_hole(*logits, hole, resample, kind, reduction)
        ref = R.scat_segmenter_loss(*logits, TF.hole_at(hole, logits[0], resample), kind, reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(ours) if ours.dim() else torch.tensor(1.7, dtype=ours.dtype)
    g_ref = torch.autograd.grad(ref, logits, upstream)
    # twice through the same graph: the first backward consumes the resampled buffer, the second rebuilds it
    g1 = torch.autograd.grad(ours, logits, upstream, retain_graph=True)
    g2 = torch.autograd.grad(ours, logits, upstream)
    for a, b in zip((*g1, *g2), (*g_ref, *g_ref), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.equal(hole, before), "the caller's mask was written to"


def test_generator_from_hole_gradcheck_and_accumulation() -> None:
    g = torch.Generator().manual_seed(12)
    z = torch.randn(2, 1, 3, 4, generator=g, dtype=torch.float64).requires_grad_()
    hole = torch.rand(2, 1, 6, 8, generator=g, dtype=torch.float64)
    for kind in KINDS:
        assert gradcheck(lambda x, k=kind: TF.scat_generator_hole(x, hole, "area", k, "mean"), (z,))
    # .backward() twice accumulates into .grad (AccumulateGrad may keep the first gradient's buffer)
    z.grad = None
    TF.scat_generator_hole(z, hole, "area", "hinge", "sum").backward()
    TF.scat_generator_hole(z, hole, "area", "hinge", "sum").backward()
    torch.testing.assert_close(z.grad, -2 * F_area(hole, z))


def F_area(hole: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(hole, (hole.shape[-2] // like.shape[-2], hole.shape[-1] // like.shape[-1]))


def test_from_hole_paths_refuse_a_mask_that_requires_grad() -> None:
    z, zr, hole = _maps(13)
    with pytest.raises(ValueError, match="hole"):
        TF.scat_generator_hole(z, hole, "area", "hinge", "mean")
    with pytest.raises(ValueError, match="hole"):
        TF.scat_segmenter_hole(z, zr, hole, "area", "hinge", "mean")


def test_segmenter_from_hole_gradcheck() -> None:
    g = torch.Generator().manual_seed(15)
    zf = torch.randn(2, 1, 3, 4, generator=g, dtype=torch.float64).requires_grad_()
    zr = torch.randn(2, 1, 3, 4, generator=g, dtype=torch.float64).requires_grad_()
    hole = torch.rand(2, 1, 6, 8, generator=g, dtype=torch.float64)
    for kind in KINDS:
        assert gradcheck(lambda a, b, k=kind: TF.scat_segmenter_hole(a, b, hole, "area", k, "mean"), (zf, zr))


def test_generator_from_hole_keeps_one_logit_map_alive() -> None:
    """The design property behind the memory claim, counted in bytes (not timed): during forward + backward of
    the hinge term on a mask 4x the logits' size, at most one logit-sized float map is alive at a time beyond the
    inputs (the resampled mask, which then becomes the gradient); the reference form needs three."""
    z = torch.randn(4, 1, 32, 32).requires_grad_()
    hole = (torch.rand(4, 1, 128, 128) > 0.5).float()
    map_bytes = z.numel() * z.element_size()

    def ours() -> None:
        TF.scat_generator_hole(z, hole, "area", "hinge", "mean").backward()
        z.grad = None

    def reference() -> None:
        R.scat_generator_loss(z, TF.hole_at(hole, z, "area"), "hinge", "mean").backward()
        z.grad = None

    ours(), reference()  # warm-up
    assert peak_memory_bytes(ours) <= map_bytes + 4096
    assert peak_memory_bytes(reference) >= 2 * map_bytes  # the count can tell the two apart


@pytest.mark.parametrize("kind", KINDS)
def test_segmenter_from_hole_keeps_two_logit_maps_alive(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward + backward of Eq. 1 with a 4x mask: the two gradients (which any implementation creates) plus
    chunk-sized temporaries, the resampled mask's buffer being reused for dL/dz_f (2.0-2.4 maps); the reference
    holds 7-8 maps.
    Counted in bytes, not timed."""
    monkeypatch.setattr(TF, "_CHUNK_ELEMS", 32 * 32)  # one sample per chunk
    zf, zr = torch.randn(8, 1, 32, 32).requires_grad_(), torch.randn(8, 1, 32, 32).requires_grad_()
    hole = (torch.rand(8, 1, 128, 128) > 0.5).float()
    map_bytes = zf.numel() * zf.element_size()

    def ours() -> None:
        TF.scat_segmenter_hole(zf, zr, hole, "area", kind, "mean").backward()
        zf.grad = zr.grad = None

    def reference() -> None:
        R.scat_segmenter_loss(zf, zr, TF.hole_at(hole, zf, "area"), kind, "mean").backward()
        zf.grad = zr.grad = None

    ours(), reference()  # warm-up
    ours_peak, ref_peak = peak_memory_bytes(ours), peak_memory_bytes(reference)
    assert ours_peak <= 2 * map_bytes + 4 * map_bytes // 8 + 4096  # 2 maps + a few one-sample temporaries
    assert ref_peak >= 5 * ours_peak // 2
