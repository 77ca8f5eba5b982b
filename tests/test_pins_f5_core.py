"""Tests pinning behaviour that mutation testing found unchecked in the core (fifth run).

Covers ``SCATCriterion.release`` (explicit layers and sizes win over the discriminator's attributes; constructor
keywords reach the criterion) and the PyTorch fused generator loss's backward (``_generator_grad_into``: the gradient
written into the resampled mask's buffer). Each test compares with an independent expectation: a hand-computed value,
Eq. 2's closed-form gradient (or the reference's autograd), or the documented memory budget.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton (as tests/test_ops.py)

import torch
from torch import nn

from scatloss import reference as R
from scatloss.criterion import SCATCriterion
from scatloss.ops import torch_fused as TF
from scatloss.utils import peak_memory_bytes


def _attributed_d() -> nn.Sequential:
    """A two-conv discriminator advertising its layers the way :class:`scatloss.nets.UNetDiscriminator` does."""
    d = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(2, 1, 3, padding=1))
    d.textural_layers = ("0",)  # type: ignore[assignment]
    d.semantic_layer = "0"  # type: ignore[assignment]
    d.feature_dim = 7  # type: ignore[assignment]
    return d


# ----------------------------------------------------------------------------------------------------------------------
# criterion: the release preset
# ----------------------------------------------------------------------------------------------------------------------


def test_release_explicit_layers_and_size_override_discriminator_attributes() -> None:
    """``textural_layers`` / ``semantic_layer`` / ``in_features`` given to ``release`` are used as given; the
    discriminator's attributes are only the defaults."""
    crit = SCATCriterion.release(_attributed_d(), textural_layers=["1"], semantic_layer="1", in_features=5)
    assert crit.textural_layers == ("1",)
    assert crit.semantic_layer == "1"
    assert crit.objective.semantic.in_features == 5


def test_release_reads_layers_and_size_from_discriminator_attributes() -> None:
    """Without explicit arguments, ``release`` takes the discriminator's ``textural_layers``, ``semantic_layer``
    and ``feature_dim`` (the projection head's input size)."""
    crit = SCATCriterion.release(_attributed_d())
    assert crit.textural_layers == ("0",)
    assert crit.semantic_layer == "0"
    assert crit.objective.semantic.in_features == 7


def test_release_passes_constructor_keywords_through() -> None:
    """Keywords other than the preset's own go to the constructor, and they win over the preset's options."""
    crit = SCATCriterion.release(nn.Conv2d(3, 1, 3), chunk_size=3, negatives_from="global", seed=11, fill=0.0)
    assert crit.chunk_size == 3
    assert crit.negatives_from == "global"
    assert crit.seed == 11
    assert crit.fill == 0.0


# ----------------------------------------------------------------------------------------------------------------------
# ops.torch_fused: the generator's gradient written into the resampled mask
# ----------------------------------------------------------------------------------------------------------------------


def test_generator_bce_gradient_outside_the_hole_is_the_plain_product() -> None:
    """bce needs no select (``sigmoid(z) - 1`` is finite): outside the hole the gradient is the product
    ``w lG'(z) g`` itself, as the reference's autograd gives it (to rounding), the sign of zero included
    (``0 * lG' = -0.0`` for ``lG' < 0`` and ``g > 0``)."""
    z = torch.tensor([[[[-2.0, 0.5], [2.0, 30.0]]]], dtype=torch.float64).requires_grad_()
    hole = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]], dtype=torch.float64)
    hole = hole.repeat_interleave(2, -1).repeat_interleave(2, -2)
    out = TF.scat_generator_hole(z, hole, "area", "bce", "none")
    ref = R.scat_generator_loss(z, TF.hole_at(hole, z, "area"), "bce", "none")
    upstream = torch.full_like(out, 2.0)
    (grad,) = torch.autograd.grad(out, z, upstream)
    (want,) = torch.autograd.grad(ref, z, upstream)
    torch.testing.assert_close(grad, want, rtol=1e-12, atol=0.0)
    assert torch.equal(torch.signbit(grad), torch.signbit(want))
    assert torch.signbit(grad).all()  # -0.0 outside the hole, negative inside


def test_generator_hinge_backward_with_a_map_upstream_allocates_no_logit_map() -> None:
    """``reduction="none"``, hinge: the gradient ``-w g`` is written into the resampled mask's buffer with the
    upstream map applied in place, so backward allocates no logit-sized map (the documented one-map budget); the
    values are ``-w g``."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 1, 8, 8, generator=g).requires_grad_()
    hole = (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()
    map_bytes = z.numel() * z.element_size()
    grads: list[torch.Tensor] = []

    def backward(out: torch.Tensor, upstream: torch.Tensor) -> None:
        grads.append(torch.autograd.grad(out, z, upstream)[0])

    out = TF.scat_generator_hole(z, hole, "area", "hinge", "none")
    upstream = torch.rand(out.shape, generator=g) + 0.5
    backward(out, upstream)  # warm-up
    out = TF.scat_generator_hole(z, hole, "area", "hinge", "none")
    assert peak_memory_bytes(lambda: backward(out, upstream)) < map_bytes // 2
    want = -torch.nn.functional.avg_pool2d(hole, 2) * upstream
    for grad in grads:
        torch.testing.assert_close(grad, want, rtol=1e-6, atol=1e-7)
