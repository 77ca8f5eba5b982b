"""Tests pinning behaviour of :mod:`scatloss.functional` that mutation testing (run f6, helper h1) found unchecked.

The resampling of a hole mask that requires grad (the mode asked for, not a default), the memory-lean path for a
mask without grad (the resampled mask's buffer becomes the gradient, README "Fast paths"), the backend choice of
``backend="auto"`` on a (emulated) CUDA machine with Triton (a mask that requires grad keeps the PyTorch path so its
gradient is not lost; ``region="all"`` does not read the mask) and the float32 promotion of the additive
normalisation of :func:`scatloss.functional.semantic_contrastive_loss`. Each test compares with an independent
expectation: a hand-computed value or the documented contract.
"""

from __future__ import annotations

import math

import pytest
import torch

import scatloss.functional as SF
import scatloss.ops as ops_module
import scatloss.ops.torch_fused as TF
from scatloss.utils import peak_memory_bytes


def _hole_4x4() -> torch.Tensor:
    """A 4x4 mask whose 2x2 blocks tell area, nearest and max apart (area / nearest / max per block):
    top-left all ones (1 / 1 / 1), top-right only its bottom-right pixel (0.25 / 0 / 1), bottom-left empty
    (0 / 0 / 0), bottom-right only its top-left pixel at 0.5 (0.125 / 0.5 / 0.5)."""
    hole = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    hole[0, 0, :2, :2] = 1.0
    hole[0, 0, 1, 3] = 1.0
    hole[0, 0, 2, 2] = 0.5
    return hole


def _block_grad(per_block: torch.Tensor, resample: str) -> torch.Tensor:
    """The gradient on the 4x4 mask of ``sum(per_block * w)`` with ``w`` its 2x2 resampling: spread evenly over
    each block for ``"area"``, all on the block's top-left pixel for ``"nearest"``."""
    if resample == "area":
        return per_block.repeat_interleave(2, -2).repeat_interleave(2, -1) / 4.0
    grad = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    grad[..., ::2, ::2] = per_block
    return grad


@pytest.mark.parametrize(("resample", "want"), [("area", -0.5), ("nearest", -0.75)])
def test_generator_resamples_a_mask_that_requires_grad_with_the_mode_asked_for(resample: str, want: float) -> None:
    """Hinge Eq. 2 on the hole region with a 4x4 mask that requires grad and 2x2 logits ``z``: the loss is
    ``-mean(z * w)`` with ``w`` the mask resampled by ``resample`` (area: w = [[1, .25], [0, .125]]; nearest:
    [[1, 0], [0, .5]]), and the mask's gradient is ``-z / 4`` spread as that resampling reads the mask."""
    z = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    hole = _hole_4x4().requires_grad_()
    loss = SF.scat_generator_loss(z, hole, kind="hinge", resample=resample)
    assert loss.item() == pytest.approx(want, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(hole.grad, _block_grad(-z / 4.0, resample), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("resample", "want"), [("area", 0.84375), ("nearest", 0.875)])
def test_segmenter_resamples_a_mask_that_requires_grad_with_the_mode_asked_for(resample: str, want: float) -> None:
    """Hinge Eq. 1 with fake logits 0.5 (each pixel ``(1 - w) * 0.5 + w * 1.5``), real logits 2 (no real term) and
    a 4x4 mask that requires grad: the loss is ``0.5 + mean(w)`` with ``w`` the mask resampled by ``resample``, and
    the mask's gradient is ``1 / 4`` per logit pixel, spread as that resampling reads the mask."""
    zf = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    zr = torch.full((1, 1, 2, 2), 2.0, dtype=torch.float64)
    hole = _hole_4x4().requires_grad_()
    loss = SF.scat_segmenter_loss(zf, zr, hole, kind="hinge", resample=resample)
    assert loss.item() == pytest.approx(want, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(hole.grad, _block_grad(torch.full((1, 1, 2, 2), 0.25, dtype=torch.float64), resample))


def test_generator_backward_with_a_mask_without_grad_allocates_no_logit_map() -> None:
    """README "Fast paths": with a mask that does not require grad (grad enabled), the resampled mask's buffer is
    turned into the gradient in backward, so the hinge term's backward allocates no logit-sized map; the gradient
    is ``-w / numel`` with ``w`` the 2x2 block averages."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 1, 32, 32, generator=g).requires_grad_()
    hole = (torch.rand(4, 1, 64, 64, generator=g) > 0.5).float()
    map_bytes = z.numel() * z.element_size()
    grads: list[torch.Tensor] = []

    def backward(loss: torch.Tensor) -> None:
        grads.append(torch.autograd.grad(loss, z)[0])

    backward(SF.scat_generator_loss(z, hole))  # warm-up
    loss = SF.scat_generator_loss(z, hole)
    assert peak_memory_bytes(lambda: backward(loss)) < map_bytes // 2
    want = -torch.nn.functional.avg_pool2d(hole, 2) / z.numel()
    for grad in grads:
        torch.testing.assert_close(grad, want, rtol=1e-6, atol=1e-9)


def test_segmenter_backward_with_a_mask_without_grad_allocates_one_map(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """README "Fast paths": with a mask that does not require grad, Eq. 1's backward writes ``dL/dz_f`` into the
    resampled mask's buffer, so it allocates one logit-sized map (``dL/dz_r``) plus one-sample temporaries, not
    two; the gradients are the hinge closed forms (``(h (1 + [|z| < 1]) - [z < 1]) / numel`` and ``-[z < 1] /
    numel``)."""
    monkeypatch.setattr(TF, "_CHUNK_ELEMS", 32 * 32)  # one sample per chunk
    g = torch.Generator().manual_seed(1)
    zf = torch.randn(8, 1, 32, 32, generator=g).requires_grad_()
    zr = torch.randn(8, 1, 32, 32, generator=g).requires_grad_()
    hole = (torch.rand(8, 1, 64, 64, generator=g) > 0.5).float()
    map_bytes = zf.numel() * zf.element_size()
    grads: list[tuple[torch.Tensor, ...]] = []

    def backward(loss: torch.Tensor) -> None:
        grads.append(torch.autograd.grad(loss, (zf, zr)))

    backward(SF.scat_segmenter_loss(zf, zr, hole))  # warm-up
    loss = SF.scat_segmenter_loss(zf, zr, hole)
    assert peak_memory_bytes(lambda: backward(loss)) < map_bytes + map_bytes // 2
    h = torch.nn.functional.avg_pool2d(hole, 2)
    n = zf.numel()
    want_f = (h * (1.0 + (zf.detach().abs() < 1).float()) - (zf.detach() < 1).float()) / n
    want_r = -(zr.detach() < 1).float() / n
    for gf, gr in grads:
        torch.testing.assert_close(gf, want_f, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(gr, want_r, rtol=0, atol=0)


class _OnCuda:
    """Stands in for a CUDA tensor where the backend choice asks for the device."""

    is_cuda = True


@pytest.fixture
def cuda_machine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Emulate a CUDA machine with Triton for :func:`scatloss.ops.resolve_backend`: each tensor it is handed is
    replaced by a stand-in on CUDA (anything else is passed as is), the real rule decides, and the decision is
    recorded; the loss itself then runs on PyTorch (this machine has no GPU)."""
    real = ops_module.resolve_backend
    decisions: list[str] = []

    def resolve(backend: str, *tensors: object, data: tuple[torch.Tensor, ...] = ()) -> str:
        stand_ins = [_OnCuda() if isinstance(t, torch.Tensor) else t for t in tensors]
        decisions.append(real(backend, *stand_ins, data=data))  # type: ignore[arg-type]
        return "torch"

    monkeypatch.setattr(ops_module, "triton_available", lambda: True)
    monkeypatch.setattr(ops_module, "resolve_backend", resolve)
    return decisions


def test_auto_backend_keeps_pytorch_for_a_scat_mask_that_requires_grad(cuda_machine: list[str]) -> None:
    """On CUDA with Triton, ``backend="auto"`` uses the kernels, except when the hole mask they read (without
    differentiating it) requires grad with grad enabled: then both SCAT terms stay on PyTorch so the mask gets its
    gradient. ``region="all"`` does not read the mask, so its ``requires_grad`` does not matter there."""
    z = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    hole = _hole_4x4()
    hole_g = _hole_4x4().requires_grad_()
    SF.scat_generator_loss(z, hole_g)
    SF.scat_generator_loss(z, hole)
    SF.scat_generator_loss(z, hole_g, region="all")
    with torch.no_grad():
        SF.scat_generator_loss(z, hole_g)
    assert cuda_machine == ["torch", "triton", "triton", "triton"]
    cuda_machine.clear()
    SF.scat_segmenter_loss(z, z, hole_g)
    SF.scat_segmenter_loss(z, z, hole)
    with torch.no_grad():
        SF.scat_segmenter_loss(z, z, hole_g)
    assert cuda_machine == ["torch", "triton", "triton"]
    cuda_machine.clear()
    a = torch.tensor([[3.0, 4.0]], requires_grad=True)
    SF.semantic_contrastive_loss(a, a, a[:, None])
    assert cuda_machine == ["triton"]


def test_additive_normalisation_of_bfloat16_features_is_computed_in_float32() -> None:
    """``normalize_eps`` is applied "in at least float32": bfloat16 features ``a = (3, 4)``, ``p = (4, 3)``,
    negatives ``(0, 5)`` and ``(5, 0)`` normalise to exactly ``(.6, .8)``, ``(.8, .6)``, ``(0, 1)``, ``(1, 0)``
    (``eps = 1e-7`` is below float32's precision at ``|x| = 5``), so with ``t = 1`` the loss is
    ``log(e^.96 + e^.8 + e^.6) - .96``; normalising in bfloat16 (``.6 -> .6016``) is off by about 2e-3."""
    a = torch.tensor([[3.0, 4.0]], dtype=torch.bfloat16)
    p = torch.tensor([[4.0, 3.0]], dtype=torch.bfloat16)
    n = torch.tensor([[[0.0, 5.0], [5.0, 0.0]]], dtype=torch.bfloat16)
    want = math.log(math.exp(0.96) + math.exp(0.8) + math.exp(0.6)) - 0.96
    for backend in ("auto", "torch"):
        loss = SF.semantic_contrastive_loss(a, p, n, temperature=1.0, normalize_eps=1e-7, backend=backend)
        assert loss.dtype == torch.float32
        assert loss.item() == pytest.approx(want, abs=2e-6)
