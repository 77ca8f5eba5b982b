"""scatloss.losses: each module is its functional twin plus configuration; InpaintingObjective is Eq. 8."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scatloss
import scatloss.functional as SF
from scatloss.testing import (
    check_batch_permutation_invariance,
    check_contrastive_gradient_direction,
    check_module_matches_functional,
    contrastive_embeddings,
    feature_lists,
    hole_masks,
    image_batches,
    logit_maps,
)

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = ("hinge", "bce", "ls")


@st.composite
def scat_batch(draw):
    b = draw(st.integers(1, 3))
    fake = draw(logit_maps(b, 7, 11)).requires_grad_(True)
    real = draw(logit_maps(b, 7, 11)).requires_grad_(True)
    hole = draw(hole_masks(b, draw(st.sampled_from((7, 14, 21))), draw(st.sampled_from((11, 22, 33)))))
    return fake, real, hole


# ----------------------------------------------------------------------------------------------------------------------
# module == functional
# ----------------------------------------------------------------------------------------------------------------------


@given(
    scat_batch(),
    st.sampled_from(KINDS),
    st.sampled_from(("hole", "all")),
    st.sampled_from(("area", "nearest", "max")),
    st.sampled_from(("mean", "sum", "none")),
)
def test_scat_module_matches_functional(inputs, kind, region, resample, reduction):
    fake, real, hole = inputs
    loss = scatloss.SCATLoss(kind=kind, region=region, resample=resample, reduction=reduction, backend="torch")
    opts = {"kind": kind, "resample": resample, "reduction": reduction}
    check_module_matches_functional(loss, SF.scat_generator_loss, fake, hole, region=region, **opts)
    check_module_matches_functional(loss.segmenter, SF.scat_segmenter_loss, fake, real, hole, **opts)


@given(logit_maps(), logit_maps(), st.sampled_from(KINDS))
def test_adversarial_module_matches_functional(fake, real, kind):
    fake.requires_grad_(True)
    loss = scatloss.AdversarialLoss(kind=kind)
    check_module_matches_functional(loss, SF.adversarial_generator_loss, fake, kind=kind)
    check_module_matches_functional(loss.discriminator, SF.adversarial_discriminator_loss, fake, real, kind=kind)


@given(feature_lists(), st.booleans(), st.sampled_from((1e-7, 0.1)))
def test_textural_module_matches_functional(feats, per_sample, eps):
    a, p, n = feats
    a = [x.requires_grad_(True) for x in a]
    loss = scatloss.TexturalContrastiveLoss(eps=eps, per_sample=per_sample)
    check_module_matches_functional(loss, SF.textural_contrastive_loss, a, p, n, eps=eps, per_sample=per_sample)


@given(
    contrastive_embeddings(),
    st.sampled_from((0.07, 1.0)),
    st.booleans(),
    st.sampled_from(("mean", "sum", "none")),
)
def test_semantic_module_without_head_matches_functional(emb, t, normalize, reduction):
    a, p, n = emb
    a.requires_grad_(True)
    loss = scatloss.SemanticContrastiveLoss(temperature=t, normalize=normalize, reduction=reduction)
    assert list(loss.parameters()) == []
    opts = {"temperature": t, "normalize": normalize, "reduction": reduction}
    check_module_matches_functional(loss, SF.semantic_contrastive_loss, a, p, n, **opts)


@given(contrastive_embeddings(dim=6))
def test_semantic_module_with_head_projects_then_calls_functional(emb):
    torch.manual_seed(0)
    loss = scatloss.SemanticContrastiveLoss(in_features=6, hidden_features=5, out_features=4, temperature=1.0)

    def by_hand(a, p, n):
        return SF.semantic_contrastive_loss(loss.projection(a), loss.projection(p), loss.projection(n), temperature=1.0)

    check_module_matches_functional(loss, by_hand, *emb)


@given(st.data(), st.sampled_from(("mean", "sum", "none")))
def test_reconstruction_module_matches_functional(data, reduction):
    pred = data.draw(image_batches()).requires_grad_(True)
    image = data.draw(image_batches(*pred.shape))
    loss = scatloss.ReconstructionLoss(reduction=reduction)
    check_module_matches_functional(loss, SF.reconstruction_loss, pred, image, reduction=reduction)


@given(contrastive_embeddings(batch=st.integers(2, 4), dtype=torch.float64))
def test_semantic_module_with_head_is_invariant_to_batch_permutation(emb):
    torch.manual_seed(1)
    loss = scatloss.SemanticContrastiveLoss(in_features=emb[0].shape[1], hidden_features=8, out_features=8).double()
    check_batch_permutation_invariance(loss, *emb)
    loss.reduction = "none"
    check_batch_permutation_invariance(loss, *emb)


@given(contrastive_embeddings(dim=st.integers(2, 8), dtype=torch.float64))
def test_semantic_module_pulls_anchor_to_positive(emb):
    loss = scatloss.SemanticContrastiveLoss(temperature=0.5)
    check_contrastive_gradient_direction(loss, *emb)


# ----------------------------------------------------------------------------------------------------------------------
# constructor and call errors
# ----------------------------------------------------------------------------------------------------------------------

BAD_CONFIGS = {
    "scat kind": (lambda: scatloss.SCATLoss(kind="wgan"), ValueError, r"kind: expected one of .*got 'wgan'"),
    "scat region": (lambda: scatloss.SCATLoss(region="valid"), ValueError, r"region: expected one of .*got 'valid'"),
    "scat resample": (lambda: scatloss.SCATLoss(resample="bicubic"), ValueError, r"resample: expected .*'bicubic'"),
    "scat reduction": (lambda: scatloss.SCATLoss(reduction="avg"), ValueError, r"reduction: expected .*got 'avg'"),
    "scat backend": (lambda: scatloss.SCATLoss(backend="cuda"), ValueError, r"backend: expected .*got 'cuda'"),
    "adversarial kind": (lambda: scatloss.AdversarialLoss(kind="wgan-gp"), ValueError, r"kind: expected .*'wgan-gp'"),
    "textural eps": (
        lambda: scatloss.TexturalContrastiveLoss(eps=-1.0),
        ValueError,
        r"eps: expected a finite number > 0",
    ),
    "semantic temperature zero": (
        lambda: scatloss.SemanticContrastiveLoss(temperature=0),
        ValueError,
        r"temperature: expected a positive float .*, got 0",
    ),
    "semantic temperature type": (
        lambda: scatloss.SemanticContrastiveLoss(temperature="0.07"),
        TypeError,
        r"temperature: expected a positive float .*, got str",
    ),
    "semantic reduction": (
        lambda: scatloss.SemanticContrastiveLoss(reduction="mean_over_batch"),
        ValueError,
        r"reduction: expected one of .*'mean_over_batch'",
    ),
    "semantic in_features": (
        lambda: scatloss.SemanticContrastiveLoss(in_features=0),
        ValueError,
        r"in_features: expected a positive int, got 0",
    ),
    "semantic hidden_features": (
        lambda: scatloss.SemanticContrastiveLoss(in_features=8, hidden_features=2.5),
        ValueError,
        r"hidden_features: expected a positive int, got 2.5",
    ),
    "reconstruction reduction": (
        lambda: scatloss.ReconstructionLoss(reduction="max"),
        ValueError,
        r"reduction: expected one of .*got 'max'",
    ),
    "objective negative weight": (
        lambda: scatloss.InpaintingObjective(lambda_text=-1.0),
        ValueError,
        r"lambda_text: expected a finite weight >= 0, got -1.0",
    ),
    "objective weight type": (
        lambda: scatloss.InpaintingObjective(lambda_rec="10"),
        TypeError,
        r"lambda_rec: expected a finite weight >= 0, got str",
    ),
    "objective scat kind": (
        lambda: scatloss.InpaintingObjective(scat_kind="wgan"),
        ValueError,
        r"kind: expected one of .*got 'wgan'",
    ),
    "head with features of another size": (
        lambda: scatloss.SemanticContrastiveLoss(in_features=16)(
            torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 3, 8)
        ),
        ValueError,
        r"anchor: expected feature size D=16 \(the projection head's in_features\), got shape \(2, 8\)",
    ),
    "head with 2-D negatives": (
        lambda: scatloss.SemanticContrastiveLoss(in_features=8)(
            torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 8)
        ),
        ValueError,
        r"negatives: expected a 3-D tensor, got shape \(2, 8\)",
    ),
    "module call with a 3-channel hole": (
        lambda: scatloss.SCATLoss()(torch.zeros(2, 1, 4, 4), torch.zeros(2, 3, 4, 4)),
        ValueError,
        r"hole: expected shape \(B, 1, H, W\) with one channel",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_bad_configuration_error_names_argument_expected_and_received(case):
    fn, exc, pattern = BAD_CONFIGS[case]
    with pytest.raises(exc, match=pattern):
        fn()


def test_modules_show_their_configuration():
    assert "kind='bce'" in repr(scatloss.SCATLoss(kind="bce"))
    assert "region='all'" in repr(scatloss.SCATLoss(region="all"))
    assert "per_sample=True" in repr(scatloss.TexturalContrastiveLoss(per_sample=True))
    assert "temperature=1.0" in repr(scatloss.SemanticContrastiveLoss(temperature=1.0))


# ----------------------------------------------------------------------------------------------------------------------
# InpaintingObjective (Eq. 8)
# ----------------------------------------------------------------------------------------------------------------------


def _generator_inputs(seed=0, b=3, d=8):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    image = torch.rand(b, 3, 14, 22, generator=g) * 2 - 1
    pred = (torch.rand(b, 3, 14, 22, generator=g) * 2 - 1).requires_grad_(True)
    hole = (torch.rand(b, 1, 14, 22, generator=g) < 0.3).float()
    return {
        "prediction": pred,
        "image": image,
        "hole": hole,
        "fake_logits": r(b, 1).requires_grad_(True),
        "fake_pixel_logits": r(b, 1, 7, 11).requires_grad_(True),
        "textural": ([r(b, 4, 7, 11).requires_grad_(True)], [r(b, 4, 7, 11)], [r(b, 4, 7, 11)]),
        "semantic": (r(b, d).requires_grad_(True), r(b, d), r(b, 5, d)),
    }


def test_objective_total_is_the_weighted_sum_of_eq8():
    weights = {"lambda_adv": 0.5, "lambda_text": 2.0, "lambda_sem": 3.0, "lambda_rec": 4.0}
    obj = scatloss.InpaintingObjective(**weights, kind="hinge", scat_kind="bce", region="all", temperature=0.2)
    x = _generator_inputs()
    terms = obj(x["prediction"], x["image"], x["hole"], **{k: x[k] for k in list(x)[3:]})
    want = {
        "adv": SF.adversarial_generator_loss(x["fake_logits"], kind="hinge"),
        "scat": SF.scat_generator_loss(x["fake_pixel_logits"], x["hole"], kind="bce", region="all"),
        "text": SF.textural_contrastive_loss(*x["textural"]),
        "sem": SF.semantic_contrastive_loss(*x["semantic"], temperature=0.2),
        "rec": SF.reconstruction_loss(x["prediction"], x["image"]),
    }
    assert set(terms) == {*want, "total"}
    for name, value in want.items():
        torch.testing.assert_close(terms[name], value, msg=name)
    by_hand = 0.5 * (want["adv"] + want["scat"]) + 2.0 * want["text"] + 3.0 * want["sem"] + 4.0 * want["rec"]
    torch.testing.assert_close(terms["total"], by_hand)
    assert obj.weights() == {"adv": 0.5, "scat": 0.5, "text": 2.0, "sem": 3.0, "rec": 4.0}


def test_objective_defaults_are_the_paper_weights():
    assert scatloss.InpaintingObjective().weights() == {"adv": 1.0, "scat": 1.0, "text": 10.0, "sem": 1.0, "rec": 10.0}


@pytest.mark.parametrize(
    "present", [(), ("fake_logits",), ("fake_pixel_logits",), ("textural", "semantic"), ("fake_logits", "semantic")]
)
def test_objective_omits_terms_whose_inputs_are_absent(present):
    obj = scatloss.InpaintingObjective()
    x = _generator_inputs()
    names = {"fake_logits": "adv", "fake_pixel_logits": "scat", "textural": "text", "semantic": "sem"}
    terms = obj.generator_loss(x["prediction"], x["image"], x["hole"], **{k: x[k] for k in present})
    assert set(terms) == {"rec", "total", *(names[k] for k in present)}
    w = obj.weights()
    torch.testing.assert_close(terms["total"], sum(w[k] * v for k, v in terms.items() if k != "total"))


def test_objective_discriminator_side_is_adv_plus_scat():
    obj = scatloss.InpaintingObjective(lambda_adv=2.0, scat_kind="ls")
    g = torch.Generator().manual_seed(3)
    hole = (torch.rand(2, 1, 14, 22, generator=g) < 0.5).float()
    fake, real = torch.randn(2, 1, generator=g), torch.randn(2, 1, generator=g)
    fpx, rpx = torch.randn(2, 1, 7, 11, generator=g), torch.randn(2, 1, 7, 11, generator=g)
    terms = obj.discriminator_loss(
        hole, fake_logits=fake, real_logits=real, fake_pixel_logits=fpx, real_pixel_logits=rpx
    )
    adv = SF.adversarial_discriminator_loss(fake, real)
    scat = SF.scat_segmenter_loss(fpx, rpx, hole, kind="ls")
    torch.testing.assert_close(terms["adv"], adv)
    torch.testing.assert_close(terms["scat"], scat)
    torch.testing.assert_close(terms["total"], 2.0 * (adv + scat))
    only_adv = obj.discriminator_loss(fake_logits=fake, real_logits=real)
    assert set(only_adv) == {"adv", "total"}


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"fake_logits": torch.zeros(2, 1)}, r"fake_logits, real_logits: expected both or neither, got only one"),
        (
            {"real_pixel_logits": torch.zeros(2, 1, 4, 4)},
            r"fake_pixel_logits, real_pixel_logits: expected both or neither",
        ),
        (
            {"fake_pixel_logits": torch.zeros(2, 1, 4, 4), "real_pixel_logits": torch.zeros(2, 1, 4, 4)},
            r"hole: expected a \(B, 1, H, W\) hole mask for the SCAT segmenter term, got None",
        ),
        ({}, r"InpaintingObjective: expected at least one term's inputs, got none"),
    ],
)
def test_objective_discriminator_side_rejects_incomplete_inputs(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        scatloss.InpaintingObjective().discriminator_loss(None, **kwargs)


def test_objective_projection_head_is_trained_with_the_generator():
    obj = scatloss.InpaintingObjective(in_features=8, hidden_features=6, out_features=4)
    head = list(obj.semantic.projection.parameters())
    assert len(head) == 4
    assert {id(p) for p in obj.parameters()} == {id(p) for p in head}  # the only trainable parameters
    x = _generator_inputs(d=8)
    terms = obj(x["prediction"], x["image"], x["hole"], semantic=x["semantic"])
    terms["total"].backward()
    for p in head:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert x["semantic"][0].grad is not None and x["prediction"].grad is not None


def test_objective_without_head_has_no_parameters():
    assert list(scatloss.InpaintingObjective().parameters()) == []
