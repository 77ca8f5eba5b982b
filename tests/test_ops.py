"""Fused Triton kernels (scatloss.ops) against the PyTorch reference (scatloss.functional, backend="torch").

CPU tier: the kernels run on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1``, set below
before Triton is imported), with small, odd shapes. GPU tier (``-m gpu``, CUDA and ``TRITON_INTERPRET=0``):
bf16, autocast, ``torch.compile(fullgraph=True)`` with Inductor, CUDA-graph capture, large shapes; run it
with ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="the optional dependency triton is not installed (pip install 'scatloss[triton]')")

import scatloss.functional as SF  # noqa: E402
from scatloss._validation import value_checks  # noqa: E402
from scatloss.ops import _interpreting  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INTERPRETER = _interpreting()
GPU = torch.cuda.is_available() and not INTERPRETER

cpu_tier = pytest.mark.skipif(not INTERPRETER, reason="CPU tier runs the kernels under TRITON_INTERPRET=1")


def gpu_test(fn):
    """GPU tier: CUDA tensors, compiled kernels (``TRITON_INTERPRET=0``); run with ``benchmarks/gpu_check.sh``."""
    skip = pytest.mark.skipif(not GPU, reason="needs CUDA with TRITON_INTERPRET=0 (run benchmarks/gpu_check.sh)")
    return pytest.mark.gpu(skip(fn))


KINDS = ("hinge", "bce", "ls")
RESAMPLES = ("area", "nearest", "max")
REDUCTIONS = ("mean", "sum", "none")
# relative tolerance of a result against a float32 truth computed from the same (rounded) inputs
RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float64: 1e-10}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, floor: float = 1e-30) -> None:
    """Close up to ``rtol`` relative to each element and to the largest magnitude (for near-zero entries).

    ``floor`` bounds that magnitude from below, for results that are exactly zero only through cancellation
    of O(``floor``) terms (e.g. InfoNCE gradients with D = 1, where normalisation removes every component)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    a, e = actual.double(), expected.double()
    scale = e.abs().max().item() if e.numel() else 0.0
    torch.testing.assert_close(a, e, rtol=rtol, atol=rtol * max(scale, floor))


def logits(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 1.7).to(dtype)


def soft_hole(*shape: int, seed: int = 1) -> torch.Tensor:
    """A hole mask with hard holes and a few soft (blurred-edge) values."""
    g = torch.Generator().manual_seed(seed)
    hole = (torch.rand(*shape, generator=g) > 0.55).float()
    soft = torch.rand(*shape, generator=g)
    return torch.where(torch.rand(*shape, generator=g) > 0.9, soft, hole)


def run_both(loss_fn, inputs: dict[str, torch.Tensor], grad_names: tuple[str, ...], *, upstream_seed: int = 5):
    """(triton loss, triton grads, reference loss, reference grads) with the same random upstream gradient.

    The reference runs in float32 on the same values (the truth for reduced precision inputs).
    """
    ours_in = {
        k: (v.detach().clone().requires_grad_(k in grad_names) if v.is_floating_point() else v.clone())
        for k, v in inputs.items()
    }
    ref_in = {
        k: (v.detach().float().requires_grad_(k in grad_names) if v.is_floating_point() else v.clone())
        for k, v in inputs.items()
    }
    ours = loss_fn(backend="triton", **ours_in)
    ref = loss_fn(backend="torch", **ref_in)
    g = torch.Generator().manual_seed(upstream_seed)
    # not 1: checks the scaling by the upstream gradient
    upstream = (torch.rand(ref.shape, generator=g) + 0.5).to(ref.device)
    g_ours = torch.autograd.grad(ours, [ours_in[k] for k in grad_names], upstream.to(ours.dtype))
    g_ref = torch.autograd.grad(ref, [ref_in[k] for k in grad_names], upstream)
    return ours, g_ours, ref, g_ref


def check_against_reference(loss_fn, inputs, grad_names, dtype=torch.float32, expected_dtype=None, grad_floor=1e-30):
    ours, g_ours, ref, g_ref = run_both(loss_fn, inputs, grad_names)
    assert ours.dtype == (expected_dtype or dtype)
    assert_close(ours, ref, RTOL[dtype])
    for name, a, e in zip(grad_names, g_ours, g_ref, strict=True):
        assert a.dtype == inputs[name].dtype, name
        assert_close(a, e, RTOL[dtype], floor=grad_floor)


# ---- SCAT: per-pixel term in every use ----------------------------------------------------------------------------

SEG_GRADS = ("fake_logits", "real_logits")
# logits 13x17; masks 4x larger in both directions, and 2x / 3x (factors that differ in h and w)
MASK_SHAPES = ((52, 68), (26, 51))


@cpu_tier
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("resample", RESAMPLES)
def test_segmenter_matches_reference_every_reduction_and_mask_factor(kind: str, resample: str) -> None:
    fake, real = logits(2, 1, 13, 17, seed=0), logits(2, 1, 13, 17, seed=1)
    for H, W in MASK_SHAPES:
        hole = soft_hole(2, 1, H, W)
        for reduction in REDUCTIONS:

            def fn(backend, fake_logits, real_logits, hole, reduction=reduction):
                return SF.scat_segmenter_loss(
                    fake_logits, real_logits, hole, kind=kind, resample=resample, reduction=reduction, backend=backend
                )

            check_against_reference(fn, {"fake_logits": fake, "real_logits": real, "hole": hole}, SEG_GRADS)


@cpu_tier
@pytest.mark.parametrize("index64", (False, True))
def test_many_ragged_tiles_in_both_directions_and_64_bit_indexing(
    monkeypatch: pytest.MonkeyPatch, index64: bool
) -> None:
    """37 x 300 logits: 5 row blocks of 8 and 3 column blocks of 128, both ragged; the 64-bit index path (taken
    when one sample spans 2**31 elements) is forced on to check it computes the same."""
    from scatloss.ops import _scat_triton

    if index64:
        monkeypatch.setattr(_scat_triton, "_index64", lambda *extents: True)
    assert _scat_triton._tiling(37, 300) == (8, 128, 5, 3)
    fake, real = logits(2, 1, 37, 300, seed=20), logits(2, 1, 37, 300, seed=21)
    hole = soft_hole(2, 1, 74, 600, seed=22)
    for reduction in ("mean", "none"):

        def seg(backend, fake_logits, real_logits, hole, reduction=reduction):
            return SF.scat_segmenter_loss(
                fake_logits, real_logits, hole, kind="bce", reduction=reduction, backend=backend
            )

        def gen(backend, fake_logits, hole, reduction=reduction):
            return SF.scat_generator_loss(fake_logits, hole, kind="hinge", reduction=reduction, backend=backend)

        check_against_reference(seg, {"fake_logits": fake, "real_logits": real, "hole": hole}, SEG_GRADS)
        check_against_reference(gen, {"fake_logits": fake, "hole": hole}, ("fake_logits",))


def test_64_bit_indexing_is_chosen_from_in_sample_extents() -> None:
    from scatloss.ops import _scat_triton

    def meta(shape: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
        return torch.empty_strided(shape, stride, device="meta")

    assert _scat_triton._extent(meta((4, 1, 8, 16), (128, 128, 16, 1))) == 7 * 16 + 15
    assert _scat_triton._extent(meta((4, 1, 8, 16), (0, 0, 16, 1))) == 7 * 16 + 15  # expanded over the batch
    assert _scat_triton._extent(meta((0, 1, 8, 16), (128, 128, 16, 1))) == 0
    assert not _scat_triton._index64(2**31 - 1, 0)
    # a batch of many samples is fine in 32 bits (the sample offset is 64-bit); one huge sample, or a huge row stride
    # (a view into a larger tensor), is not
    assert not _scat_triton._index64(64 * 64, _scat_triton._extent(meta((10**6, 1, 64, 64), (4096, 4096, 64, 1))))
    assert _scat_triton._index64(_scat_triton._extent(meta((1, 1, 2, 2), (2**32, 2**32, 2**31, 1))))
    assert _scat_triton._index64(65536 * 32768)


@cpu_tier
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("region", ("hole", "all"))
def test_generator_matches_reference_every_resample_and_reduction(kind: str, region: str) -> None:
    fake = logits(2, 1, 13, 17, seed=2)
    hole = soft_hole(2, 1, 26, 51)
    for resample in RESAMPLES if region == "hole" else ("area",):
        for reduction in REDUCTIONS:

            def fn(backend, fake_logits, hole, resample=resample, reduction=reduction):
                return SF.scat_generator_loss(
                    fake_logits, hole, kind=kind, region=region, resample=resample, reduction=reduction, backend=backend
                )

            check_against_reference(fn, {"fake_logits": fake, "hole": hole}, ("fake_logits",))


@cpu_tier
@pytest.mark.parametrize(
    "mask_hw",
    # factors 26/13 = 2 by 40/17 (integer height only), 30/13 by 34/17 = 2 (integer width only)
    [(30, 40), (26, 40), (30, 34), (13, 17), (7, 9)],
    ids=["non-integer", "integer-height-only", "integer-width-only", "same-size", "smaller"],
)
def test_segmenter_mask_sizes_without_an_integer_factor_fall_back_and_agree(mask_hw: tuple[int, int]) -> None:
    fake, real = logits(2, 1, 13, 17, seed=3), logits(2, 1, 13, 17, seed=4)
    hole = soft_hole(2, 1, *mask_hw)
    for resample in RESAMPLES:

        def fn(backend, fake_logits, real_logits, hole, resample=resample):
            return SF.scat_segmenter_loss(
                fake_logits, real_logits, hole, kind="bce", resample=resample, reduction="none", backend=backend
            )

        check_against_reference(fn, {"fake_logits": fake, "real_logits": real, "hole": hole}, SEG_GRADS)


def _strided_views() -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(fake, real, hole) with non-contiguous layouts; logits 13x17, mask a 2x / 4x multiple."""
    base = logits(3, 3, 13, 17, seed=6).contiguous(memory_format=torch.channels_last)
    channels_last = base[:, 1:2]  # strides (3*13*17, 1, 3*17, 3)
    sliced = logits(3, 1, 20, 30, seed=7)[:, :, 3:16, 5:22]
    transposed = logits(3, 1, 17, 13, seed=8).transpose(2, 3)
    hole_expanded = soft_hole(1, 1, 26, 68).expand(3, 1, 26, 68)  # batch stride 0
    hole_sliced = soft_hole(3, 1, 52, 70)[:, :, ::2, 1:69]  # row stride doubled, offset column
    hole_bool_expanded = (soft_hole(1, 1, 52, 34) > 0.5).expand(3, 1, 52, 34)
    return {
        "channels-last logits, expanded mask": (channels_last, sliced, hole_expanded),
        "sliced + transposed logits, strided mask": (sliced, transposed, hole_sliced),
        "transposed logits, bool expanded mask": (transposed, channels_last, hole_bool_expanded),
    }


@cpu_tier
@pytest.mark.parametrize("case", list(_strided_views()))
def test_non_contiguous_inputs_are_read_through_their_strides(case: str) -> None:
    fake, real, hole = _strided_views()[case]
    assert not (fake.is_contiguous() and real.is_contiguous() and hole.is_contiguous())
    for resample in ("area", "max"):

        def seg(backend, fake_logits, real_logits, hole, resample=resample):
            return SF.scat_segmenter_loss(
                fake_logits, real_logits, hole, kind="hinge", resample=resample, reduction="none", backend=backend
            )

        def gen(backend, fake_logits, hole, resample=resample):
            return SF.scat_generator_loss(fake_logits, hole, kind="bce", resample=resample, backend=backend)

        inputs = {"fake_logits": fake, "real_logits": real, "hole": hole}
        check_against_reference(seg, inputs, ("fake_logits", "real_logits"))
        check_against_reference(gen, {"fake_logits": fake, "hole": hole}, ("fake_logits",))


@cpu_tier
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float16, torch.float64])
def test_mask_dtypes_bool_half_double(mask_dtype: torch.dtype) -> None:
    fake, real = logits(2, 1, 13, 17, seed=9), logits(2, 1, 13, 17, seed=10)
    hole = soft_hole(2, 1, 52, 34)
    hole = (hole > 0.5) if mask_dtype == torch.bool else hole.to(mask_dtype)

    def fn(backend, fake_logits, real_logits, hole):
        return SF.scat_segmenter_loss(fake_logits, real_logits, hole, kind="ls", reduction="none", backend=backend)

    check_against_reference(fn, {"fake_logits": fake, "real_logits": real, "hole": hole}, SEG_GRADS)


@cpu_tier
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("kind", KINDS)
def test_half_precision_accumulates_in_fp32_and_returns_the_logits_dtype(dtype: torch.dtype, kind: str) -> None:
    fake, real = logits(2, 1, 13, 17, dtype=dtype, seed=11), logits(2, 1, 13, 17, dtype=dtype, seed=12)
    hole = soft_hole(2, 1, 52, 68)
    for reduction in REDUCTIONS:

        def seg(backend, fake_logits, real_logits, hole, reduction=reduction):
            return SF.scat_segmenter_loss(
                fake_logits, real_logits, hole, kind=kind, reduction=reduction, backend=backend
            )

        def gen(backend, fake_logits, hole, reduction=reduction):
            return SF.scat_generator_loss(fake_logits, hole, kind=kind, reduction=reduction, backend=backend)

        check_against_reference(
            seg, {"fake_logits": fake, "real_logits": real, "hole": hole}, ("fake_logits", "real_logits"), dtype=dtype
        )
        check_against_reference(gen, {"fake_logits": fake, "hole": hole}, ("fake_logits",), dtype=dtype)
    # the reference path on the same half inputs returns the same dtype
    ref = SF.scat_segmenter_loss(fake, real, hole, kind=kind, backend="torch")
    assert SF.scat_segmenter_loss(fake, real, hole, kind=kind, backend="triton").dtype == ref.dtype == dtype


@cpu_tier
def test_mixed_logit_dtypes_promote_like_the_reference() -> None:
    fake, real = logits(2, 1, 13, 17, dtype=torch.float16, seed=13), logits(2, 1, 13, 17, seed=14)
    hole = soft_hole(2, 1, 26, 34)
    ours = SF.scat_segmenter_loss(fake, real, hole, reduction="none", backend="triton")
    ref = SF.scat_segmenter_loss(fake.float(), real, hole, reduction="none", backend="torch")
    assert ours.dtype == torch.float32
    assert_close(ours, ref, RTOL[torch.float32])


@cpu_tier
def test_upstream_gradient_arriving_expanded_is_read_through_strides() -> None:
    fake = logits(2, 1, 13, 17, seed=15).requires_grad_()
    hole = soft_hole(2, 1, 26, 34)
    grads = [
        torch.autograd.grad(SF.scat_generator_loss(fake, hole, kind="ls", reduction="none", backend=b).sum(), fake)[0]
        for b in ("triton", "torch")
    ]
    assert_close(*grads, RTOL[torch.float32])


@cpu_tier
def test_a_mask_that_requires_grad_is_refused_not_silently_ignored() -> None:
    fake, hole = logits(1, 1, 4, 4, seed=26), soft_hole(1, 1, 8, 8).requires_grad_()
    with pytest.raises(NotImplementedError, match=r"hole: the fused SCAT kernels treat the mask as data"):
        SF.scat_generator_loss(fake, hole, backend="triton")
    with torch.no_grad():
        SF.scat_generator_loss(fake, hole, backend="triton")  # no gradient wanted: fine
    SF.scat_generator_loss(fake, hole, region="all", backend="triton")  # the mask is not used


@cpu_tier
def test_forward_only_skips_gradient_buffers_and_matches() -> None:
    from scatloss.ops import _scat_triton as K

    fake, real, hole = logits(2, 1, 13, 17, seed=16), logits(2, 1, 13, 17, seed=17), soft_hole(2, 1, 26, 34)
    _, gf, gr = K.scat_fwd(fake, real, hole, "bce", "segmenter", "area", "mean", False, False)
    assert gf.numel() == 0 and gr.numel() == 0  # nothing written, nothing kept
    leaf = fake.clone().requires_grad_()
    with torch.no_grad():
        out = SF.scat_segmenter_loss(leaf, real, hole, kind="bce", backend="triton")
    assert not out.requires_grad
    assert torch.allclose(out, SF.scat_segmenter_loss(fake, real, hole, kind="bce", backend="torch"), rtol=1e-5)
    only_real = SF.scat_segmenter_loss(fake, real.clone().requires_grad_(), hole, backend="triton")
    assert only_real.requires_grad and only_real.grad_fn is not None


@cpu_tier
def test_same_inputs_give_bitwise_identical_losses_and_gradients() -> None:
    # 3 x 40 x 48 = 5760 pixels: six programs' partial sums reduced in a fixed order
    fake, real, hole = logits(3, 1, 40, 48, seed=18), logits(3, 1, 40, 48, seed=19), soft_hole(3, 1, 80, 192)
    results = []
    for _ in range(2):
        f, r = fake.clone().requires_grad_(), real.clone().requires_grad_()
        loss = SF.scat_segmenter_loss(f, r, hole, kind="bce", backend="triton")
        loss.backward()
        results.append((loss.detach(), f.grad, r.grad))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@cpu_tier
def test_caller_tensors_are_never_written() -> None:
    fake, real, hole = logits(2, 1, 13, 17, seed=20), logits(2, 1, 13, 17, seed=21), soft_hole(2, 1, 52, 68)
    a, p, n = logits(3, 10, seed=22), logits(3, 10, seed=23), logits(3, 4, 10, seed=24)
    before = [t.clone() for t in (fake, real, hole, a, p, n)]
    f, r = fake.requires_grad_(), real.requires_grad_()
    SF.scat_segmenter_loss(f, r, hole, backend="triton", reduction="none").sum().backward()
    SF.scat_generator_loss(f, hole, backend="triton").backward()
    a.requires_grad_(), p.requires_grad_(), n.requires_grad_()
    SF.semantic_contrastive_loss(a, p, n, backend="triton").backward()
    for t, t0 in zip((fake, real, hole, a, p, n), before, strict=True):
        assert torch.equal(t.detach(), t0)


@cpu_tier
@pytest.mark.parametrize("kind", KINDS)
def test_fused_ops_pass_float64_gradcheck(kind: str) -> None:
    g = torch.Generator().manual_seed(25)
    # hinge is not differentiable at +-1: keep the logits away from the kinks
    z = torch.rand(2, 1, 3, 5, generator=g, dtype=torch.float64) * 0.8 + 0.1
    fake = (z * torch.where(torch.rand(z.shape, generator=g) > 0.5, 1.0, -1.0).double()).requires_grad_()
    real = (torch.rand(2, 1, 3, 5, generator=g, dtype=torch.float64) * 3 - 1.5).requires_grad_()
    if kind == "hinge":
        real = (real.detach() + torch.where(real.detach().sub(1).abs() < 0.1, 0.3, 0.0)).requires_grad_()
    hole = soft_hole(2, 1, 6, 15).double()

    def seg(f, r):
        return SF.scat_segmenter_loss(f, r, hole, kind=kind, reduction="none", backend="triton")

    def gen(f):
        return SF.scat_generator_loss(f, hole, kind=kind, resample="max", backend="triton")

    # fast mode (random projections of the Jacobian): the interpreter is slow; full Jacobians are compared with the
    # reference's in every other test
    assert torch.autograd.gradcheck(seg, (fake, real), fast_mode=True)
    assert torch.autograd.gradcheck(gen, (fake,), fast_mode=True)


@pytest.mark.parametrize("kind", KINDS)
def test_reference_scat_passes_float64_gradcheck(kind: str) -> None:
    fake = (torch.rand(2, 1, 3, 5, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    real = (torch.rand(2, 1, 3, 5, dtype=torch.float64) * 0.8 - 0.4).requires_grad_()
    hole = soft_hole(2, 1, 6, 10).double()
    assert torch.autograd.gradcheck(
        lambda f, r: SF.scat_segmenter_loss(f, r, hole, kind=kind, reduction="none", backend="torch"), (fake, real)
    )
    assert torch.autograd.gradcheck(lambda f: SF.scat_generator_loss(f, hole, kind=kind, backend="torch"), (fake,))


# ---- InfoNCE -------------------------------------------------------------------------------------------------------

INFONCE_SHAPES = [(3, 5, 7), (1, 1, 1), (1, 6, 130), (4, 1, 33), (2, 9, 1000)]


def _infonce_inputs(B: int, M: int, D: int, dtype: torch.dtype = torch.float32, seed: int = 30):
    return {
        "anchor": logits(B, D, dtype=dtype, seed=seed),
        "positive": logits(B, D, dtype=dtype, seed=seed + 1),
        "negatives": logits(B, M, D, dtype=dtype, seed=seed + 2),
    }


@cpu_tier
@pytest.mark.parametrize("shape", INFONCE_SHAPES, ids=lambda s: "B{}-M{}-D{}".format(*s))
def test_infonce_matches_reference_all_inputs_get_gradients(shape: tuple[int, int, int]) -> None:
    inputs = _infonce_inputs(*shape)
    for reduction in REDUCTIONS:
        for normalize, temperature in ((True, 0.07), (False, 1.0)):

            def fn(backend, anchor, positive, negatives, reduction=reduction, normalize=normalize, t=temperature):
                return SF.semantic_contrastive_loss(
                    anchor,
                    positive,
                    negatives,
                    temperature=t,
                    normalize=normalize,
                    reduction=reduction,
                    backend=backend,
                )

            # gradients are O(1) per unit vector; with D = 1 they vanish by cancellation, hence the floor
            check_against_reference(fn, inputs, ("anchor", "positive", "negatives"), grad_floor=1.0)


@cpu_tier
def test_infonce_zero_vectors_follow_f_normalize() -> None:
    inputs = _infonce_inputs(3, 4, 6)
    inputs["anchor"][0] = 0.0  # all similarities of row 0 are 0: loss log(1 + M)
    inputs["positive"][1] = 0.0
    inputs["negatives"][2, 1] = 0.0
    ours = SF.semantic_contrastive_loss(**inputs, reduction="none", backend="triton")
    assert torch.isclose(ours[0], torch.log(torch.tensor(5.0)))

    def fn(backend, anchor, positive, negatives):
        return SF.semantic_contrastive_loss(anchor, positive, negatives, reduction="none", backend=backend)

    check_against_reference(fn, inputs, ("anchor", "positive", "negatives"))


@cpu_tier
def test_infonce_split_over_negatives_matches_and_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    from scatloss.ops import _infonce_triton as K

    monkeypatch.setattr(K, "target_programs", lambda device: 64)  # as on a GPU: several programs per row
    assert K._splits(2, 13, torch.device("cpu"))[0] > 1
    inputs = _infonce_inputs(2, 200, 33)

    def fn(backend, anchor, positive, negatives):
        return SF.semantic_contrastive_loss(anchor, positive, negatives, temperature=0.2, backend=backend)

    check_against_reference(fn, inputs, ("anchor", "positive", "negatives"))
    first, *_ = run_both(fn, inputs, ("anchor",))
    second, *_ = run_both(fn, inputs, ("anchor",))
    assert torch.equal(first, second)


@cpu_tier
def test_infonce_non_contiguous_and_expanded_inputs() -> None:
    B, M, D = 3, 5, 12
    anchor = logits(B, 2 * D, seed=40)[:, ::2]  # column stride 2
    positive = logits(D, B, seed=41).t()  # transposed
    negatives = logits(B, D, M, seed=42).transpose(1, 2)  # (B, M, D) with feature stride M
    shared = logits(1, M, D, seed=43).expand(B, M, D)  # the same negatives for every anchor (stride 0)
    for neg in (negatives, shared):

        def fn(backend, anchor, positive, negatives):
            return SF.semantic_contrastive_loss(anchor, positive, negatives, reduction="none", backend=backend)

        check_against_reference(
            fn, {"anchor": anchor, "positive": positive, "negatives": neg}, ("anchor", "positive", "negatives")
        )


@cpu_tier
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_infonce_half_inputs_compute_and_return_float32(dtype: torch.dtype) -> None:
    inputs = _infonce_inputs(3, 6, 40, dtype=dtype)

    def fn(backend, anchor, positive, negatives):
        return SF.semantic_contrastive_loss(anchor, positive, negatives, temperature=0.1, backend=backend)

    ours, g_ours, ref, g_ref = run_both(fn, inputs, ("anchor", "positive", "negatives"))
    assert ours.dtype == SF.semantic_contrastive_loss(**inputs, backend="torch").dtype == torch.float32
    assert_close(ours, ref, 1e-5)  # both compute in float32 from the same half values
    for a, e in zip(g_ours, g_ref, strict=True):
        assert a.dtype == dtype
        assert_close(a, e, RTOL[dtype])


@cpu_tier
def test_infonce_gradients_only_for_inputs_that_require_them() -> None:
    from scatloss.ops import _infonce_triton as K

    inputs = _infonce_inputs(2, 3, 8)
    a = inputs["anchor"].clone().requires_grad_()
    loss = SF.semantic_contrastive_loss(a, inputs["positive"], inputs["negatives"], backend="triton")
    (g_a,) = torch.autograd.grad(loss, a)
    ref = SF.semantic_contrastive_loss(a, inputs["positive"], inputs["negatives"], backend="torch")
    assert_close(g_a, torch.autograd.grad(ref, a)[0], 1e-5)
    _, lse = K.infonce_fwd(a.detach(), inputs["positive"], inputs["negatives"], 0.07, True, "mean")
    da, dp, dn = K.infonce_bwd(
        torch.tensor(1.0), a.detach(), inputs["positive"], inputs["negatives"], lse, 0.07, True, 0.5, True, False, False
    )
    assert da.shape == (2, 8) and dp.numel() == 0 and dn.numel() == 0


@cpu_tier
def test_infonce_fused_op_passes_float64_gradcheck() -> None:
    inputs = {k: v.double().requires_grad_() for k, v in _infonce_inputs(2, 3, 5).items()}
    for normalize in (True, False):
        assert torch.autograd.gradcheck(
            lambda a, p, n, normalize=normalize: SF.semantic_contrastive_loss(
                a, p, n, temperature=0.3, normalize=normalize, reduction="none", backend="triton"
            ),
            tuple(inputs.values()),
            fast_mode=True,
        )


def test_reference_infonce_passes_float64_gradcheck() -> None:
    inputs = {k: v.double().requires_grad_() for k, v in _infonce_inputs(2, 3, 5).items()}
    assert torch.autograd.gradcheck(
        lambda a, p, n: SF.semantic_contrastive_loss(a, p, n, temperature=0.3, backend="torch"), tuple(inputs.values())
    )


# ---- compile, packaging --------------------------------------------------------------------------------------------


def _all_three(fake, real, hole, anchor, positive, negatives):
    seg = SF.scat_segmenter_loss(fake, real, hole, kind="bce", backend="triton")
    gen = SF.scat_generator_loss(fake, hole, kind="hinge", reduction="none", backend="triton").mean()
    sem = SF.semantic_contrastive_loss(anchor, positive, negatives, backend="triton")
    return seg + gen + sem


def _assert_compiled_matches_eager(args: list[torch.Tensor], grads: list[int]) -> None:
    """``torch.compile(fullgraph=True)`` of ``_all_three`` equals eager: value and the gradients of ``grads``."""
    compiled = torch.compile(_all_three, fullgraph=True)
    results = []
    for fn in (compiled, _all_three):
        leaves = [a.clone().requires_grad_(i in grads) for i, a in enumerate(args)]
        with value_checks(False):
            out = fn(*leaves)
        results.append((out, *torch.autograd.grad(out, [leaves[i] for i in grads])))
    for a, b in zip(*results, strict=True):
        assert_close(a, b, 1e-5)


@cpu_tier
def test_torch_compile_fullgraph_traces_all_ops_and_their_backward() -> None:
    # Under the interpreter the ops are opaque custom ops with fake functions (see scatloss.ops._triton_common);
    # the GPU tier compiles the triton_op registration with Inductor.
    torch._dynamo.reset()
    args = [
        logits(2, 1, 8, 12, seed=50),
        logits(2, 1, 8, 12, seed=51),
        soft_hole(2, 1, 16, 24) > 0.5,
        logits(2, 16, seed=52),
        logits(2, 16, seed=53),
        logits(2, 3, 16, seed=54),
    ]
    grads = [0, 1, 3]
    _assert_compiled_matches_eager(args, grads)


# Compiles every kernel for an sm_90 target (no GPU needed: a stub driver stands in for CUDA at launch) and
# traces the GPU registration (torch.library.triton_op) through AOTAutograd: kernels that the interpreter accepts
# but the compiler would reject, and graph problems of the GPU path, fail here in CI.
_CUDA_DRY_RUN = textwrap.dedent(
    r"""
    import os, sys, torch, triton
    os.environ.pop("TRITON_INTERPRET", None)
    sys.path.insert(0, "benchmarks")
    from triton_resources import install_stub_driver

    install_stub_driver(90)  # compile for sm_90, launch nothing
    print("HARNESS_OK", flush=True)

    from torch._dynamo.backends.common import aot_autograd
    import scatloss.ops as ops
    import scatloss.functional as SF
    from scatloss._validation import set_value_checks
    from scatloss.ops import _scat_triton, _infonce_triton

    assert not ops._interpreting()
    assert _scat_triton.scat_fwd.__class__.__name__ == "CustomOpDef"
    set_value_checks(False)
    ops.resolve_backend = lambda backend, *tensors, **kw: "triton"  # CPU tensors stand in for CUDA ones
    _infonce_triton.target_programs = lambda device: 8

    graphs = []
    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    backend = aot_autograd(fw_compiler=capture, bw_compiler=capture)

    def step(fake, real, hole, a, p, n, kind, resample, reduction, region, normalize):
        seg = SF.scat_segmenter_loss(fake, real, hole, kind=kind, resample=resample, reduction=reduction,
                                     backend="triton")
        gen = SF.scat_generator_loss(fake, hole, kind=kind, region=region, resample=resample, reduction=reduction,
                                     backend="triton")
        sem = SF.semantic_contrastive_loss(a, p, n, normalize=normalize, reduction=reduction, backend="triton")
        return seg.sum() + gen.sum() + sem.sum()

    configs = [("hinge", "area", "mean", "hole", True, torch.float32, torch.float32),
               ("bce", "max", "sum", "all", False, torch.bfloat16, torch.bool),
               ("ls", "nearest", "none", "hole", True, torch.float16, torch.float16),
               ("bce", "area", "none", "hole", True, torch.float64, torch.float64)]
    for kind, resample, reduction, region, normalize, dtype, mask_dtype in configs:
        fake = torch.randn(2, 1, 8, 12, dtype=dtype, requires_grad=True)
        real = torch.randn(2, 1, 8, 12, dtype=dtype, requires_grad=True)
        hole = (torch.rand(2, 1, 32, 24) > 0.5).to(mask_dtype)
        a, p = torch.randn(3, 40, dtype=dtype, requires_grad=True), torch.randn(3, 40, dtype=dtype, requires_grad=True)
        n = torch.randn(3, 300, 40, dtype=dtype, requires_grad=True)
        args = (fake, real, hole, a, p, n, kind, resample, reduction, region, normalize)
        step(*args).backward()  # eager: compiles every kernel on the path
        torch._dynamo.reset()
        out = torch.compile(step, backend=backend, fullgraph=True)(*args)
        out.backward()
        assert fake.grad.dtype == dtype and n.grad.shape == n.shape
    code = "\n".join(g.code for g in graphs)
    names = ["_scat_fwd_kernel", "_sum_kernel", "_scale_grad_kernel", "_fwd_partial_kernel",
             "_fwd_combine_kernel", "_bwd_kernel", "_bwd_anchor_kernel"]
    assert code.count("triton_kernel_wrapper_functional") >= len(names), code
    print("DRY_RUN_OK", len(graphs), flush=True)
    """
)


@pytest.mark.slow
def test_kernels_compile_for_a_cuda_target_and_trace_through_aot_autograd() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run(
        [sys.executable, "-c", _CUDA_DRY_RUN], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if "HARNESS_OK" not in proc.stdout:
        pytest.skip(f"this Triton build has no stub-able CUDA driver interface: {proc.stderr[-500:]}")
    assert proc.returncode == 0 and "DRY_RUN_OK" in proc.stdout, proc.stderr[-4000:]


@pytest.mark.slow
def test_every_kernel_specialisation_compiles_for_sm90_without_spills() -> None:
    """benchmarks/triton_resources.py --quick: every value of every kernel parameter and every input dtype through
    the whole compiler to a cubin for sm_90; fails on a compile error or a kernel that spills registers."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    script = ROOT / "benchmarks" / "triton_resources.py"
    cmd = [sys.executable, str(script), "--quick", "--arch", "90", "--no-write"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if "cuobjdump printed no resource line" in proc.stderr or "No such file" in proc.stderr:
        pytest.skip(f"this Triton build ships no usable cuobjdump: {proc.stderr[-500:]}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    names = ["_scat_fwd_kernel", "_sum_kernel", "_scale_grad_kernel", "_fwd_partial_kernel",
             "_fwd_combine_kernel", "_bwd_kernel", "_bwd_anchor_kernel"]  # fmt: skip
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| sm_90 |")]
    assert sorted(r.split("|")[2].strip(" `") for r in rows) == sorted(names), proc.stdout


def test_scatloss_imports_and_runs_without_triton() -> None:
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, scatloss.functional as SF, scatloss.ops.scat, scatloss.ops.infonce\n"
        "from scatloss.ops import triton_available\n"
        "z = torch.randn(1, 1, 4, 4); h = torch.zeros(1, 1, 8, 8)\n"
        "print(float(SF.scat_generator_loss(z, h, region='all', kind='ls')))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---- GPU tier ------------------------------------------------------------------------------------------------------


@gpu_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("kind", KINDS)
def test_gpu_large_maps_match_reference(dtype: torch.dtype, kind: str) -> None:
    fake = torch.randn(8, 1, 256, 256, device="cuda", dtype=dtype)
    real = torch.randn(8, 1, 256, 256, device="cuda", dtype=dtype)
    hole = (torch.rand(8, 1, 1024, 1024, device="cuda") > 0.5).float()
    for reduction in REDUCTIONS:
        for resample in RESAMPLES:

            def seg(backend, fake_logits, real_logits, hole, reduction=reduction, resample=resample):
                return SF.scat_segmenter_loss(
                    fake_logits, real_logits, hole, kind=kind, resample=resample, reduction=reduction, backend=backend
                )

            check_against_reference(
                seg,
                {"fake_logits": fake, "real_logits": real, "hole": hole},
                ("fake_logits", "real_logits"),
                dtype=dtype,
            )


@gpu_test
@pytest.mark.parametrize("shape", [(256, 64, 1024), (8, 4096, 256), (4096, 8, 128)], ids=str)
def test_gpu_infonce_large(shape: tuple[int, int, int]) -> None:
    B, M, D = shape
    inputs = {k: v.cuda() for k, v in _infonce_inputs(B, M, D).items()}

    def fn(backend, anchor, positive, negatives):
        return SF.semantic_contrastive_loss(anchor, positive, negatives, backend=backend)

    check_against_reference(fn, inputs, ("anchor", "positive", "negatives"))
    first, *_ = run_both(fn, inputs, ("anchor", "negatives"))
    second, *_ = run_both(fn, inputs, ("anchor", "negatives"))
    assert torch.equal(first, second)


@gpu_test
def test_gpu_auto_backend_keeps_pytorch_when_the_mask_needs_a_gradient() -> None:
    from scatloss.ops import resolve_backend

    fake, hole = torch.randn(2, 1, 8, 8, device="cuda"), torch.rand(2, 1, 16, 16, device="cuda")
    assert resolve_backend("auto", fake, hole, data=(hole,)) == "triton"
    assert resolve_backend("auto", fake, hole, data=(hole.requires_grad_(),)) == "torch"
    with torch.no_grad():
        assert resolve_backend("auto", fake, hole, data=(hole,)) == "triton"


@gpu_test
def test_gpu_autocast_bf16() -> None:
    conv = torch.nn.Conv2d(3, 1, 3, padding=1).cuda()
    x, y = torch.randn(4, 3, 64, 64, device="cuda"), torch.randn(4, 3, 64, 64, device="cuda")
    hole = (torch.rand(4, 1, 256, 256, device="cuda") > 0.5).float()
    out = {}
    for backend in ("triton", "torch"):
        conv.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fake, real = conv(x), conv(y)
            loss = SF.scat_segmenter_loss(fake, real, hole, backend=backend) + SF.scat_generator_loss(
                fake, hole, backend=backend
            )
        loss.backward()
        out[backend] = (loss.detach().float(), conv.weight.grad.clone())
    for a, b in zip(out["triton"], out["torch"], strict=True):
        assert_close(a, b, RTOL[torch.bfloat16])


@gpu_test
def test_gpu_torch_compile_fullgraph_inductor() -> None:
    torch._dynamo.reset()
    args = [
        logits(4, 1, 64, 64, seed=60).cuda(),
        logits(4, 1, 64, 64, seed=61).cuda(),
        (soft_hole(4, 1, 256, 256) > 0.5).cuda(),
        logits(8, 256, seed=62).cuda(),
        logits(8, 256, seed=63).cuda(),
        logits(8, 16, 256, seed=64).cuda(),
    ]
    grads = [0, 1, 3, 5]
    _assert_compiled_matches_eager(args, grads)


@gpu_test
def test_gpu_cuda_graph_capture_and_replay() -> None:
    fake = torch.randn(8, 1, 128, 128, device="cuda", requires_grad=True)
    real = torch.randn(8, 1, 128, 128, device="cuda", requires_grad=True)
    hole = (torch.rand(8, 1, 512, 512, device="cuda") > 0.5).float()
    a = torch.randn(8, 256, device="cuda", requires_grad=True)
    p, n = torch.randn(8, 256, device="cuda"), torch.randn(8, 8, 256, device="cuda")

    def step():
        loss = _all_three(fake, real, hole, a, p, n)
        return loss, *torch.autograd.grad(loss, (fake, real, a))

    with value_checks(False):  # the mask's value check reads back to the host
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                step()  # warm-up: compile kernels outside capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static = step()
        with torch.no_grad():
            fake.copy_(torch.randn_like(fake))
            hole.copy_((torch.rand_like(hole) > 0.3).float())
        graph.replay()
        torch.cuda.synchronize()
        expected = step()
    for s, e in zip(static, expected, strict=True):
        assert torch.equal(s, e)
