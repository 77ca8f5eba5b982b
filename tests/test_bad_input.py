"""Bad and extreme inputs at the public API (issue 13): each gets a named error or a correct result.

Covers, item by item: InfoNCE with huge (and tiny) norms in every backend, the least-squares generator term with
an overflowing masked-out logit, option validation (NaN / infinite / zero / non-number options), one error for an
empty batch, ``resample_hole``'s mask and size checks, the LaMa adapter's patch-map shape, the objective's hole
check, meta tensors (shape inference works; mixed with CPU tensors a named error), the criterion's boundary
checks (inverted mask, image range, swapped arguments, dtype and device against D) with their off switch, and
"check once": one device-to-host read per step whatever the path.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import scatloss
import scatloss.functional as SF
from scatloss import _validation
from scatloss.masks import MaskGenerator, resample_hole
from scatloss.nets import UNetDiscriminator, UNetSegmenter
from scatloss.ops import _interpreting, triton_available

BACKENDS = ["torch"] + (["triton"] if triton_available() and _interpreting() else [])


def _infonce_f64(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor, t: float) -> torch.Tensor:
    """Eq. 4 in float64 with F.normalize: independent of scatloss (float64 norms overflow only past 1e154)."""
    a, p, n = (F.normalize(x.double(), dim=-1) for x in (a, p, n))
    logits = torch.cat([(a * p).sum(-1, keepdim=True), torch.einsum("bd,bmd->bm", a, n)], dim=1) / t
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


# ----------------------------------------------------------------------------------------------------------------------
# InfoNCE: huge and tiny norms (silent wrong before: the norm overflowed and the vector normalised to 0)
# ----------------------------------------------------------------------------------------------------------------------


def test_infonce_of_the_issue_example_is_scale_invariant() -> None:
    g = torch.Generator().manual_seed(0)
    a, p, n = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g), torch.randn(4, 8, 16, generator=g)
    want = _infonce_f64(a, p, n, 0.07)
    for backend in BACKENDS:
        got = SF.semantic_contrastive_loss(a * 1e20, p, n, backend=backend)  # type: ignore[arg-type]
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@given(
    exponents=st.tuples(*[st.integers(-35, 37)] * 3),
    seed=st.integers(0, 2**16),
    temperature=st.sampled_from([0.07, 1.0]),
)
@settings(max_examples=15)
def test_infonce_matches_a_float64_reference_at_any_scale(backend, dtype, exponents, seed, temperature) -> None:
    g = torch.Generator().manual_seed(seed)
    ea, ep, en = (10.0**e for e in exponents)
    a = (torch.randn(3, 8, generator=g) * ea).to(dtype)
    p = (torch.randn(3, 8, generator=g) * ep).to(dtype)
    n = (torch.randn(3, 5, 8, generator=g) * en).to(dtype)
    assert torch.isfinite(a).all() and torch.isfinite(p).all() and torch.isfinite(n).all()
    got = SF.semantic_contrastive_loss(a, p, n, temperature=temperature, backend=backend)
    want = _infonce_f64(a, p, n, temperature)  # the same (rounded) inputs, in float64
    # tolerance: float32 cosines (|err| ~ 1e-6) divided by t
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=2e-5 / temperature)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e20, 1e30, 1e-25])
def test_infonce_gradient_at_huge_and_tiny_scale_matches_float64(backend: str, scale: float) -> None:
    g = torch.Generator().manual_seed(1)
    base = [torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g), torch.randn(3, 4, 8, generator=g)]
    if scale < 1e-12:  # below F.normalize's eps the vectors are not unit length: the reference says what is right
        base[0] = base[0] * 1e-8
    x32 = [(b * scale).requires_grad_() for b in base]
    x64 = [(b.double() * scale).requires_grad_() for b in base]
    loss32 = SF.semantic_contrastive_loss(*x32, temperature=0.5, backend=backend)  # type: ignore[arg-type]
    a, p, n = (F.normalize(x, dim=-1) for x in x64)
    logits = torch.cat([(a * p).sum(-1, keepdim=True), torch.einsum("bd,bmd->bm", a, n)], dim=1) / 0.5
    loss64 = (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
    torch.testing.assert_close(loss32.double(), loss64, rtol=1e-5, atol=1e-6)
    g32 = torch.autograd.grad(loss32, x32)
    g64 = torch.autograd.grad(loss64, x64)
    for got, want in zip(g32, g64, strict=True):
        assert torch.isfinite(got).all()
        # gradients scale as 1 / scale: compare them rescaled
        torch.testing.assert_close(got.double() * scale, want * scale, rtol=1e-4, atol=1e-4)  # float32 round-off


# ----------------------------------------------------------------------------------------------------------------------
# Least-squares generator term: a masked-out logit whose square overflows (silent NaN before: inf * 0)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the Triton interpreter evaluates both sides of tl.where
@pytest.mark.parametrize("backend", BACKENDS)
@given(exponent=st.integers(19, 38), mantissa=st.floats(1.0, 3.0), sign=st.sampled_from([1.0, -1.0]))
@settings(max_examples=10)
def test_ls_generator_term_ignores_a_huge_logit_outside_the_hole(backend, exponent, mantissa, sign) -> None:
    value = sign * mantissa * 10.0**exponent
    if not math.isfinite(torch.tensor(value, dtype=torch.float32).item()):
        return  # beyond float32: not a finite logit
    g = torch.Generator().manual_seed(exponent)
    z = torch.randn(2, 1, 8, 8, generator=g)
    hole = torch.zeros(2, 1, 8, 8)
    hole[:, :, 2:6, 2:6] = 1.0
    want = SF.scat_generator_loss(z, hole, kind="ls", backend="torch")
    z_huge = z.clone()
    z_huge[0, 0, 0, 0] = value  # a known pixel: weight 0
    got = SF.scat_generator_loss(z_huge.requires_grad_(), hole, kind="ls", backend=backend)  # type: ignore[arg-type]
    torch.testing.assert_close(got, want)
    (grad,) = torch.autograd.grad(got, z_huge)
    assert torch.isfinite(grad).all() and grad[0, 0, 0, 0] == 0


def test_reference_ls_generator_term_selects_too() -> None:
    from scatloss import reference as R

    z = torch.zeros(1, 1, 2, 2)
    z[0, 0, 0, 0] = 1e20
    w = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    assert R.scat_generator_loss(z, w, "ls", "sum").item() == 3.0  # three (0 - 1)^2 terms, the huge one selected out


# ----------------------------------------------------------------------------------------------------------------------
# Options: every float option finite and in range, a named error otherwise
# ----------------------------------------------------------------------------------------------------------------------

IMG = torch.rand(2, 3, 8, 8) * 2 - 1
HOLE = torch.zeros(2, 1, 8, 8)
HOLE[:, :, 2:6, 2:6] = 1.0
FEATS = [torch.randn(2, 3, 4, 4)]
VEC, NEGS = torch.randn(2, 6), torch.randn(2, 3, 6)

BAD_OPTIONS = {
    "textural eps nan": (lambda: SF.textural_contrastive_loss(FEATS, FEATS, FEATS, eps=math.nan), ValueError, "eps"),
    "textural eps zero": (lambda: SF.textural_contrastive_loss(FEATS, FEATS, FEATS, eps=0.0), ValueError, "eps"),
    "textural eps inf": (lambda: SF.textural_contrastive_loss(FEATS, FEATS, FEATS, eps=math.inf), ValueError, "eps"),
    "textural eps str": (lambda: SF.textural_contrastive_loss(FEATS, FEATS, FEATS, eps="1e-7"), TypeError, "eps"),
    "module eps nan": (lambda: scatloss.TexturalContrastiveLoss(eps=math.nan), ValueError, "eps"),
    "fill nan": (lambda: SF.corrupt(IMG, HOLE, fill=math.nan), ValueError, "fill"),
    "fill inf": (lambda: SF.corrupt(IMG, HOLE, fill=-math.inf), ValueError, "fill"),
    "fill white": (lambda: SF.corrupt(IMG, HOLE, fill="white"), TypeError, "fill"),  # type: ignore[arg-type]
    "criterion fill white": (
        lambda: scatloss.SCATCriterion(UNetDiscriminator(base_channels=4, depth=2), fill="white"),  # type: ignore[arg-type]
        TypeError,
        "fill",
    ),
    "criterion fill nan": (
        lambda: scatloss.SCATCriterion(UNetDiscriminator(base_channels=4, depth=2), fill=math.nan),
        ValueError,
        "fill",
    ),
    "temperature 1e-45": (lambda: SF.semantic_contrastive_loss(VEC, VEC, NEGS, temperature=1e-45), ValueError, "temp"),
    "temperature nan": (lambda: SF.semantic_contrastive_loss(VEC, VEC, NEGS, temperature=math.nan), ValueError, "temp"),
    "temperature inf": (lambda: SF.semantic_contrastive_loss(VEC, VEC, NEGS, temperature=math.inf), ValueError, "temp"),
    "module temperature": (lambda: scatloss.SemanticContrastiveLoss(temperature=1e-45), ValueError, "temperature"),
    "lambda_adv inf": (lambda: scatloss.InpaintingObjective(lambda_adv=math.inf), ValueError, "lambda_adv"),
    "lambda_text nan": (lambda: scatloss.InpaintingObjective(lambda_text=math.nan), ValueError, "lambda_text"),
    "lambda_sem inf": (lambda: scatloss.InpaintingObjective(lambda_sem=math.inf), ValueError, "lambda_sem"),
    "lambda_rec str": (lambda: scatloss.InpaintingObjective(lambda_rec="10"), TypeError, "lambda_rec"),  # type: ignore[arg-type]
    "objective eps zero": (lambda: scatloss.InpaintingObjective(eps=0.0), ValueError, "eps"),
    "criterion image_range": (
        lambda: scatloss.SCATCriterion(UNetDiscriminator(base_channels=4, depth=2), image_range=(1.0, -1.0)),
        ValueError,
        "image_range",
    ),
    "normalize str": (lambda: SF.semantic_contrastive_loss(VEC, VEC, NEGS, normalize="no"), TypeError, "normalize"),  # type: ignore[arg-type]
    "per_sample int": (
        lambda: SF.textural_contrastive_loss(FEATS, FEATS, FEATS, per_sample=1),
        TypeError,
        "per_sample",
    ),  # type: ignore[arg-type]
    "module normalize": (lambda: scatloss.SemanticContrastiveLoss(normalize="no"), TypeError, "normalize"),  # type: ignore[arg-type]
    "criterion freeze_discriminator": (
        lambda: scatloss.SCATCriterion(UNetDiscriminator(base_channels=4, depth=2), freeze_discriminator="yes"),  # type: ignore[arg-type]
        TypeError,
        "freeze_discriminator",
    ),
    "mask generator state": (
        lambda: MaskGenerator(8, 8).load_state_dict({**MaskGenerator(8, 8).state_dict(), "height": "eight"}),
        TypeError,
        "state",
    ),
    "criterion check_inputs": (
        lambda: scatloss.SCATCriterion(UNetDiscriminator(base_channels=4, depth=2), check_inputs=1),  # type: ignore[arg-type]
        TypeError,
        "check_inputs",
    ),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS), ids=list(BAD_OPTIONS))
def test_bad_options_raise_a_named_error(case: str) -> None:
    fn, exc, name = BAD_OPTIONS[case]
    with pytest.raises(exc, match=rf"^{name}\w*(\[\d\])?: expected .*, got"):
        fn()


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-3, 3))
def test_temperature_is_accepted_exactly_when_the_loss_is_finite(temperature: float) -> None:
    acceptable = math.isfinite(temperature) and temperature >= SF.SMALLEST_TEMPERATURE
    if not acceptable:
        with pytest.raises(ValueError, match="temperature"):
            SF.semantic_contrastive_loss(VEC, VEC, NEGS, temperature=temperature)
        return
    loss = SF.semantic_contrastive_loss(VEC, VEC, NEGS, temperature=temperature)
    assert torch.isfinite(loss)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_textural_eps_is_accepted_exactly_when_a_hole_free_mask_gives_zero(eps: float) -> None:
    if not (math.isfinite(eps) and eps > 0):
        with pytest.raises(ValueError, match="eps"):
            SF.textural_contrastive_loss(FEATS, FEATS, FEATS, eps=eps)
        return
    # anchor == positive == negative (a hole-free mask): exactly 0, never 0 / 0
    assert SF.textural_contrastive_loss(FEATS, FEATS, FEATS, eps=eps).item() == 0.0


# ----------------------------------------------------------------------------------------------------------------------
# Empty batch: one named error everywhere
# ----------------------------------------------------------------------------------------------------------------------


def _criterion(**kwargs) -> scatloss.SCATCriterion:  # noqa: ANN003
    torch.manual_seed(0)
    d = UNetDiscriminator(base_channels=4, depth=2, max_channels=8)
    return scatloss.SCATCriterion(
        d,
        textural_layers=d.textural_layers,
        semantic_layer=d.semantic_layer,
        objective=scatloss.InpaintingObjective(in_features=d.feature_dim, hidden_features=8, out_features=8),
        **kwargs,
    )


Z0 = torch.zeros(0, 1, 8, 8)
EMPTY = {
    "scat_segmenter_loss": lambda: SF.scat_segmenter_loss(Z0, Z0, Z0),
    "scat_generator_loss": lambda: SF.scat_generator_loss(Z0, Z0),
    "adversarial_discriminator_loss": lambda: SF.adversarial_discriminator_loss(torch.zeros(0, 1), torch.zeros(0, 1)),
    "adversarial_generator_loss": lambda: SF.adversarial_generator_loss(torch.zeros(0, 1)),
    "textural_contrastive_loss": lambda: SF.textural_contrastive_loss([Z0], [Z0], [Z0]),
    "semantic_contrastive_loss": lambda: SF.semantic_contrastive_loss(
        torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 2, 4)
    ),
    "reconstruction_loss": lambda: SF.reconstruction_loss(torch.zeros(0, 3, 8, 8), torch.zeros(0, 3, 8, 8)),
    "SCATLoss": lambda: scatloss.SCATLoss()(Z0, Z0),
    "criterion.generator_step": lambda: _criterion().generator_step(
        torch.zeros(0, 3, 8, 8), torch.zeros(0, 3, 8, 8), Z0
    ),
    "criterion.discriminator_step": lambda: _criterion().discriminator_step(
        torch.zeros(0, 3, 8, 8), torch.zeros(0, 3, 8, 8), Z0
    ),
}


@pytest.mark.parametrize("case", list(EMPTY), ids=list(EMPTY))
def test_an_empty_batch_is_one_named_error(case: str) -> None:
    with pytest.raises(ValueError, match=r"expected a non-empty batch \(B >= 1\), got shape \(0,"):
        EMPTY[case]()


# ----------------------------------------------------------------------------------------------------------------------
# resample_hole, the objective's hole, the LaMa adapter's patch maps
# ----------------------------------------------------------------------------------------------------------------------

MASK = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)) > 0.5).float()
RESAMPLE_BAD = {
    "int64 mask": ((MASK.long(), (4, 4)), TypeError, r"hole: expected a float or bool tensor .*torch.int64"),
    "3-D mask": ((MASK[:, 0], (4, 4)), ValueError, r"hole: expected shape \(B, 1, H, W\).*\(2, 8, 8\)"),
    "2-channel mask": ((MASK.expand(2, 2, 8, 8), (4, 4)), ValueError, r"hole: expected shape .*\(2, 2, 8, 8\)"),
    "values above 1": ((MASK * 2, (4, 4)), ValueError, r"hole: expected values in \[0, 1\]"),
    "negative values": ((MASK - 1, (4, 4)), ValueError, r"hole: expected values in \[0, 1\]"),
    "fractional size": ((MASK, (4.5, 4)), TypeError, r"size: expected a pair \(h, w\) of positive ints, got h = float"),
    "zero size": ((MASK, (0, 4)), ValueError, r"size: expected .*got h = 0"),
    "size not a pair": ((MASK, 4), TypeError, r"size: expected a pair"),
}


@pytest.mark.parametrize("case", list(RESAMPLE_BAD), ids=list(RESAMPLE_BAD))
def test_resample_hole_refuses_bad_masks_and_sizes(case: str) -> None:
    args, exc, pattern = RESAMPLE_BAD[case]
    with pytest.raises(exc, match=pattern):
        resample_hole(*args)  # type: ignore[arg-type]


def test_objective_refuses_a_two_channel_hole_even_without_a_scat_term() -> None:
    objective = scatloss.InpaintingObjective()
    with pytest.raises(ValueError, match=r"hole: expected shape \(B, 1, H, W\)"):
        objective(IMG, IMG, HOLE.expand(2, 2, 8, 8))
    with pytest.raises(ValueError, match=r"hole: expected shape \(B, 1, H, W\)"):
        objective.discriminator_loss(
            HOLE.expand(2, 2, 8, 8), fake_logits=torch.zeros(2, 1), real_logits=torch.ones(2, 1)
        )


class _LaMaD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model0 = nn.Sequential(nn.Conv2d(3, 4, 4, 2, 2), nn.LeakyReLU(0.2))
        self.model1 = nn.Sequential(nn.Conv2d(4, 1, 4, 1, 2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.model0(x)
        return self.model1(h), [h]


@pytest.mark.parametrize("shape", [(1, 1, 5, 5), (2, 2, 5, 5), (2, 5, 5)], ids=["batch-1", "2-channel", "3-D"])
def test_lama_adapter_refuses_a_patch_map_that_would_broadcast(shape: tuple[int, ...]) -> None:
    from scatloss.adapters.lama import SCATAdversarialLoss

    loss = SCATAdversarialLoss(segmenter=UNetSegmenter(3, base_channels=4, depth=2), mask_as_fake_target=True)
    real = torch.rand(2, 3, 16, 16)
    hole = torch.zeros(2, 1, 16, 16)
    hole[:, :, 4:10, 4:10] = 1.0
    fake = real * (1 - hole) + hole * torch.rand(2, 3, 16, 16)
    loss.pre_generator_step(real, fake, nn.Identity(), _LaMaD())
    pred = torch.zeros(shape)
    with pytest.raises(ValueError, match=r"discr_fake_pred: expected a"):
        loss.generator_loss(real, fake, torch.zeros(2, 1, 5, 5), pred, hole)
    with pytest.raises(ValueError, match=r"discr_real_pred: expected a"):
        loss.discriminator_loss(real, fake, pred, torch.zeros(2, 1, 5, 5), hole)


# ----------------------------------------------------------------------------------------------------------------------
# Meta tensors: shape inference works; mixed with CPU tensors a named error (a term was dropped before)
# ----------------------------------------------------------------------------------------------------------------------


def test_meta_tensors_infer_shapes_without_reading_values() -> None:
    z = torch.empty(2, 1, 4, 4, device="meta")
    h = torch.empty(2, 1, 8, 8, device="meta")
    out = SF.scat_segmenter_loss(z, z, h, reduction="none")
    assert out.device.type == "meta" and out.shape == (2, 1, 4, 4)
    assert SF.scat_generator_loss(z, h).shape == ()
    img = torch.empty(2, 3, 8, 8, device="meta")
    assert SF.composite(img, img, h).shape == (2, 3, 8, 8)
    assert resample_hole(h, (4, 4)).device.type == "meta"


def test_meta_criterion_step_infers_shapes() -> None:
    with torch.device("meta"):
        crit = _criterion()
    img = torch.empty(2, 3, 16, 16, device="meta")
    terms = crit.generator_step(img.clone().requires_grad_(), img, torch.empty(2, 1, 16, 16, device="meta"))
    assert set(terms) == {"adv", "scat", "text", "sem", "rec", "total"}
    assert all(v.device.type == "meta" and v.shape == () for v in terms.values())


MIXED = {
    "scat_generator_loss": lambda m: SF.scat_generator_loss(m, HOLE),
    "scat_segmenter_loss": lambda m: SF.scat_segmenter_loss(torch.zeros(2, 1, 8, 8), m, HOLE),
    "adversarial_discriminator_loss": lambda m: SF.adversarial_discriminator_loss(m, torch.zeros(2, 1, 8, 8)),
    "textural_contrastive_loss": lambda m: SF.textural_contrastive_loss([m], [torch.zeros(2, 1, 8, 8)], [m]),
    "semantic_contrastive_loss": lambda m: SF.semantic_contrastive_loss(
        m[:, 0, 0], VEC[:, :8], NEGS.new_zeros(2, 3, 8)
    ),
    "reconstruction_loss": lambda m: SF.reconstruction_loss(m.expand(2, 3, 8, 8), IMG),
    "composite": lambda m: SF.composite(m.expand(2, 3, 8, 8), IMG, HOLE),
    "criterion": lambda m: _criterion().generator_step(m.expand(2, 3, 8, 8), IMG, HOLE),
}


@pytest.mark.parametrize("case", list(MIXED), ids=list(MIXED))
def test_a_meta_tensor_mixed_with_cpu_tensors_is_a_named_error(case: str) -> None:
    meta = torch.empty(2, 1, 8, 8, device="meta")
    with pytest.raises(ValueError, match=r"device mismatch|device"):
        MIXED[case](meta)


# ----------------------------------------------------------------------------------------------------------------------
# SCATCriterion's boundary checks: on by default, cheap, with an off switch
# ----------------------------------------------------------------------------------------------------------------------


def _masks(b: int = 4, seed: int = 0) -> torch.Tensor:
    return MaskGenerator(16, 16, seed=seed).sample(b)  # hole ratios 0-60 %


def _step_inputs(b: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    image = torch.rand(b, 3, 16, 16, generator=g) * 2 - 1
    prediction = (torch.rand(b, 3, 16, 16, generator=g) * 2 - 1).requires_grad_()
    return prediction, image, _masks(b)


BOUNDARY = {
    "inverted hole mask (mostly ones)": (
        lambda p, x, h: (p, x, 1 - h),
        r"hole: expected a hole mask \(1 = missing pixel\) with a mean hole ratio of at most 0.6",
    ),
    "images in [0, 1]": (lambda p, x, h: (p, (x + 1) / 2, h), r"image: expected images in \[-1, 1\].*\[0, 1\]"),
    "images in [0, 255]": (lambda p, x, h: (p, (x + 1) * 127.5, h), r"image: expected images in \[-1, 1\].*0, 255"),
    "NaN image": (lambda p, x, h: (p, x.masked_fill(h.bool().expand_as(x), math.nan), h), r"image: expected finite"),
    "prediction and image swapped": (
        lambda p, x, h: (x, p, h),
        r"prediction, image: expected the generator's output .* look swapped",
    ),
    "inverted mask with a composite": (
        lambda p, x, h: ((h * x + (1 - h) * p).detach().requires_grad_(), x, 1 - h[:, :, :, :]),
        r"hole: expected a hole mask",
    ),
}


@pytest.mark.parametrize("case", list(BOUNDARY), ids=list(BOUNDARY))
def test_criterion_boundary_checks_raise_and_switch_off(case: str) -> None:
    change, pattern = BOUNDARY[case]
    prediction, image, hole = change(*_step_inputs())
    crit = _criterion()
    with pytest.raises(ValueError, match=pattern):
        crit.generator_step(prediction, image, hole)
    if "swapped" not in case:
        with pytest.raises(ValueError, match=pattern):
            crit.discriminator_step(prediction, image, hole)
    if "NaN" in case:
        return  # a NaN image is refused by the switchable range check but would make every term NaN anyway
    off = _criterion(check_inputs=False)
    terms = off.generator_step(prediction, image, hole)
    assert torch.isfinite(terms["total"])


def test_inverted_masks_with_only_small_holes_are_caught_and_value_checks_false_skips_them() -> None:
    prediction, image, hole = _step_inputs()
    inverted = 1 - hole
    crit = _criterion()
    with pytest.raises(ValueError, match="mean hole ratio"):
        crit.generator_step(prediction, image, inverted)
    with scatloss.value_checks(False):
        crit.generator_step(prediction, image, inverted)  # value heuristics are value checks


@given(seed=st.integers(0, 10_000), b=st.integers(1, 4), all_hole=st.booleans())
@settings(max_examples=10)
def test_masks_of_the_papers_buckets_and_all_hole_masks_are_never_flagged(seed: int, b: int, all_hole: bool) -> None:
    hole = _masks(b, seed)
    if all_hole:
        hole[0] = 1.0  # a legal degenerate sample, left out of the mean
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, 16, 16, generator=g) * 2 - 1
    prediction = (torch.rand(b, 3, 16, 16, generator=g) * 2 - 1).requires_grad_()
    crit = _criterion()
    composite = hole * prediction + (1 - hole) * image
    for pred in (prediction, composite):  # a raw prediction, or a composite (as AOT-GAN passes it)
        assert torch.isfinite(crit.generator_step(pred, image, hole)["total"])
    crit.discriminator_step(prediction.detach(), image, hole)


def test_an_all_hole_batch_is_legal() -> None:
    prediction, image, _ = _step_inputs(2)
    terms = _criterion().generator_step(prediction, image, torch.ones(2, 1, 16, 16))
    assert torch.isfinite(terms["total"])


def test_criterion_names_a_dtype_or_device_that_differs_from_the_discriminator() -> None:
    prediction, image, hole = _step_inputs(2)
    crit = _criterion()
    with pytest.raises(TypeError, match=r"image: expected dtype torch.float32 like the discriminator's parameters"):
        crit.generator_step(prediction.double(), image.double(), hole)
    with pytest.raises(ValueError, match=r"image: expected tensors on the discriminator's device meta, got cpu"):
        with torch.device("meta"):
            meta_crit = _criterion()
        meta_crit.generator_step(prediction, image, hole)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts per op: no dtype error there
        crit.discriminator_step(prediction.detach().bfloat16(), image.bfloat16(), hole)


# ----------------------------------------------------------------------------------------------------------------------
# Check once, at the boundary: one device-to-host read per step
# ----------------------------------------------------------------------------------------------------------------------


class _SyncCounter:
    """Counts every device-to-host read: scatloss's read_to_host and the tensor methods that synchronise."""

    METHODS = ("item", "tolist", "__bool__", "__float__", "__int__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        self.syncs = 0
        original = _validation.read_to_host

        def counted(*tensors: torch.Tensor) -> list[float]:
            self.reads += 1
            return original(*tensors)

        monkeypatch.setattr(_validation, "read_to_host", counted)
        for name in self.METHODS:
            method = getattr(torch.Tensor, name)

            def wrapper(t: torch.Tensor, *args, _m=method, **kwargs):  # noqa: ANN002, ANN003, ANN202
                self.syncs += 1
                return _m(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, wrapper)

    def reset(self) -> None:
        self.reads = self.syncs = 0


def test_each_criterion_step_reads_back_once(monkeypatch: pytest.MonkeyPatch) -> None:
    prediction, image, hole = _step_inputs()
    fresh = _criterion(negatives=2)  # fresh masks from the default sampler: known good, no extra value check
    counter = _SyncCounter(monkeypatch)
    fresh.generator_step(prediction, image, hole)
    assert counter.reads == 1  # (the sampler draws its masks on the CPU, with .item() on CPU tensors)
    crit = _criterion()
    counter.reset()
    crit.generator_step(prediction, image, hole)
    assert (counter.reads, counter.syncs) == (1, 1)
    counter.reset()
    crit.discriminator_step(prediction, image, hole)
    assert (counter.reads, counter.syncs) == (1, 1)
    counter.reset()
    with scatloss.value_checks(False):
        crit.generator_step(prediction, image, hole)
    assert (counter.reads, counter.syncs) == (0, 0)


def test_a_users_mask_sampler_is_checked_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    prediction, image, hole = _step_inputs()
    crit = _criterion(negatives=2, mask_sampler=lambda n, h, w: torch.full((n, 1, h, w), 2.0))
    with pytest.raises(ValueError, match=r"mask_sampler\(\.\.\.\): expected values in \[0, 1\]"):
        crit.generator_step(prediction, image, hole)


def test_the_aotgan_adapter_reads_back_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from scatloss.adapters.aotgan import SCATDiscriminator, SCATGANLoss

    torch.manual_seed(0)
    host_d = nn.Sequential(
        nn.Conv2d(3, 4, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(4, 8, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(8, 1, 3, 1, 1),
    )
    net_d = SCATDiscriminator(host_d, segmenter=UNetSegmenter(3, base_channels=4, depth=2), hidden_features=8)
    loss = SCATGANLoss()
    prediction, image, hole = _step_inputs()
    composite = (hole * prediction + (1 - hole) * image).detach()
    counter = _SyncCounter(monkeypatch)
    loss(net_d, composite, image, hole)
    assert (counter.reads, counter.syncs) == (1, 1)


def test_the_functional_api_called_directly_still_validates() -> None:
    with _validation.validated():
        SF.composite(IMG, IMG, HOLE * 2)  # inside a validated block: skipped
    with pytest.raises(ValueError, match=r"hole: expected values in \[0, 1\]"):
        SF.composite(IMG, IMG, HOLE * 2)
    assert _validation.value_checks_enabled()  # the mark does not outlive the block


def test_the_release_drop_in_reads_back_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from test_adapters_release import _setup  # the release-layout stand-in

    from scatloss.adapters import release as release_module

    net_d, net_g, images, masks = _setup(2)
    args = SimpleNamespace(globalgan_type="hingegan", SCAT_type="hingegan")
    adv = release_module.dualadv(args)
    contrastive = release_module.Contrastive(args, net_d, input_dim=32, mlp_dim=16)
    corrupted = images * (1 - masks) + masks
    comp = (1 - masks) * images + masks * net_g(torch.cat([corrupted, masks], 1))
    counter = _SyncCounter(monkeypatch)
    for call in (
        lambda: adv.D(net_d, comp, images, 1 - masks),
        lambda: adv.G(net_d, comp, 1 - masks),
        lambda: contrastive(corrupted, comp, images, masks, 5),
    ):
        counter.reset()
        call()
        assert (counter.reads, counter.syncs) == (1, 1)


@pytest.mark.parametrize("shape", [(2, 1, 0, 4), (2, 1, 4, 0)])
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_a_logit_map_without_rows_or_columns_is_a_named_error(shape: tuple[int, ...], backend: str) -> None:
    # Used to reach the kernels: ZeroDivisionError from the resampling on the PyTorch path, an empty result on
    # the Triton path. Both sides of SCAT and the module form name the argument.
    empty, full, hole = torch.zeros(shape), torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 8, 8)
    msg = r"expected a logit map with at least one row and one column, got shape \(2, 1, "
    with pytest.raises(ValueError, match="^fake_logits: " + msg):
        SF.scat_generator_loss(empty, hole, backend=backend)
    with pytest.raises(ValueError, match="^fake_logits: " + msg):
        SF.scat_segmenter_loss(empty, full, hole, backend=backend)
    with pytest.raises(ValueError, match="^real_logits: " + msg):
        SF.scat_segmenter_loss(full, empty, hole, backend=backend)
    with pytest.raises(ValueError, match="^fake_logits: " + msg):
        scatloss.SCATLoss()(empty, hole)
