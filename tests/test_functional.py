"""scatloss.functional: every loss against a reference written from its equation, plus the rules it obeys.

The references below are deliberately naive: float64, written straight from the paper's printed
equations (Eq. 1-7) or from the released code's formula quoted in NOTES, with explicit log/exp.
"""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import scatloss
import scatloss.functional as SF
from scatloss.testing import (
    EXTREME_LOGIT,
    check_batch_permutation_invariance,
    check_contrastive_gradient_direction,
    check_finite_on_degenerate_masks,
    contrastive_embeddings,
    feature_lists,
    hole_masks,
    image_batches,
    logit_maps,
)

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
KINDS = ("hinge", "bce", "ls")
RESAMPLES = ("area", "nearest", "max")
LOGIT_SIZE = (7, 11)
MASK_SIZES = ((7, 11), (14, 22), (21, 33))  # same size and integer factors 2 and 3 of an odd-sized logit map

# ----------------------------------------------------------------------------------------------------------------------
# references, straight from the equations
# ----------------------------------------------------------------------------------------------------------------------


def ref_resample(hole: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Block resampling for integer factors: area = block mean, max = block max, nearest = top-left pixel."""
    b, _, big_h, big_w = hole.shape
    h, w = size
    blocks = hole.to(F64).reshape(b, 1, h, big_h // h, w, big_w // w)
    if mode == "area":
        return blocks.mean(dim=(3, 5))
    if mode == "max":
        return blocks.amax(dim=(3, 5))
    return blocks[:, :, :, 0, :, 0]


def ref_eq1(fake: torch.Tensor, real: torch.Tensor, hole: torch.Tensor, kind: str, mode: str) -> torch.Tensor:
    """Eq. 1. bce: as printed, with m = valid = 1 - hole and m_bar = 1. hinge: the release's three means."""
    h = ref_resample(hole, fake.shape[-2:], mode)
    m = 1.0 - h
    if kind == "bce":
        # 1 - S(z) is written S(-z): the same number, without the cancellation that costs float64 ~1e-7
        # relative accuracy at |z| ~ 20 (hypothesis draws such logits)
        s_fake, s_real = torch.sigmoid(fake), torch.sigmoid(real)
        not_fake, not_real = torch.sigmoid(-fake), torch.sigmoid(-real)
        m_bar = torch.ones_like(real)
        fake_term = -(m * torch.log(s_fake) + (1 - m) * torch.log(not_fake)).mean()
        real_term = -(m_bar * torch.log(s_real) + (1 - m_bar) * torch.log(not_real)).mean()
        return fake_term + real_term
    if kind == "hinge":  # mean(relu(1 - S(x))) + mean(relu(1 - S(x-)) * valid) + mean(relu(1 + S(x-)) * hole)
        return torch.relu(1 - real).mean() + (torch.relu(1 - fake) * m).mean() + (torch.relu(1 + fake) * h).mean()
    # least squares with targets valid (fake) and 1 (real); for soft targets t the loss is t(z-1)^2 + (1-t)z^2,
    # which is the MSE (z - t)^2 plus the constant t(1 - t)
    return ((fake - m) ** 2 + m * (1 - m)).mean() + ((real - 1) ** 2).mean()


def ref_eq2(fake: torch.Tensor, hole: torch.Tensor, kind: str, region: str, mode: str) -> torch.Tensor:
    """Eq. 2 as printed for region="all" (target m_bar = 1); the release multiplies by the hole for "hole"."""
    if kind == "bce":
        per_pixel = -torch.log(torch.sigmoid(fake))
    elif kind == "hinge":
        per_pixel = -fake
    else:
        per_pixel = (fake - 1) ** 2
    if region == "hole":
        per_pixel = per_pixel * ref_resample(hole, fake.shape[-2:], mode)
    return per_pixel.mean()


def ref_eq3(anchor, positive, negative, eps: float, per_sample: bool) -> torch.Tensor:
    """Eq. 3 with d = L1: a sum over layers of d(a, p) / d(a, n)."""
    total = torch.zeros((), dtype=F64)
    for a, p, n in zip(anchor, positive, negative, strict=True):
        if per_sample:  # E over samples of the per-sample ratio (Eq. 3 as printed)
            ratios = []
            for i in range(a.shape[0]):
                num = (a[i] - p[i]).abs().sum() / a[i].numel()
                den = (a[i] - n[i]).abs().sum() / a[i].numel()
                ratios.append(num / (den + eps))
            total = total + sum(ratios) / len(ratios)
        else:  # the release: a ratio of batch means
            total = total + ((a - p).abs().sum() / a.numel()) / ((a - n).abs().sum() / a.numel() + eps)
    return total


def ref_eq4(anchor, positive, negatives, t: float, normalize: bool) -> torch.Tensor:
    """Eq. 4 with explicit exp and sum: -log(e^{a.p/t} / (e^{a.p/t} + sum_j e^{a.n_j/t})), per sample."""
    out = []
    for i in range(anchor.shape[0]):
        a, p, ns = anchor[i].to(F64), positive[i].to(F64), negatives[i].to(F64)
        if normalize:
            a, p = a / a.norm().clamp_min(1e-12), p / p.norm().clamp_min(1e-12)
            ns = ns / ns.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        pos = torch.exp(torch.dot(a, p) / t)
        neg = sum(torch.exp(torch.dot(a, n) / t) for n in ns)
        out.append(-torch.log(pos / (pos + neg)))
    return torch.stack(out)


def ref_eq6(fake, real, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 (bce as printed, non-saturating for G), hinge and least squares: (D loss, G loss)."""
    if kind == "bce":
        d = -torch.log(torch.sigmoid(real)).mean() - torch.log(torch.sigmoid(-fake)).mean()  # 1 - S(z) = S(-z)
        return d, -torch.log(torch.sigmoid(fake)).mean()
    if kind == "hinge":
        return torch.relu(1 - real).mean() + torch.relu(1 + fake).mean(), -fake.mean()
    return ((real - 1) ** 2).mean() + (fake**2).mean(), ((fake - 1) ** 2).mean()


def ref_eq7(prediction, image) -> torch.Tensor:
    return (prediction - image).abs().sum() / prediction.numel()


# ----------------------------------------------------------------------------------------------------------------------
# strategies shared by the tests in this file
# ----------------------------------------------------------------------------------------------------------------------


@st.composite
def scat_inputs(draw, mask_size=(14, 22), logit_size=LOGIT_SIZE, dtype=F64, extreme=False, bucket=None, batch=None):
    """fake logits, real logits, hole mask sharing one batch size."""
    b = draw(st.integers(1, 3)) if batch is None else batch
    fake = draw(logit_maps(b, *logit_size, extreme=extreme, dtype=dtype))
    real = draw(logit_maps(b, *logit_size, extreme=extreme, dtype=dtype))
    hole = draw(hole_masks(b, *mask_size, bucket=bucket, dtype=draw(st.sampled_from((dtype, torch.bool)))))
    return fake, real, hole


@st.composite
def infonce_inputs(draw, dtype=F64, batch=None, min_dim=1):
    batch = st.integers(1, 4) if batch is None else batch
    a, p, n = draw(contrastive_embeddings(batch, st.integers(1, 8), st.integers(min_dim, 12), dtype=dtype))
    return a, p, n


# ----------------------------------------------------------------------------------------------------------------------
# Eq. 1 / Eq. 2: SCAT equals its equation
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_size", MASK_SIZES, ids=lambda s: f"mask{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_scat_segmenter_loss_equals_eq1(kind, mask_size, data):
    fake, real, hole = data.draw(scat_inputs(mask_size))
    mode = data.draw(st.sampled_from(RESAMPLES))
    got = SF.scat_segmenter_loss(fake, real, hole, kind=kind, resample=mode)
    torch.testing.assert_close(got, ref_eq1(fake, real, hole, kind, mode), rtol=1e-10, atol=1e-10)


@given(scat_inputs(mask_size=(14, 22), bucket=None))
def test_scat_ls_is_mse_against_binary_targets(inputs):
    fake, real, hole = inputs
    m = 1.0 - ref_resample(hole, LOGIT_SIZE, "nearest")
    got = SF.scat_segmenter_loss(fake, real, hole, kind="ls", resample="nearest")
    want = ((fake - m) ** 2).mean() + ((real - 1) ** 2).mean()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mask_size", MASK_SIZES, ids=lambda s: f"mask{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_scat_generator_loss_equals_eq2(kind, mask_size, data):
    fake, _, hole = data.draw(scat_inputs(mask_size))
    mode = data.draw(st.sampled_from(RESAMPLES))
    region = data.draw(st.sampled_from(("hole", "all")))
    got = SF.scat_generator_loss(fake, hole, kind=kind, region=region, resample=mode)
    torch.testing.assert_close(got, ref_eq2(fake, hole, kind, region, mode), rtol=1e-10, atol=1e-10)


def test_scat_generator_default_is_the_release_hole_region():
    fake = torch.randn(2, 1, 7, 11, dtype=F64)
    hole = torch.zeros(2, 1, 7, 11, dtype=F64)
    hole[:, :, 2:5, 3:8] = 1
    torch.testing.assert_close(SF.scat_generator_loss(fake, hole), (-fake * hole).mean())


# ----------------------------------------------------------------------------------------------------------------------
# Eq. 3, 4, 6, 7 and the image helpers equal their equations
# ----------------------------------------------------------------------------------------------------------------------


@given(feature_lists(dtype=F64), st.booleans(), st.sampled_from((1e-7, 1e-300, 0.5)))  # eps = 0 is refused
def test_textural_contrastive_loss_equals_eq3(feats, per_sample, eps):
    a, p, n = feats
    got = SF.textural_contrastive_loss(a, p, n, eps=eps, per_sample=per_sample)
    torch.testing.assert_close(got, ref_eq3(a, p, n, eps, per_sample), rtol=1e-10, atol=1e-12)


@given(infonce_inputs(), st.sampled_from((0.07, 0.5, 1.0, 3.0)), st.booleans())
def test_semantic_contrastive_loss_equals_eq4_with_explicit_exp(inputs, t, normalize):
    a, p, n = inputs
    if not normalize:  # keep exp(a.n / t) representable for the naive reference
        a, p, n = a * 0.3, p * 0.3, n * 0.3
    got = SF.semantic_contrastive_loss(a, p, n, temperature=t, normalize=normalize, reduction="none")
    torch.testing.assert_close(got, ref_eq4(a, p, n, t, normalize), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
@given(logit_maps(dtype=F64), logit_maps(dtype=F64))
def test_adversarial_losses_equal_eq6(kind, fake, real):
    d_want, g_want = ref_eq6(fake, real, kind)
    torch.testing.assert_close(SF.adversarial_discriminator_loss(fake, real, kind=kind), d_want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(SF.adversarial_generator_loss(fake, kind=kind), g_want, rtol=1e-10, atol=1e-10)


def test_adversarial_losses_accept_global_logits_of_any_shape():
    fake, real = torch.randn(4, 1, dtype=F64), torch.randn(3, 1, dtype=F64)
    torch.testing.assert_close(SF.adversarial_discriminator_loss(fake, real), ref_eq6(fake, real, "hinge")[0])


@given(st.data())
def test_reconstruction_loss_equals_eq7(data):
    pred = data.draw(image_batches(st.integers(1, 3), 3, 7, 11, dtype=F64))
    image = data.draw(image_batches(pred.shape[0], 3, 7, 11, dtype=F64))
    torch.testing.assert_close(SF.reconstruction_loss(pred, image), ref_eq7(pred, image), rtol=1e-12, atol=1e-12)


@given(st.data())
def test_composite_and_corrupt_follow_the_paper_notation(data):
    b = data.draw(st.integers(1, 3))
    pred = data.draw(image_batches(b, 3, 7, 11, dtype=F64))
    image = data.draw(image_batches(b, 3, 7, 11, dtype=F64))
    hole = data.draw(hole_masks(b, 7, 11, dtype=data.draw(st.sampled_from((F64, torch.bool)))))
    m = 1.0 - hole.to(F64)  # the paper's mask: 1 = valid
    x_tilde = image * m  # the paper's corrupted input (fill 0)
    torch.testing.assert_close(SF.composite(pred, image, hole), (1 - m) * pred + m * x_tilde)
    torch.testing.assert_close(SF.corrupt(image, hole, fill=0.0), x_tilde)
    torch.testing.assert_close(SF.corrupt(image, hole), image * m + (1 - m))  # the release: holes filled with 1.0


@pytest.mark.parametrize("mask_dtype", [torch.float64, torch.float32, torch.bool])
@pytest.mark.parametrize("image_dtype", [torch.float32, torch.bfloat16])
def test_composite_and_corrupt_keep_the_image_dtype(image_dtype, mask_dtype):
    image = torch.rand(2, 3, 4, 4).to(image_dtype)
    hole = (torch.rand(2, 1, 4, 4) > 0.5).to(mask_dtype)
    assert SF.composite(image, image, hole).dtype == image_dtype
    assert SF.corrupt(image, hole).dtype == image_dtype


# ----------------------------------------------------------------------------------------------------------------------
# gradients (float64 gradcheck) and reductions
# ----------------------------------------------------------------------------------------------------------------------


def _leaf(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=F64) * scale).requires_grad_(True)


def _soft_hole(*shape):
    return torch.rand(*shape, dtype=F64).mul(0.8).add(0.1).requires_grad_(True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_scat_losses_pass_gradcheck(kind, reduction):
    torch.manual_seed(0)
    fake, real, hole = _leaf(2, 1, 3, 5, scale=2), _leaf(2, 1, 3, 5, scale=2), _soft_hole(2, 1, 6, 10)
    assert torch.autograd.gradcheck(
        lambda f, r, h: SF.scat_segmenter_loss(f, r, h, kind=kind, reduction=reduction), (fake, real, hole)
    )
    assert torch.autograd.gradcheck(
        lambda f, h: SF.scat_generator_loss(f, h, kind=kind, region="hole", reduction=reduction), (fake, hole)
    )
    assert torch.autograd.gradcheck(lambda f: SF.scat_generator_loss(f, hole, kind=kind, region="all"), (fake,))


@pytest.mark.parametrize("kind", KINDS)
def test_adversarial_losses_pass_gradcheck(kind):
    torch.manual_seed(1)
    fake, real = _leaf(3, 1, scale=2), _leaf(2, 1, 2, 2, scale=2)
    assert torch.autograd.gradcheck(lambda f, r: SF.adversarial_discriminator_loss(f, r, kind=kind), (fake, real))
    assert torch.autograd.gradcheck(lambda f: SF.adversarial_generator_loss(f, kind=kind), (fake,))


@pytest.mark.parametrize("per_sample", [False, True])
def test_textural_contrastive_loss_passes_gradcheck(per_sample):
    torch.manual_seed(2)
    leaves = [_leaf(2, 3, 4, 4), _leaf(2, 2, 2, 3)] + [_leaf(2, 3, 4, 4), _leaf(2, 2, 2, 3)] * 2
    leaves = [_leaf(*t.shape) for t in leaves]

    def fn(a0, a1, p0, p1, n0, n1):
        return SF.textural_contrastive_loss([a0, a1], [p0, p1], [n0, n1], per_sample=per_sample)

    assert torch.autograd.gradcheck(fn, tuple(leaves))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_semantic_contrastive_loss_passes_gradcheck(normalize, reduction):
    torch.manual_seed(3)
    a, p, n = _leaf(3, 5), _leaf(3, 5), _leaf(3, 4, 5)
    fn = lambda a, p, n: SF.semantic_contrastive_loss(  # noqa: E731
        a, p, n, temperature=0.5, normalize=normalize, reduction=reduction
    )
    assert torch.autograd.gradcheck(fn, (a, p, n))


def test_reconstruction_composite_corrupt_pass_gradcheck():
    torch.manual_seed(4)
    pred, image, hole = _leaf(2, 3, 3, 5), _leaf(2, 3, 3, 5), _soft_hole(2, 1, 3, 5)
    assert torch.autograd.gradcheck(lambda p, x: SF.reconstruction_loss(p, x, reduction="none"), (pred, image))
    assert torch.autograd.gradcheck(SF.composite, (pred, image, hole))
    assert torch.autograd.gradcheck(lambda x, h: SF.corrupt(x, h, fill=0.5), (image, hole))


@pytest.mark.parametrize("kind", KINDS)
@given(scat_inputs(dtype=torch.float32))
def test_scat_reductions_are_consistent(kind, inputs):
    fake, real, hole = inputs
    for name, fn in (
        ("segmenter", lambda r: SF.scat_segmenter_loss(fake, real, hole, kind=kind, reduction=r)),
        ("generator", lambda r: SF.scat_generator_loss(fake, hole, kind=kind, reduction=r)),
    ):
        none = fn("none")
        assert none.shape == fake.shape, name
        torch.testing.assert_close(fn("mean"), none.mean(), msg=name)
        torch.testing.assert_close(fn("sum"), none.sum(), msg=name)


@given(infonce_inputs(dtype=torch.float32))
def test_semantic_reductions_are_consistent(inputs):
    none = SF.semantic_contrastive_loss(*inputs, reduction="none")
    assert none.shape == (inputs[0].shape[0],)
    torch.testing.assert_close(SF.semantic_contrastive_loss(*inputs, reduction="mean"), none.mean())
    torch.testing.assert_close(SF.semantic_contrastive_loss(*inputs, reduction="sum"), none.sum())


@given(st.data())
def test_reconstruction_reductions_are_consistent(data):
    pred = data.draw(image_batches())
    image = data.draw(image_batches(pred.shape[0], pred.shape[1], pred.shape[2], pred.shape[3]))
    none = SF.reconstruction_loss(pred, image, reduction="none")
    assert none.shape == (pred.shape[0],)
    torch.testing.assert_close(SF.reconstruction_loss(pred, image, reduction="mean"), none.mean())
    torch.testing.assert_close(SF.reconstruction_loss(pred, image, reduction="sum"), none.sum())


# ----------------------------------------------------------------------------------------------------------------------
# properties
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@given(scat_inputs(dtype=torch.float32, extreme=True))
def test_scat_segmenter_loss_is_non_negative(kind, inputs):
    assert (SF.scat_segmenter_loss(*inputs, kind=kind, reduction="none") >= 0).all()


@given(feature_lists(), st.booleans())
def test_textural_loss_is_zero_when_anchor_equals_positive(feats, per_sample):
    a, _, n = feats
    assert SF.textural_contrastive_loss(a, [x.clone() for x in a], n, per_sample=per_sample) == 0


@given(image_batches(st.integers(1, 3), 3, 8, 8), st.booleans())
def test_textural_loss_is_zero_and_finite_for_identical_images(image, per_sample):
    """A hole-free mask makes composite == corrupted == ground truth: the loss is 0, gradients finite."""
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    hole = torch.zeros(image.shape[0], 1, 8, 8)
    pred = (torch.rand_like(image) * 2 - 1).requires_grad_(True)
    comp, corrupted = SF.composite(pred, image, hole), SF.corrupt(image, hole)
    assert torch.equal(comp, image) and torch.equal(corrupted, image)

    def feats(x):
        f1 = conv(x)
        return [f1, torch.relu(f1)]

    loss = SF.textural_contrastive_loss(feats(comp), feats(image), feats(corrupted), per_sample=per_sample)
    (grad,) = torch.autograd.grad(loss, pred)
    assert loss == 0
    assert torch.isfinite(grad).all()


@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 8), st.sampled_from((0.07, 1.0, 5.0)), st.booleans())
def test_infonce_is_log_1_plus_m_when_all_similarities_are_equal(b, m, d, t, normalize):
    g = torch.Generator().manual_seed(b * 100 + m * 10 + d)
    v = torch.randn(b, 1, d, generator=g, dtype=F64)
    if normalize:  # anchor == positive == every negative: all cosines are 1
        a, p, n = v[:, 0], v[:, 0].clone(), v.expand(b, m, d).clone()
    else:  # a zero anchor: all dot products are 0
        a, p, n = torch.zeros(b, d, dtype=F64), v[:, 0], torch.randn(b, m, d, generator=g, dtype=F64)
    got = SF.semantic_contrastive_loss(a, p, n, temperature=t, normalize=normalize, reduction="none")
    torch.testing.assert_close(got, torch.full((b,), math.log1p(m), dtype=F64))


@given(infonce_inputs(dtype=torch.float32), st.floats(0.01, 10.0), st.booleans(), st.floats(0.1, 100.0))
def test_infonce_is_non_negative(inputs, t, normalize, scale):
    a, p, n = (x * scale for x in inputs)
    assert (SF.semantic_contrastive_loss(a, p, n, temperature=t, normalize=normalize, reduction="none") >= 0).all()


@given(infonce_inputs(min_dim=2), st.sampled_from((0.1, 0.5, 1.0)))
def test_infonce_gradient_pulls_anchor_to_positive_and_pushes_from_negatives(inputs, t):
    a, p, n = inputs
    assume(SF.semantic_contrastive_loss(a, p, n, temperature=t) > 1e-6)
    check_contrastive_gradient_direction(lambda a, p, n: SF.semantic_contrastive_loss(a, p, n, temperature=t), a, p, n)


@given(infonce_inputs(min_dim=3), st.sampled_from((0.07, 0.5, 1.0)))
def test_infonce_gradient_moves_anchor_towards_positive_when_negatives_lie_beyond(inputs, t):
    """With every negative on the far side of the anchor from the positive, the step approaches the positive."""
    a, p, n = inputs
    a_hat = torch.nn.functional.normalize(a, dim=-1)
    p_hat = torch.nn.functional.normalize(p, dim=-1)
    u = p_hat - (p_hat * a_hat).sum(-1, keepdim=True) * a_hat  # positive's direction tangent to the anchor
    assume(bool((u.norm(dim=-1) > 1e-3).all()))
    u = torch.nn.functional.normalize(u, dim=-1).unsqueeze(1)
    along = (n * u).sum(-1, keepdim=True)
    n = n - along * u - along.abs() * u  # flip each negative's component along u to point away from the positive
    assume(SF.semantic_contrastive_loss(a, p, n, temperature=t) > 1e-6)
    fn = lambda a, p, n: SF.semantic_contrastive_loss(a, p, n, temperature=t)  # noqa: E731
    check_contrastive_gradient_direction(fn, a, p, n, strict=True)


@given(feature_lists(dtype=F64), st.booleans())
def test_textural_gradient_pulls_anchor_to_positive_and_pushes_from_negative(feats, per_sample):
    a, p, n = feats
    check_contrastive_gradient_direction(
        lambda a, p, n: SF.textural_contrastive_loss(a, p, n, per_sample=per_sample), a, p, n
    )
    # negatives beyond the anchor (elementwise on the far side from the positive): the step approaches the positive
    beyond = [x + (x - y).sign() * z.abs() for x, y, z in zip(a, p, n, strict=True)]
    check_contrastive_gradient_direction(
        lambda a, p, n: SF.textural_contrastive_loss(a, p, n, per_sample=per_sample), a, p, beyond, strict=True
    )


@pytest.mark.parametrize("kind", KINDS)
@given(scat_inputs(dtype=torch.float32, batch=3))
def test_scat_losses_are_invariant_to_batch_permutation(kind, inputs):
    fake, real, hole = inputs
    for reduction in ("mean", "none"):
        seg = functools.partial(SF.scat_segmenter_loss, kind=kind, reduction=reduction)
        gen = functools.partial(SF.scat_generator_loss, kind=kind, reduction=reduction)
        check_batch_permutation_invariance(seg, fake, real, hole)
        check_batch_permutation_invariance(gen, fake, hole)


@given(infonce_inputs(batch=st.integers(2, 4)), feature_lists(batch=3), st.booleans())
def test_contrastive_losses_are_invariant_to_batch_permutation(emb, feats, per_sample):
    check_batch_permutation_invariance(SF.semantic_contrastive_loss, *emb)
    check_batch_permutation_invariance(lambda *x: SF.semantic_contrastive_loss(*x, reduction="none"), *emb)
    check_batch_permutation_invariance(
        lambda a, p, n: SF.textural_contrastive_loss(a, p, n, per_sample=per_sample), *feats
    )


@given(st.data())
def test_adversarial_and_reconstruction_are_invariant_to_batch_permutation(data):
    fake, real = data.draw(logit_maps(3)), data.draw(logit_maps(3))
    pred, image = data.draw(image_batches(2, 3, 5, 5)), data.draw(image_batches(2, 3, 5, 5))
    check_batch_permutation_invariance(SF.adversarial_discriminator_loss, fake, real)
    check_batch_permutation_invariance(SF.adversarial_generator_loss, fake)
    check_batch_permutation_invariance(SF.reconstruction_loss, pred, image)


@pytest.mark.parametrize("kind", KINDS)
def test_scat_losses_are_finite_on_degenerate_masks(kind):
    shape = (3, 1, 7, 11)
    check_finite_on_degenerate_masks(
        lambda f, r, h: SF.scat_segmenter_loss(f, r, h, kind=kind), shape, shape, hole_size=(21, 33)
    )
    for region in ("hole", "all"):
        check_finite_on_degenerate_masks(
            lambda f, h, region=region: SF.scat_generator_loss(f, h, kind=kind, region=region),
            shape,
            hole_size=(14, 22),
        )


def test_image_losses_are_finite_on_degenerate_masks():
    def generator_side(pred, image, hole):
        comp, corrupted = SF.composite(pred, image, hole), SF.corrupt(image, hole)
        feats = lambda x: [x, torch.nn.functional.avg_pool2d(x, 2)]  # noqa: E731
        negatives = torch.stack([SF.corrupt(image, hole.roll(k, 0)) for k in range(image.shape[0])], 1)
        text = SF.textural_contrastive_loss(feats(comp), feats(image), feats(corrupted))
        text_ps = SF.textural_contrastive_loss(feats(comp), feats(image), feats(corrupted), per_sample=True)
        sem = SF.semantic_contrastive_loss(comp.flatten(1), image.flatten(1), negatives.flatten(2), temperature=1.0)
        return text + text_ps + sem + SF.reconstruction_loss(pred, image)

    check_finite_on_degenerate_masks(generator_side, (3, 3, 8, 8), (3, 3, 8, 8), scale=0.5, extreme=False)


@pytest.mark.parametrize("kind", KINDS)
@given(scat_inputs(dtype=torch.float32, extreme=True, mask_size=(14, 22)), st.sampled_from(("hole", "all")))
def test_scat_losses_are_finite_for_extreme_float32_logits(kind, inputs, region):
    fake, real, hole = (x.requires_grad_(True) if x.is_floating_point() and x is not inputs[2] else x for x in inputs)
    assert fake.abs().max() == EXTREME_LOGIT
    seg = SF.scat_segmenter_loss(fake, real, hole, kind=kind)
    gen = SF.scat_generator_loss(fake, hole, kind=kind, region=region)
    adv = SF.adversarial_discriminator_loss(fake, real, kind=kind) + SF.adversarial_generator_loss(fake, kind=kind)
    grads = torch.autograd.grad(seg + gen + adv, (fake, real))
    assert all(torch.isfinite(x).all() for x in (seg, gen, adv, *grads))


def test_infonce_is_finite_for_zero_and_huge_features():
    a = torch.zeros(2, 8, requires_grad=True)
    p, n = torch.randn(2, 8) * 1e4, torch.randn(2, 3, 8) * 1e-20
    loss = SF.semantic_contrastive_loss(a, p, n)
    (grad,) = torch.autograd.grad(loss, a)
    # a zero anchor makes every similarity 0: the loss is log(1 + M) exactly, M = 3 negatives
    torch.testing.assert_close(loss, torch.tensor(math.log1p(3)), rtol=1e-6, atol=0.0)
    assert torch.isfinite(grad).all()


# ----------------------------------------------------------------------------------------------------------------------
# reduced precision and torch.compile
# ----------------------------------------------------------------------------------------------------------------------


def _all_losses(fake, real, hole, a, p, n, fa, fp, fn, pred, image):
    return {
        "scat_d": SF.scat_segmenter_loss(fake, real, hole),
        "scat_d_bce": SF.scat_segmenter_loss(fake, real, hole, kind="bce"),
        "scat_g": SF.scat_generator_loss(fake, hole),
        "scat_g_all": SF.scat_generator_loss(fake, hole, kind="bce", region="all"),
        "adv_d": SF.adversarial_discriminator_loss(fake.mean((2, 3)), real.mean((2, 3))),
        "adv_g": SF.adversarial_generator_loss(fake.mean((2, 3))),
        "sem": SF.semantic_contrastive_loss(a, p, n),
        "text": SF.textural_contrastive_loss(fa, fp, fn),
        "rec": SF.reconstruction_loss(pred, image),
    }


def _example_inputs(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    hole = (torch.rand(3, 1, 14, 22, generator=g) < 0.4).float()
    feats = [[r(3, 4, 8, 8), r(3, 8, 4, 4)] for _ in range(3)]
    return (
        r(3, 1, 7, 11),
        r(3, 1, 7, 11),
        hole,
        r(3, 16),
        r(3, 16),
        r(3, 5, 16),
        *feats,
        r(3, 3, 14, 22),
        r(3, 3, 14, 22),
    )


def test_losses_run_under_bfloat16_autocast_close_to_float32():
    inputs = _example_inputs()
    want = _all_losses(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _all_losses(*inputs)
    for name, value in got.items():
        assert torch.isfinite(value), name
        torch.testing.assert_close(value.float(), want[name], rtol=2e-2, atol=2e-2, msg=name)


def test_losses_accept_bfloat16_inputs_close_to_float32():
    """Inputs as an autocast network would produce them (bf16 logits/features), gradients included."""
    inputs = _example_inputs(torch.bfloat16)
    leaves = [x.requires_grad_(True) if x.dtype == torch.bfloat16 else x for x in inputs[:6]]
    feats = [[t.requires_grad_(True) for t in layer] for layer in inputs[6:9]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _all_losses(*leaves, *feats, *inputs[9:])
    want = _all_losses(*(x.detach().float() for x in inputs[:6]), *([t.detach().float() for t in f] for f in feats),
                       *(x.float() for x in inputs[9:]))  # fmt: skip
    for name, value in got.items():
        assert torch.isfinite(value), name
        torch.testing.assert_close(value.float(), want[name], rtol=3e-2, atol=3e-2, msg=name)
    grads = torch.autograd.grad(sum(got.values()), [leaves[0], leaves[1], leaves[3], feats[0][0]])
    assert all(torch.isfinite(gr).all() and gr.dtype == torch.bfloat16 for gr in grads)


def test_losses_trace_without_graph_breaks():
    """Shape, dtype and option checks are trace-time Python; value checks are skipped while compiling."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(_all_losses)(*_example_inputs())
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_losses_match_eager_with_fullgraph():
    """One inductor compile: SCAT (segmenter and generator), InfoNCE and the textural loss, forward and backward."""
    torch._dynamo.reset()
    inputs = _example_inputs()

    def step(fake, real, hole, a, p, n, fa, fp, fn):
        return (
            SF.scat_segmenter_loss(fake, real, hole)
            + SF.scat_generator_loss(fake, hole)
            + SF.semantic_contrastive_loss(a, p, n)
            + SF.textural_contrastive_loss(fa, fp, fn)
        )

    def run(fn):
        leaves = [x.detach().clone().requires_grad_(x is not inputs[2]) for x in inputs[:6]]
        feats = [[t.detach().clone().requires_grad_(True) for t in layer] for layer in inputs[6:9]]
        loss = fn(*leaves, *feats)
        grads = torch.autograd.grad(loss, [leaves[0], leaves[1], leaves[3], feats[0][0], feats[2][1]])
        return loss, grads

    compiled = torch.compile(step, fullgraph=True)
    (l_eager, g_eager), (l_comp, g_comp) = run(step), run(compiled)
    torch.testing.assert_close(l_comp, l_eager, rtol=1e-5, atol=1e-5)
    for ge, gc in zip(g_eager, g_comp, strict=True):
        torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-6)


def test_value_checks_are_skipped_while_compiling():
    torch._dynamo.reset()
    fake, bad_hole = torch.randn(2, 1, 4, 4), torch.full((2, 1, 4, 4), 2.0)
    with pytest.raises(ValueError, match=r"hole: expected values in \[0, 1\]"):
        SF.scat_generator_loss(fake, bad_hole)
    compiled = torch.compile(lambda f, h: SF.scat_generator_loss(f, h), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(fake, bad_hole), (-fake * 2.0).mean())


# ----------------------------------------------------------------------------------------------------------------------
# bad input: errors name the argument, what was expected and what arrived
# ----------------------------------------------------------------------------------------------------------------------

Z = torch.zeros(2, 1, 4, 4)
H = torch.zeros(2, 1, 8, 8)
A, P, N = torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 3, 8)
L = [torch.zeros(2, 3, 4, 4)]
IMG = torch.zeros(2, 3, 8, 8)

BAD_INPUTS = {
    "batch size mismatch (hole)": (
        lambda: SF.scat_segmenter_loss(Z, Z, torch.zeros(3, 1, 8, 8)),
        ValueError,
        r"hole: expected batch size 2 .*got 3",
    ),
    "batch size mismatch (logits)": (
        lambda: SF.scat_segmenter_loss(Z, torch.zeros(3, 1, 4, 4), H),
        ValueError,
        r"real_logits: expected the same shape as fake_logits \(2, 1, 4, 4\), got \(3, 1, 4, 4\)",
    ),
    "batch size mismatch (infonce)": (
        lambda: SF.semantic_contrastive_loss(A, torch.zeros(3, 8), N),
        ValueError,
        r"batch size mismatch: expected the same batch size .*anchor has 2, positive has 3, negatives has 2",
    ),
    "batch size mismatch (composite)": (
        lambda: SF.composite(IMG, IMG, torch.zeros(3, 1, 8, 8)),
        ValueError,
        r"hole: expected batch size 2 .*got 3",
    ),
    "hole with 3 channels": (
        lambda: SF.scat_generator_loss(Z, torch.zeros(2, 3, 8, 8)),
        ValueError,
        r"hole: expected shape \(B, 1, H, W\) with one channel.*got shape \(2, 3, 8, 8\)",
    ),
    "hole above 1": (
        lambda: SF.scat_generator_loss(Z, torch.full((2, 1, 8, 8), 2.0)),
        ValueError,
        r"hole: expected values in \[0, 1\].*got values in \[2, 2\]",
    ),
    "hole below 0": (
        lambda: SF.scat_segmenter_loss(Z, Z, H - 0.5),
        ValueError,
        r"hole: expected values in \[0, 1\].*got values in \[-0.5, -0.5\]",
    ),
    "hole with NaN": (
        lambda: SF.corrupt(IMG, torch.full((2, 1, 8, 8), float("nan"))),
        ValueError,
        r"hole: expected values in \[0, 1\].*got values in \[nan, nan\]",
    ),
    "integer hole": (
        lambda: SF.scat_generator_loss(Z, H.long()),
        TypeError,
        r"hole: expected a float or bool tensor.*got dtype torch.int64",
    ),
    "hole not a tensor": (
        lambda: SF.scat_generator_loss(Z, H.numpy()),
        TypeError,
        r"hole: expected a float or bool torch.Tensor.*got ndarray",
    ),
    "integer logits": (
        lambda: SF.scat_segmenter_loss(Z.long(), Z, H),
        TypeError,
        r"fake_logits: expected a floating-point tensor .*got dtype torch.int64",
    ),
    "integer global logits": (
        lambda: SF.adversarial_generator_loss(torch.zeros(2, 1, dtype=torch.int32)),
        TypeError,
        r"fake_logits: expected a floating-point tensor .*got dtype torch.int32",
    ),
    "logits with 2 channels": (
        lambda: SF.scat_generator_loss(torch.zeros(2, 2, 4, 4), H),
        ValueError,
        r"fake_logits: expected a per-pixel logit map of shape \(B, 1, h, w\), got shape \(2, 2, 4, 4\)",
    ),
    "3-D logits": (
        lambda: SF.scat_generator_loss(torch.zeros(2, 4, 4), H),
        ValueError,
        r"fake_logits: expected a 4-D tensor, got shape \(2, 4, 4\)",
    ),
    "empty global logits": (
        lambda: SF.adversarial_discriminator_loss(torch.zeros(0, 1), torch.zeros(2, 1)),
        ValueError,
        r"fake_logits: expected a non-empty batch \(B >= 1\), got shape \(0, 1\)",
    ),
    "unknown kind": (
        lambda: SF.scat_segmenter_loss(Z, Z, H, kind="wgan"),
        ValueError,
        r"kind: expected one of 'hinge', 'bce', 'ls', got 'wgan'",
    ),
    "unknown kind (adversarial)": (
        lambda: SF.adversarial_generator_loss(Z, kind="Hinge"),
        ValueError,
        r"kind: expected one of .*got 'Hinge'",
    ),
    "unknown region": (
        lambda: SF.scat_generator_loss(Z, H, region="valid"),
        ValueError,
        r"region: expected one of 'hole', 'all', got 'valid'",
    ),
    "unknown resample": (
        lambda: SF.scat_generator_loss(Z, H, resample="bilinear"),
        ValueError,
        r"resample: expected one of 'area', 'nearest', 'max', got 'bilinear'",
    ),
    "unknown reduction": (
        lambda: SF.scat_segmenter_loss(Z, Z, H, reduction="avg"),
        ValueError,
        r"reduction: expected one of 'mean', 'sum', 'none', got 'avg'",
    ),
    "unknown reduction (infonce)": (
        lambda: SF.semantic_contrastive_loss(A, P, N, reduction=None),
        ValueError,
        r"reduction: expected one of .*got None",
    ),
    "unknown reduction (reconstruction)": (
        lambda: SF.reconstruction_loss(IMG, IMG, reduction="max"),
        ValueError,
        r"reduction: expected one of .*got 'max'",
    ),
    "unknown backend": (
        lambda: SF.scat_generator_loss(Z, H, backend="cuda"),
        ValueError,
        r"backend: expected one of 'auto', 'torch', 'triton', got 'cuda'",
    ),
    "temperature zero": (
        lambda: SF.semantic_contrastive_loss(A, P, N, temperature=0.0),
        ValueError,
        r"temperature: expected a positive float \(finite, 1 / t finite in float32\), got 0.0",
    ),
    "temperature negative": (
        lambda: SF.semantic_contrastive_loss(A, P, N, temperature=-1),
        ValueError,
        r"temperature: expected a positive float .*, got -1",
    ),
    "temperature NaN": (
        lambda: SF.semantic_contrastive_loss(A, P, N, temperature=float("nan")),
        ValueError,
        r"temperature: expected a positive float .*, got nan",
    ),
    "temperature not a number": (
        lambda: SF.semantic_contrastive_loss(A, P, N, temperature="0.07"),
        TypeError,
        r"temperature: expected a positive float .*, got str '0.07'",
    ),
    "negatives not 3-D": (
        lambda: SF.semantic_contrastive_loss(A, P, torch.zeros(2, 8)),
        ValueError,
        r"negatives: expected a 3-D tensor, got shape \(2, 8\)",
    ),
    "negatives of another feature size": (
        lambda: SF.semantic_contrastive_loss(A, P, torch.zeros(2, 3, 5)),
        ValueError,
        r"negatives: expected feature size D=8 .*got shape \(2, 3, 5\)",
    ),
    "no negatives": (
        lambda: SF.semantic_contrastive_loss(A, P, torch.zeros(2, 0, 8)),
        ValueError,
        r"negatives: expected at least one negative .*got M = 0",
    ),
    "anchor not 2-D": (
        lambda: SF.semantic_contrastive_loss(torch.zeros(2, 8, 1), P, N),
        ValueError,
        r"anchor: expected a 2-D tensor, got shape \(2, 8, 1\)",
    ),
    "positive of another shape": (
        lambda: SF.semantic_contrastive_loss(A, torch.zeros(2, 7), N),
        ValueError,
        r"positive: expected shape \(2, 8\) like anchor, got \(2, 7\)",
    ),
    "feature lists of different lengths": (
        lambda: SF.textural_contrastive_loss(L, L, L * 2),
        ValueError,
        r"feature lists: expected the same number of layers in each, got .*negative_feats has 2",
    ),
    "feature lists of different shapes": (
        lambda: SF.textural_contrastive_loss(L, [torch.zeros(2, 3, 4, 5)], L),
        ValueError,
        r"feature lists: layer 0 expected the same shape .*positive \(2, 3, 4, 5\)",
    ),
    "feature list is a tensor": (
        lambda: SF.textural_contrastive_loss(L[0], L, L),
        TypeError,
        r"anchor_feats: expected a sequence .*got tensor of shape \(2, 3, 4, 4\)",
    ),
    "empty feature lists": (
        lambda: SF.textural_contrastive_loss([], [], []),
        ValueError,
        r"anchor_feats: expected at least one layer, got an empty sequence",
    ),
    "integer features": (
        lambda: SF.textural_contrastive_loss(L, L, [L[0].long()]),
        TypeError,
        r"negative_feats\[0\]: expected a floating-point tensor .*got dtype torch.int64",
    ),
    "negative eps": (
        lambda: SF.textural_contrastive_loss(L, L, L, eps=-1e-7),
        ValueError,
        r"eps: expected a finite number > 0, got -1e-07",
    ),
    "prediction of another shape": (
        lambda: SF.reconstruction_loss(torch.zeros(2, 3, 8, 7), IMG),
        ValueError,
        r"prediction: expected the shape of image \(2, 3, 8, 8\), got \(2, 3, 8, 7\)",
    ),
    "hole of another size than the image": (
        lambda: SF.composite(IMG, IMG, torch.zeros(2, 1, 4, 4)),
        ValueError,
        r"hole: expected the spatial size of image \(8, 8\), got \(4, 4\)",
    ),
    "fill not a number": (
        lambda: SF.corrupt(IMG, H, fill="white"),
        TypeError,
        r"fill: expected a finite float, got str 'white'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_error_names_argument_expected_and_received(case):
    fn, exc, pattern = BAD_INPUTS[case]
    with pytest.raises(exc, match=pattern):
        fn()


def test_value_checks_can_be_switched_off_and_back_on():
    bad = torch.full((2, 1, 8, 8), 2.0)
    nan = torch.full((2, 1, 8, 8), float("nan"))
    scatloss.set_value_checks(False)
    assert not scatloss.value_checks_enabled()
    SF.scat_generator_loss(Z, bad)  # passes silently
    SF.scat_generator_loss(Z, nan)
    with pytest.raises(ValueError, match=r"hole: expected shape"):  # shape checks still run
        SF.scat_generator_loss(Z, torch.zeros(2, 3, 8, 8))
    scatloss.set_value_checks(True)
    assert scatloss.value_checks_enabled()
    with pytest.raises(ValueError, match=r"hole: expected values in \[0, 1\]"):
        SF.scat_generator_loss(Z, bad)


def test_value_checks_context_manager_restores_the_flag():
    bad = torch.full((2, 1, 8, 8), -1.0)
    with scatloss.value_checks(False):
        SF.scat_segmenter_loss(Z, Z, bad)
        with scatloss.value_checks(True), pytest.raises(ValueError, match=r"hole: expected values"):
            SF.scat_segmenter_loss(Z, Z, bad)
        assert not scatloss.value_checks_enabled()  # the inner block restored the outer setting
    assert scatloss.value_checks_enabled()
    with pytest.raises(RuntimeError, match="boom"), scatloss.value_checks(False):
        raise RuntimeError("boom")
    assert scatloss.value_checks_enabled()  # restored after an exception too
    with pytest.raises(ValueError, match=r"hole: expected values"):
        SF.scat_segmenter_loss(Z, Z, bad)


def test_set_value_checks_rejects_non_bool():
    with pytest.raises(TypeError, match=r"enabled: expected a bool, got int"):
        scatloss.set_value_checks(0)
    with pytest.raises(TypeError, match=r"enabled: expected a bool, got str"), scatloss.value_checks("off"):
        pass


_SUBPROCESS_BAD_INPUTS = """
import torch, scatloss.functional as SF
cases = [
    lambda: SF.scat_generator_loss(torch.zeros(2, 1, 4, 4), torch.full((2, 1, 8, 8), 2.0)),
    lambda: SF.scat_segmenter_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 8, 8)),
    lambda: SF.semantic_contrastive_loss(torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 8)),
    lambda: SF.semantic_contrastive_loss(torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 3, 8), temperature=0.0),
    lambda: SF.textural_contrastive_loss([torch.zeros(2, 3)], [torch.zeros(2, 3)], []),
    lambda: SF.scat_generator_loss(torch.zeros(2, 1, 4, 4, dtype=torch.int64), torch.zeros(2, 1, 4, 4)),
]
for case in cases:
    try:
        case()
    except (TypeError, ValueError) as err:
        print(type(err).__name__, str(err).split(":")[0])
    else:
        print("no error")
"""


def test_validation_survives_python_O():
    """The checks are not asserts: python -O raises the same errors."""
    out = subprocess.run(
        [sys.executable, "-O", "-c", "assert False, 'asserts are on'\n" + _SUBPROCESS_BAD_INPUTS],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    assert out == [
        "ValueError hole",
        "ValueError hole",
        "ValueError negatives",
        "ValueError temperature",
        "ValueError negative_feats",
        "TypeError fake_logits",
    ]


def test_value_checks_are_off_when_the_environment_says_so():
    code = (
        "import torch, scatloss.functional as SF\n"
        "print(SF.scat_generator_loss(-torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)).item())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "SCATLOSS_CHECK_VALUES": "0"},
    ).stdout
    assert float(out) == 2.0


def test_package_source_has_no_assert_statements():
    root = Path(scatloss.__file__).parent
    offenders = [
        f"{path.relative_to(root.parent)}:{lineno}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "testing.py"
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.match(r"^\s*assert ", line)
    ]
    assert not offenders, "validation must raise ValueError/TypeError, not assert:\n" + "\n".join(offenders)
