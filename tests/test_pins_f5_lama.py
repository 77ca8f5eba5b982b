"""Tests pinning behaviour that mutation testing found unchecked in ``scatloss.adapters.lama`` (group f5):
``SCATAdversarialLoss.__init__`` and ``SCATAdversarialLoss._check``.

Each compares with an independent expectation written here: the exact error text (the argument it names, LaMa's
``[0, 1]`` range, the host's name), the order in which the call's value checks report, or a hand-computed loss.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scatloss.adapters.lama import SCATAdversarialLoss
from scatloss.masks import MaskGenerator
from scatloss.nets import UNetSegmenter
from tests._pins import B, C, S, holes, patch_d, tiny_seg


def lama_loss(**kwargs) -> SCATAdversarialLoss:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return SCATAdversarialLoss(segmenter=tiny_seg(), **kwargs)


def lama_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(real in [0, 1], composite fake, hole mask)`` with ``real`` spanning exactly ``[0, 1]``."""
    real = torch.rand(B, C, S, S, generator=torch.Generator().manual_seed(2))
    real[0, 0, 0, 0], real[1, 2, 5, 5] = 0.0, 1.0
    mask = holes()
    fake = mask * 0.25 + (1 - mask) * real
    return real, fake, mask


# ----------------------------------------------------------------------------------------------------------------------
# _check
# ----------------------------------------------------------------------------------------------------------------------


def test_lama_fake_batch_must_be_a_4d_float_tensor_and_the_error_names_it() -> None:
    """A 3-D ``fake_batch`` gets the 4-D error (not the shape-mismatch one), an int one the dtype error, both naming
    ``fake_batch``."""
    loss = lama_loss()
    real, fake, mask = lama_batch()
    pred = torch.zeros(B, 1, S, S)
    with pytest.raises(ValueError, match=r"^fake_batch: expected a 4-D tensor, got shape \(3, 16, 16\)$"):
        loss.generator_loss(real, fake[0], pred, pred, mask)
    with pytest.raises(ValueError, match=r"^fake_batch: expected a 4-D tensor, got shape \(1, 2, 3, 16, 16\)$"):
        loss.discriminator_loss(real, fake[None], pred, pred, mask)
    with pytest.raises(TypeError, match=r"^fake_batch: expected a floating-point tensor .* got dtype torch\.int64"):
        loss.generator_loss(real, (fake * 255).long(), pred, pred, mask)


def test_lama_range_error_text_names_lamas_zero_one_convention() -> None:
    """A batch reaching 1.5 is outside ``[0, 1]`` by more than the 1e-2 tolerance: the error, in full, names
    ``real_batch``, ``[0, 1]``, LaMa and the observed range."""
    loss = lama_loss(check_mask=False)
    real, fake, mask = lama_batch()
    real[1, 0, 3, 4] = 1.5
    pred = torch.zeros(B, 1, S, S)
    want = (
        "real_batch: expected images in [0, 1] (LaMa's convention), got values in [0, 1.5], which looks like a "
        "different normalisation. Convert the images, or pass check_range=False if this batch really is in [0, 1] "
        "(the check is a heuristic over the whole batch)"
    )
    with pytest.raises(ValueError, match="^" + re.escape(want) + "$"):
        loss.generator_loss(real, fake, pred, pred, mask)
    real[1, 0, 3, 4] = 1.0095  # within the tolerance: accepted
    loss.generator_loss(real, fake, pred, pred, mask)


def test_lama_value_checks_report_in_order_after_one_read() -> None:
    """All value checks of a call are read together and reported in order: a mask with a value 2 and a ``[0, 255]``
    batch report the mask (checked first), not the range."""
    loss = lama_loss()
    real, fake, mask = lama_batch()
    bad_mask = mask.clone()
    bad_mask[0, 0, 0, 0] = 2.0
    pred = torch.zeros(B, 1, S, S)
    want = r"^mask: expected values in \[0, 1\] \(1 = missing pixel\), got values in \[0, 2\]"
    with pytest.raises(ValueError, match=want):
        loss.generator_loss(real * 255, fake * 255, pred, pred, bad_mask)


# ----------------------------------------------------------------------------------------------------------------------
# __init__: option checks name their option
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "wgan"}, "kind: expected one of 'hinge', 'bce', 'ls', got 'wgan'"),
        ({"weight": -1.0}, "weight: expected a value >= 0, got -1.0"),
        ({"gp_coef": -1.0}, "gp_coef: expected a value >= 0, got -1.0"),
        (
            {"mask_scale_mode": "linear"},
            "mask_scale_mode: expected one of 'nearest', 'nearest-exact', 'bilinear', 'bicubic', 'area', 'maxpool', "
            "'max', got 'linear'",
        ),
        ({"extra_mask_weight_for_gen": -1.0}, "extra_mask_weight_for_gen: expected a value >= 0, got -1.0"),
        ({"negatives_from": "world"}, "negatives_from: expected one of 'local', 'global', got 'world'"),
        ({"lambda_scat": -1.0}, "lambda_scat: expected a value >= 0, got -1.0"),
        ({"lambda_text": -1.0}, "lambda_text: expected a value >= 0, got -1.0"),
        ({"lambda_sem": -1.0}, "lambda_sem: expected a value >= 0, got -1.0"),
        ({"semantic_pool": "max"}, "semantic_pool: expected one of 'relu_sum', 'mean', 'flatten', got 'max'"),
    ],
)
def test_lama_option_errors_name_the_option(kwargs: dict[str, object], message: str) -> None:
    """Each invalid option is a ``ValueError`` whose text, in full, names that option and lists LaMa's choices."""
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        lama_loss(**kwargs)


@pytest.mark.parametrize("name", ["weight", "gp_coef", "extra_mask_weight_for_gen", "lambda_scat", "lambda_sem"])
def test_lama_weight_type_errors_name_the_option(name: str) -> None:
    """A string weight is a ``TypeError`` naming that weight."""
    with pytest.raises(TypeError, match="^" + re.escape(f"{name}: expected a float, got str '1'") + "$"):
        lama_loss(**{name: "1"})


def test_lama_accepts_every_documented_choice() -> None:
    """``negatives_from="global"`` and ``semantic_pool="flatten"`` are documented choices: accepted and kept."""
    assert lama_loss(negatives_from="global").negatives_from == "global"
    loss = lama_loss(semantic_pool="flatten", semantic_layer="5", feature_dim=8, hidden_features=4, out_features=3)
    assert loss.semantic_pool == "flatten" and loss.feature_dim == 8


# ----------------------------------------------------------------------------------------------------------------------
# __init__: defaults (LaMa's NonSaturatingWithR1 and the paper) and what reaches the objective
# ----------------------------------------------------------------------------------------------------------------------


def test_lama_default_segmenter_takes_rgb_images() -> None:
    """Without ``segmenter=``, the segmenter is a ``UNetSegmenter`` of ``in_channels`` (default 3) channels."""
    x = torch.zeros(1, 3, S, S)
    assert tuple(SCATAdversarialLoss().segmenter(x).shape) == (1, 1, S, S)
    gray = SCATAdversarialLoss(in_channels=1).segmenter
    assert isinstance(gray, UNetSegmenter)
    assert tuple(gray(torch.zeros(1, 1, S, S)).shape) == (1, 1, S, S)


def test_lama_given_segmenter_is_the_one_used() -> None:
    """``segmenter=S`` is used as it is (the same object), not replaced by the default U-Net."""
    seg = tiny_seg()
    loss = SCATAdversarialLoss(segmenter=seg)
    assert loss.segmenter is seg
    assert list(loss.discriminator_parameters()) == list(seg.parameters())


def test_lama_default_weights_are_one() -> None:
    """Defaults: ``weight = 1`` and ``lambda_scat = weight``: the generator loss is ``mean softplus(-D(fake)) +
    L_SCAT(G)``, unweighted, also with ``mask_as_fake_target`` (``extra_mask_weight_for_gen = 0``: no extra weight
    on holes)."""
    real, fake, mask = lama_batch()
    pred = torch.linspace(-3, 3, B * S * S).view(B, 1, S, S)
    for options in ({}, {"mask_as_fake_target": True}):
        total, metrics = lama_loss(**options).generator_loss(real, fake, pred, pred, mask)
        adv = F.softplus(-pred).mean()
        torch.testing.assert_close(metrics["gen_adv_term"], adv)
        torch.testing.assert_close(total, adv + metrics["scat_gen"])


def test_lama_lambda_scat_weighs_only_scat() -> None:
    """``lambda_scat`` given: ``loss = weight * L_adv + lambda_scat * L_SCAT`` (not ``weight`` for both)."""
    real, fake, mask = lama_batch()
    pred = torch.linspace(-3, 3, B * S * S).view(B, 1, S, S)
    total, metrics = lama_loss(weight=2.0, lambda_scat=0.5).generator_loss(real, fake, pred, pred, mask)
    torch.testing.assert_close(total, 2.0 * F.softplus(-pred).mean() + 0.5 * metrics["scat_gen"])


def test_lama_scat_options_reach_the_scat_term() -> None:
    """``scat_kind``, ``scat_region``: the generator's SCAT term is hinge ``mean(-S(x-) * hole)`` by default, BCE
    ``mean(softplus(-S(x-)) * hole)`` with ``scat_kind="bce"``, ``mean(-S(x-))`` with ``scat_region="all"``, with
    ``S`` the given segmenter run on the composite."""
    real, fake, mask = lama_batch()
    pred = torch.zeros(B, 1, S, S)
    seg = lama_loss().segmenter
    logits = seg(fake).detach()
    cases = [
        ({}, (-logits * mask).mean()),
        ({"scat_kind": "bce"}, (F.softplus(-logits) * mask).mean()),
        ({"scat_region": "all"}, (-logits).mean()),
    ]
    for options, want in cases:
        _, metrics = lama_loss(**options).generator_loss(real, fake, pred, pred, mask)
        torch.testing.assert_close(metrics["scat_gen"], want, rtol=1e-5, atol=1e-6)


def test_lama_projection_head_is_feature_hidden_256_out() -> None:
    """The projection head is ``Linear(feature_dim, hidden_features) -> ReLU -> Linear(hidden, out_features)``,
    ``hidden_features`` defaulting to 256 (the release's head), ``hidden_features=`` / ``out_features=`` honoured."""
    head = lama_loss(semantic_layer="5", feature_dim=5, out_features=3).objective.semantic.projection
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[2].out_features) == (5, 256, 3)
    head = lama_loss(semantic_layer="5", feature_dim=5, hidden_features=7).objective.semantic.projection
    assert (head[0].out_features, head[2].in_features, head[2].out_features) == (7, 7, 256)
    assert [p for g in [lama_loss().generator_parameters()] for p in g] == []


# ----------------------------------------------------------------------------------------------------------------------
# __init__: the contrastive terms (Eqs. 3, 4) with the paper's defaults and LaMa's zero fill
# ----------------------------------------------------------------------------------------------------------------------

# patch_d(): "1", "3", "5" are the LeakyReLU outputs of its first three blocks (2, 4, 4 channels).
TEXTURAL, SEMANTIC, SEM_DIM = ("1", "3"), "5", 4


def contrastive_loss(**kwargs) -> tuple[SCATAdversarialLoss, nn.Sequential]:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    d = patch_d().double()
    kwargs = {"hidden_features": 4, "out_features": 3, "feature_dim": SEM_DIM, **kwargs}
    loss = SCATAdversarialLoss(
        segmenter=tiny_seg(), discriminator=d, textural_layers=TEXTURAL, semantic_layer=SEMANTIC, **kwargs
    )
    return loss.double(), d


def hand_terms(
    d: nn.Sequential,
    head: nn.Module,
    real: torch.Tensor,
    comp: torch.Tensor,
    mask: torch.Tensor,
    neg_masks: torch.Tensor,
    *,
    fill: float = 0.0,
    temperature: float = 0.07,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3 as released (a ratio of batch means, + 1e-7) on D's blocks "1", "3" with ``x~ = real (1 - m) + fill
    m``; Eq. 4: InfoNCE on the projected ReLU-sum of block "5", anchor ``x-``, positive ``x``, negatives ``x`` of
    anchor ``b`` corrupted by ``neg_masks[b]`` ``(B, M, 1, H, W)``."""
    with torch.no_grad():
        corrupted = real * (1 - mask) + fill * mask
        text = torch.zeros((), dtype=real.dtype)
        for depth in (2, 4):
            a, p, n = d[:depth](comp), d[:depth](real), d[:depth](corrupted)
            text = text + (a - p).abs().mean() / ((a - n).abs().mean() + 1e-7)

        def embed(x: torch.Tensor) -> torch.Tensor:
            z = head(torch.relu(d[:6](x)).sum(dim=(2, 3)))
            return F.normalize(z, dim=-1) if normalize else z

        a, p = embed(comp), embed(real)
        negs = torch.stack(
            [embed(real[b : b + 1] * (1 - neg_masks[b]) + fill * neg_masks[b]) for b in range(real.shape[0])]
        )
        logits = torch.cat([(a * p).sum(-1, keepdim=True), torch.einsum("bd,bmd->bm", a, negs)], dim=1) / temperature
        sem = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    return text, sem


def double_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    real, fake, mask = (t.double() for t in lama_batch())
    return real, fake, mask, torch.zeros(B, 1, S, S, dtype=torch.float64)


def test_lama_contrastive_defaults_are_the_papers_with_zero_fill() -> None:
    """Defaults: ``lambda_text = 10``, ``lambda_sem = 1``, ``temperature = 0.07``, normalised features, holes of
    ``x~`` and of the negatives filled with 0 (LaMa's input), ``negatives = "batch"`` (each ``x`` corrupted by
    every mask of the batch): ``loss = log 2 + L_SCAT + 10 L_text + L_sem`` for zero patch logits."""
    loss, d = contrastive_loss()
    real, fake, mask, pred = double_batch()
    total, metrics = loss.generator_loss(real, fake, pred, pred, mask)
    neg_masks = mask[None].expand(B, B, 1, S, S)
    text, sem = hand_terms(d, loss.objective.semantic.projection, real, fake, mask, neg_masks)
    torch.testing.assert_close(metrics["contra_text"], text, rtol=1e-9, atol=0)
    torch.testing.assert_close(metrics["contra_sem"], sem, rtol=1e-9, atol=0)
    want = math.log(2) + metrics["scat_gen"] + 10 * text + sem
    torch.testing.assert_close(total.detach(), want, rtol=1e-9, atol=0)


def test_lama_contrastive_options_reach_the_terms() -> None:
    """``lambda_text``, ``lambda_sem``, ``temperature``, ``normalize=False`` and ``fill`` are used as given."""
    options = {"lambda_text": 3.0, "lambda_sem": 0.5, "temperature": 0.5, "normalize": False, "fill": 0.75}
    loss, d = contrastive_loss(**options)
    real, fake, mask, pred = double_batch()
    total, metrics = loss.generator_loss(real, fake, pred, pred, mask)
    neg_masks = mask[None].expand(B, B, 1, S, S)
    head = loss.objective.semantic.projection
    text, sem = hand_terms(d, head, real, fake, mask, neg_masks, fill=0.75, temperature=0.5, normalize=False)
    torch.testing.assert_close(metrics["contra_text"], text, rtol=1e-9, atol=0)
    torch.testing.assert_close(metrics["contra_sem"], sem, rtol=1e-9, atol=0)
    want = math.log(2) + metrics["scat_gen"] + 3.0 * text + 0.5 * sem
    torch.testing.assert_close(total.detach(), want, rtol=1e-9, atol=0)


def test_lama_int_negatives_are_drawn_with_seed_zero() -> None:
    """``negatives=M``: each ``x`` is corrupted by ``M`` fresh masks of a ``MaskGenerator`` seeded with ``seed``
    (default 0), image ``b`` taking draws ``b M .. b M + M - 1``."""
    real, fake, mask, pred = double_batch()
    for options, seed in (({}, 0), ({"seed": 3}, 3)):
        loss, d = contrastive_loss(negatives=2, **options)
        _, metrics = loss.generator_loss(real, fake, pred, pred, mask)
        drawn = MaskGenerator(S, S, seed=seed).sample(2 * B).double().view(B, 2, 1, S, S)
        _, sem = hand_terms(d, loss.objective.semantic.projection, real, fake, mask, drawn)
        torch.testing.assert_close(metrics["contra_sem"], sem, rtol=1e-9, atol=0)


def test_lama_feature_passes_take_at_most_eight_images() -> None:
    """``chunk_size`` (default 8) bounds the images of each autograd-free pass of D: with 4 images the 12
    negatives go as 8 + 4; ``chunk_size=5`` gives 5 + 5 + 2."""
    mask = holes(4)
    real = torch.rand(4, C, S, S, generator=torch.Generator().manual_seed(2)).double()
    fake = (mask * 0.25 + (1 - mask) * real).double()
    pred = torch.zeros(4, 1, S, S, dtype=torch.float64)
    for options, want in (({}, [8, 4]), ({"chunk_size": 5}, [5, 5, 2])):
        loss, d = contrastive_loss(**options)
        sizes: list[int] = []
        d.register_forward_pre_hook(lambda _m, args, seen=sizes: seen.append(args[0].shape[0]))
        loss.generator_loss(real, fake, pred, pred, mask.double())
        assert sizes[-len(want) :] == want, sizes


# ----------------------------------------------------------------------------------------------------------------------
# __init__: feature layers and the projection head's input size
# ----------------------------------------------------------------------------------------------------------------------


def test_lama_auto_picks_each_kind_of_layer_on_its_own() -> None:
    """``"auto"`` for one of the two options picks only that one from the discriminator (patch_d: blocks "1", "3",
    "5"; the last one semantic, 4 channels); the other keeps its given value."""
    d = patch_d()
    text_only = SCATAdversarialLoss(segmenter=tiny_seg(), discriminator=d, textural_layers="auto")
    assert text_only.textural_layers == ("1", "3") and text_only.semantic_layer is None
    assert text_only.feature_dim is None
    sem_only = SCATAdversarialLoss(
        segmenter=tiny_seg(), discriminator=d, textural_layers=("1",), semantic_layer="auto", hidden_features=4
    )
    assert sem_only.textural_layers == ("1",) and sem_only.semantic_layer == "5" and sem_only.feature_dim == 4
    mixed = SCATAdversarialLoss(
        segmenter=tiny_seg(), discriminator=d, textural_layers="auto", semantic_layer="3", hidden_features=4
    )
    assert mixed.textural_layers == ("1", "3") and mixed.semantic_layer == "3" and mixed.feature_dim == 4
    with pytest.raises(ValueError, match=r"^textural_layers/semantic_layer: 'auto' needs discriminator=\.\.\."):
        SCATAdversarialLoss(segmenter=tiny_seg(), semantic_layer="auto")


def test_lama_feature_dim_is_read_from_the_discriminator() -> None:
    """Without ``feature_dim``, a named semantic layer's size is the channels of the last conv up to it ("1": 2,
    the whole network ``""``: its 1-channel output); ``"flatten"`` pooling cannot be told from the structure."""
    d = patch_d()
    for layer, dim in (("1", 2), ("", 1)):
        loss = SCATAdversarialLoss(segmenter=tiny_seg(), discriminator=d, semantic_layer=layer, hidden_features=4)
        assert loss.feature_dim == dim
        assert loss.objective.semantic.projection[0].in_features == dim
    with pytest.raises(ValueError, match=r"^feature_dim: expected a positive int, .* of '1', .* got None; "):
        SCATAdversarialLoss(segmenter=tiny_seg(), discriminator=d, semantic_layer="1", semantic_pool="flatten")
    flat = SCATAdversarialLoss(
        segmenter=tiny_seg(), discriminator=d, semantic_layer="1", semantic_pool="flatten", feature_dim=128
    )
    assert flat.feature_dim == 128


def test_lama_feature_dim_must_be_positive() -> None:
    """``feature_dim=0`` is refused, reporting 0; without a semantic layer (or ``projection=False``) no size is
    needed and none is recorded."""
    with pytest.raises(ValueError, match=r"^feature_dim: expected a positive int, .* got 0; pass feature_dim="):
        lama_loss(semantic_layer="5", feature_dim=0)
    assert lama_loss().feature_dim is None
    assert lama_loss(semantic_layer="5", projection=False).feature_dim is None


def test_lama_layer_names_must_be_strings() -> None:
    """A single string as ``textural_layers`` (not ``"auto"``) and a non-string ``semantic_layer`` are
    ``TypeError`` naming the option."""
    with pytest.raises(TypeError, match=r"^textural_layers: expected 'auto' or a sequence of layer names, got str "):
        lama_loss(textural_layers="model0")
    with pytest.raises(TypeError, match=r"^semantic_layer: expected 'auto', a layer name or None, got int 3$"):
        lama_loss(semantic_layer=3)


def test_lama_scat_resample_fits_the_mask_to_a_coarse_segmenter() -> None:
    """A segmenter with half-resolution logits: the hole mask is resampled by ``scat_resample``, block averages by
    default (``"area"``), any-hole-in-block with ``"max"``; the hinge term is ``mean(-S(x-) * resampled hole)``."""
    real, fake, mask = lama_batch()
    pred = torch.zeros(B, 1, S, S)
    for options, resampled in (
        ({}, F.avg_pool2d(mask, 2)),
        ({"scat_resample": "max"}, F.max_pool2d(mask, 2)),
        ({"scat_resample": "nearest"}, mask[..., ::2, ::2]),
    ):
        torch.manual_seed(0)
        seg = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(C, 1, 1))
        _, metrics = SCATAdversarialLoss(segmenter=seg, **options).generator_loss(real, fake, pred, pred, mask)
        want = (-seg(fake).detach() * resampled).mean()
        torch.testing.assert_close(metrics["scat_gen"], want, rtol=1e-5, atol=1e-7)
