"""Tests pinning behaviour that mutation testing found unchecked in s4b (functional, masks, criterion, ops)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from scatloss import functional as F
from scatloss import ops
from scatloss.criterion import SCATCriterion
from scatloss.masks import MaskGenerator
from scatloss.ops._triton_common import next_pow2


def test_release_preset_global_output_is_zero():
    """``SCATCriterion.release`` reads the global logits from output 0 (pixel logits from 1)."""
    crit = SCATCriterion.release(nn.Conv2d(3, 1, 3))
    assert crit.global_output == 0
    assert crit.pixel_output == 1


def test_segmenter_loss_empty_batch_names_fake_logits():
    """An empty batch of logits is reported under the argument's name."""
    empty = torch.zeros(0, 1, 4, 4)
    with pytest.raises(ValueError, match=r"^fake_logits: expected a non-empty batch"):
        F.scat_segmenter_loss(empty, empty, torch.zeros(0, 1, 4, 4), backend="torch")


@pytest.mark.parametrize("bad", [None, torch.zeros(2, dtype=torch.long)])
def test_discriminator_loss_bad_real_logits_named(bad):
    """A non-float ``real_logits`` raises a TypeError naming ``real_logits``."""
    with pytest.raises(TypeError, match=r"^real_logits: "):
        F.adversarial_discriminator_loss(torch.zeros(2), bad)


def test_semantic_contrastive_negatives_on_other_device():
    """Negatives on another device than the anchor are rejected as a device mismatch."""
    a = torch.randn(2, 4)
    n = torch.randn(2, 3, 4, device="meta")
    with pytest.raises(ValueError, match=r"^device mismatch"):
        F.semantic_contrastive_loss(a, a.clone(), n)


def test_composite_prediction_wrong_ndim_message():
    """A 3-D prediction is reported by the ndim check (``expected a 4-D tensor``), not as a shape mismatch."""
    image = torch.zeros(1, 3, 4, 4)
    hole = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"^prediction: expected a 4-D tensor"):
        F.composite(torch.zeros(3, 4, 4), image, hole)


def test_mask_sample_uses_given_generator():
    """``sample(generator=g)`` draws from ``g``: equal seeds give equal masks and ``g`` advances."""
    mg = MaskGenerator(16, 16, seed=0)
    g1 = torch.Generator().manual_seed(123)
    g2 = torch.Generator().manual_seed(123)
    before = g1.get_state().clone()
    torch.manual_seed(1)
    m1 = mg.sample(3, generator=g1)
    torch.manual_seed(2)
    m2 = mg.sample(3, generator=g2)
    assert torch.equal(m1, m2)
    assert not torch.equal(g1.get_state(), before)


def test_mask_load_state_dict_restores_seed():
    """``load_state_dict`` restores the saved seed (visible in ``seed`` and the next ``state_dict``)."""
    src = MaskGenerator(8, 8, seed=7)
    dst = MaskGenerator(8, 8, seed=3)
    dst.load_state_dict(src.state_dict())
    assert dst.seed == 7
    assert dst.state_dict()["seed"] == 7


def test_resolve_backend_torch_is_lowercase():
    """``ops.resolve_backend("torch", ...)`` returns exactly ``"torch"``."""
    assert ops.resolve_backend("torch", torch.zeros(1)) == "torch"


@pytest.mark.parametrize(("n", "want"), [(0, 1), (1, 1), (2, 2), (3, 4), (4, 4), (5, 8)])
def test_next_pow2(n, want):
    """``next_pow2`` is the smallest power of two >= n (1 for n <= 1)."""
    assert next_pow2(n) == want


def test_segmenter_loss_mixed_dtypes_adds_real_term():
    """float32 fake and float64 real logits: the real term is added (hinge, no hole): relu(1 - zf) + relu(1 - zr)."""
    zf = torch.tensor([[[[0.5]]]], dtype=torch.float32)
    zr = torch.tensor([[[[0.25]]]], dtype=torch.float64)
    hole = torch.zeros(1, 1, 1, 1)
    # t = 1 (known pixel): fake pixel counts as real, l+(zf) = relu(1 - 0.5) = 0.5; l+(zr) = relu(1 - 0.25) = 0.75
    loss = F.scat_segmenter_loss(zf, zr, hole, kind="hinge", backend="torch")
    assert float(loss) == pytest.approx(1.25)


def test_generator_ls_grad_zero_outside_hole_for_huge_logits():
    """ls generator gradient is exactly 0 at non-hole pixels even when 2 (z - 1) overflows (z = 3e38, float32)."""
    z = torch.tensor([[[[3e38, 0.5]]]], dtype=torch.float32, requires_grad=True)
    hole = torch.tensor([[[[0.0, 1.0]]]])
    F.scat_generator_loss(z, hole, kind="ls", region="hole", resample="nearest", backend="torch").backward()
    assert z.grad[0, 0, 0, 0].item() == 0.0
    # hole pixel: d/dz (z - 1)^2 / (B h w) = 2 (0.5 - 1) / 2 = -0.5
    assert z.grad[0, 0, 0, 1].item() == pytest.approx(-0.5)


needs_triton_cpu = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or not ops._interpreting(),
    reason="needs triton with TRITON_INTERPRET=1",
)


@needs_triton_cpu
def test_ops_infonce_default_reduction_is_mean():
    """``ops.infonce.semantic_contrastive_loss`` defaults to the batch mean of the per-row InfoNCE losses."""
    from scatloss.ops import infonce

    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((2, 4), (2, 4), (2, 3, 4)))
    an, pn, nn_ = (x / x.norm(dim=-1, keepdim=True) for x in (a, p, n))
    logits = torch.cat([(an * pn).sum(-1, keepdim=True), (nn_ * an.unsqueeze(1)).sum(-1)], dim=1) / 0.07
    want = (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
    got = infonce.semantic_contrastive_loss(a, p, n)
    assert got.shape == ()
    assert float(got) == pytest.approx(float(want), rel=1e-9)


@needs_triton_cpu
def test_triton_segmenter_loss_zero_width_logits():
    """The fused kernels' layer (:mod:`scatloss.ops.scat`, validated inputs) on a zero-width logit map: an empty
    per-pixel loss (no resampling, no error). The functional API refuses such a map by name."""
    from scatloss.ops import scat as fused

    z = torch.zeros(1, 1, 2, 0)
    out = fused.scat_segmenter_loss(z, z, torch.zeros(1, 1, 4, 4), reduction="none")
    assert out.shape == (1, 1, 2, 0)
    with pytest.raises(ValueError, match="^fake_logits: expected a logit map with at least one row and one column"):
        F.scat_segmenter_loss(z, z, torch.zeros(1, 1, 4, 4), backend="triton", reduction="none")


def test_reconstruction_mean_is_one_mean_over_all_elements():
    """``reduction="mean"`` divides the exact total by B C H W once: |err| rows (1,0,0), (1,0,0), (3,0,0) give 5/9
    correctly rounded (a mean of per-sample means rounds twice and gives 0.5555555555555555)."""
    pred = torch.tensor([[v, 0.0, 0.0] for v in (1.0, 1.0, 3.0)], dtype=torch.float64).view(3, 1, 1, 3)
    loss = F.reconstruction_loss(pred, torch.zeros_like(pred))
    assert loss.item() == 5 / 9
