"""``SCATCriterion`` against a hand-written reference step: no FeatureTap, no criterion code, no other mode.

``test_criterion.py`` compares the fast generator step with the criterion's own ``mode="naive"``; both share
the code that builds the composite, the corrupted input, the negatives and the feature triples, so a mistake
there is invisible to it. Here every term of both steps is recomputed from scratch:

* a tiny two-headed discriminator :class:`TinyD` whose features are taken by a **hand-written forward**
  (``F.conv2d`` / ``F.leaky_relu`` on the module's weights), never through hooks or ``FeatureTap``;
* composite, corrupted input and negatives written out here (``h * pred + (1 - h) * x``, ``x * (1 - h) +
  fill * h``, negative ``(b, j)`` = image ``b`` corrupted by mask ``j``);
* the losses from the equations (:mod:`scatloss.reference` per-class terms and InfoNCE, Eq. 3 written out,
  the SCAT mask resampled by ``avg_pool2d``, which is the area rule for an integer factor).

Everything runs in float64 and is compared at 1e-10 relative (terms and gradients). Each case below pins a
defect that the fast-vs-naive comparison cannot see (see ``benchmarks/mutation/README.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scatloss import reference as R
from scatloss.criterion import SCATCriterion
from scatloss.losses import InpaintingObjective

F64 = torch.float64
RTOL = 1e-10  # float64: every path below differs only by summation order
H, W = 16, 20  # pixel head at half resolution: 8 x 10, mask factor 2 in both directions
EPS = 1e-7  # the textural loss's default eps


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyD(nn.Module):
    """Two-headed discriminator: ``x -> conv1 -> act1 -> conv2 -> act2``; ``(global (B, 1), pixel (B, 1, H/2, W/2))``.

    ``conv2`` is a pre-activation map (negative values: the ``relu`` of ``relu_sum`` pooling matters there);
    the pixel head reads ``act1``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.act1 = nn.LeakyReLU(0.2)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.act2 = nn.LeakyReLU(0.2)
        self.head = nn.Linear(6, 1)
        self.pix = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a1 = self.act1(self.conv1(x))
        a2 = self.act2(self.conv2(a1))
        return self.head(torch.relu(a2).sum(dim=(2, 3))), self.pix(a1)


def hand_forward(D: TinyD, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """TinyD's forward written out on its weights: every named activation, plus the two heads."""
    c1 = F.conv2d(x, D.conv1.weight, D.conv1.bias, stride=2, padding=1)
    a1 = F.leaky_relu(c1, 0.2)
    c2 = F.conv2d(a1, D.conv2.weight, D.conv2.bias, stride=2, padding=1)
    a2 = F.leaky_relu(c2, 0.2)
    glob = F.linear(torch.relu(a2).sum(dim=(2, 3)), D.head.weight, D.head.bias)
    pix = F.conv2d(a1, D.pix.weight, D.pix.bias, padding=1)
    return {"conv1": c1, "act1": a1, "conv2": c2, "act2": a2, "global": glob, "pixel": pix}


def make_d(seed: int = 0) -> TinyD:
    torch.manual_seed(seed)
    return TinyD().to(F64).eval()


def rect_masks(n: int, h: int, w: int, offset: int = 0) -> torch.Tensor:
    """``n`` distinct rectangular hole masks ``(n, 1, h, w)``, a deterministic function of the index."""
    masks = torch.zeros(n, 1, h, w, dtype=F64)
    for k in range(n):
        i = k + offset
        top, left = (3 * i) % (h - 5), (5 * i + 1) % (w - 6)
        masks[k, :, top : top + 4 + i % 3, left : left + 5 + i % 4] = 1.0
    return masks


class RecordingSampler:
    """A mask sampler returning distinct known masks; keeps what it returned for the reference."""

    def __init__(self) -> None:
        self.calls: list[torch.Tensor] = []

    def __call__(self, n: int, height: int, width: int) -> torch.Tensor:
        masks = rect_masks(n, height, width, offset=7 + 3 * len(self.calls))
        self.calls.append(masks.clone())
        return masks


def make_batch(b: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, H, W, generator=g, dtype=F64) * 2 - 1
    prediction = torch.rand(b, 3, H, W, generator=g, dtype=F64) * 2 - 1
    return prediction, image, rect_masks(b, H, W)


def pool(feature: torch.Tensor, how: str) -> torch.Tensor:
    if feature.dim() == 2:
        return feature
    if how == "relu_sum":
        return torch.relu(feature).sum(dim=(2, 3))
    if how == "mean":
        return feature.mean(dim=(2, 3))
    return feature.flatten(1)


def reference_generator_terms(
    D: TinyD,
    objective: InpaintingObjective,
    prediction: torch.Tensor,
    image: torch.Tensor,
    hole: torch.Tensor,
    *,
    textural: tuple[str, ...],
    semantic: str,
    semantic_pool: str,
    negative_masks: torch.Tensor,
    fill: float,
    kind: str,
) -> dict[str, torch.Tensor]:
    """Eq. 8's generator terms from the equations. ``negative_masks``: ``(B, M, 1, H, W)``, mask of negative (b, j)."""
    b, m = negative_masks.shape[:2]
    comp = hole * prediction + (1 - hole) * image
    corrupted = image * (1 - hole) + fill * hole
    fa, fp, fn = hand_forward(D, comp), hand_forward(D, image), hand_forward(D, corrupted)
    # Eq. 6 and Eq. 2 (region "hole", area resampling of the mask by an integer factor)
    adv = R.generator_term(fa["global"], kind).mean()
    h_at = F.avg_pool2d(hole, 2)
    assert h_at.shape[-2:] == fa["pixel"].shape[-2:]
    scat = (R.generator_term(fa["pixel"], kind) * h_at).mean()
    # Eq. 3, released form: ratio of batch-mean L1 distances, pulled to x (positive), pushed from x~ (negative)
    text = sum((fa[n] - fp[n]).abs().mean() / ((fa[n] - fn[n]).abs().mean() + EPS) for n in textural)
    # Eq. 4: negative (b, j) = image b with mask j's holes set to fill
    neg_images = torch.stack(
        [image[i] * (1 - negative_masks[i, j]) + fill * negative_masks[i, j] for i in range(b) for j in range(m)]
    )
    neg = pool(hand_forward(D, neg_images)[semantic], semantic_pool).view(b, m, -1)
    anchor, positive = pool(fa[semantic], semantic_pool), pool(fp[semantic], semantic_pool)
    head = objective.semantic.projection
    if head is not None:
        anchor, positive, neg = head(anchor), head(positive), head(neg)
    sem = R.semantic_contrastive_loss(
        anchor, positive, neg, objective.semantic.temperature, objective.semantic.normalize, "mean"
    )
    rec = (prediction - image).abs().mean()
    total = objective.lambda_adv * (adv + scat) + objective.lambda_text * text + objective.lambda_sem * sem
    total = total + objective.lambda_rec * rec
    return {"adv": adv, "scat": scat, "text": text, "sem": sem, "rec": rec, "total": total}  # type: ignore[dict-item]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def check_generator_step(
    *,
    mode: str = "fast",
    negatives: str | int = "batch",
    fill: float = 1.0,
    kind: str = "hinge",
    textural: tuple[str, ...] = ("act1", "conv2"),
    semantic: str = "conv2",
    semantic_pool: str = "relu_sum",
    head: bool = False,
    b: int = 3,
    chunk_size: int = 2,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Run the criterion's generator step and the reference on the same inputs; assert every term and gradient."""
    D = make_d(seed)
    prediction, image, hole = make_batch(b, seed)
    sampler = RecordingSampler()
    torch.manual_seed(1)
    dim = 6 if semantic_pool != "flatten" else 6 * 4 * 5
    objective = InpaintingObjective(
        kind=kind,  # type: ignore[arg-type]
        in_features=dim if head else None,
        hidden_features=5,
        out_features=4,
    ).to(F64)
    crit = SCATCriterion(
        D,
        textural_layers=textural,
        semantic_layer=semantic,
        semantic_pool=semantic_pool,  # type: ignore[arg-type]
        negatives=negatives,  # type: ignore[arg-type]
        mask_sampler=sampler if isinstance(negatives, int) else None,
        fill=fill,
        objective=objective,
        chunk_size=chunk_size,
        mode=mode,  # type: ignore[arg-type]
    )
    pred = prediction.clone().requires_grad_(True)
    got = crit.generator_step(pred, image, hole)
    head_params = list(crit.parameters())
    got_grads = torch.autograd.grad(got["total"], [pred, *head_params])

    if isinstance(negatives, int):
        assert len(sampler.calls) == 1 and sampler.calls[0].shape[0] == b * negatives
        masks = sampler.calls[0].view(b, negatives, 1, H, W)  # row-major: (image b, mask j)
    else:
        masks = hole.unsqueeze(0).expand(b, b, 1, H, W)  # negative (b, j): image b, the batch's mask j
    ref_pred = prediction.clone().requires_grad_(True)
    want = reference_generator_terms(
        D,
        objective,
        ref_pred,
        image,
        hole,
        textural=textural,
        semantic=semantic,
        semantic_pool=semantic_pool,
        negative_masks=masks,
        fill=fill,
        kind=kind,
    )
    want_grads = torch.autograd.grad(want["total"], [ref_pred, *head_params])

    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=RTOL, atol=0.0, msg=f"term {name}")
    for i, (g, w) in enumerate(zip(got_grads, want_grads, strict=True)):
        assert w.abs().sum() > 0, f"gradient {i} of the reference is zero: the check would be vacuous"
        assert rel(g, w) <= RTOL, f"gradient {i} ({'prediction' if i == 0 else 'head'}) differs by {rel(g, w):.2e}"
    return got


# ------------------------------------------------------------------------------------------------------------------
# generator step
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fast", "naive"])
@pytest.mark.parametrize("kind", ["hinge", "bce", "ls"])
@pytest.mark.parametrize("negatives", ["batch", 2])
def test_generator_step_equals_the_hand_written_reference(mode: str, kind: str, negatives: str | int) -> None:
    check_generator_step(mode=mode, kind=kind, negatives=negatives, head=True)


@pytest.mark.parametrize("mode", ["fast", "naive"])
def test_textural_term_pulls_towards_the_ground_truth_not_the_corrupted_input(mode: str) -> None:
    """Positive = ground-truth features (numerator), negative = corrupted-input features (denominator).

    Pins: positive and negative swapped in the textural triple."""
    got = check_generator_step(mode=mode, textural=("act1", "act2"))
    D = make_d()
    prediction, image, hole = make_batch()
    comp = hole * prediction + (1 - hole) * image
    with torch.no_grad():
        fa, fp = hand_forward(D, comp)["act1"], hand_forward(D, image)["act1"]
        fn = hand_forward(D, image * (1 - hole) + hole)["act1"]
        num, den = (fa - fp).abs().mean(), (fa - fn).abs().mean()
    assert abs(float(num / den - den / num)) > 1e-3  # the swap changes the value: the comparison above can see it
    assert got["text"] > 0


@pytest.mark.parametrize("mode", ["fast", "naive"])
@pytest.mark.parametrize("negatives", ["batch", 3])
def test_semantic_positive_is_the_ground_truth(mode: str, negatives: str | int) -> None:
    """Pins: the semantic positive taken from the corrupted input instead of the ground truth."""
    check_generator_step(mode=mode, negatives=negatives, textural=("act1",))


@pytest.mark.parametrize("mode", ["fast", "naive"])
@pytest.mark.parametrize("chunk_size", [1, 2, 16])
def test_batch_negatives_are_image_b_with_mask_j(mode: str, chunk_size: int) -> None:
    """``negatives="batch"``: negative (b, j) is image b corrupted by the batch's mask j, not image j by mask b.

    Four images with four distinct rectangular masks, so every (b, j) pairing gives a different image."""
    check_generator_step(mode=mode, negatives="batch", b=4, chunk_size=chunk_size)


@pytest.mark.parametrize("mode", ["fast", "naive"])
@pytest.mark.parametrize("m", [1, 2, 3])
def test_sampled_negatives_use_every_drawn_mask_in_row_major_order(mode: str, m: int) -> None:
    """``negatives=M``: the sampler's ``B*M`` masks, row-major (image b, mask j); not the first M masks for every image.

    The recording sampler returns ``B*M`` distinct known rectangles and the reference uses exactly those."""
    check_generator_step(mode=mode, negatives=m, b=3, chunk_size=2)


@pytest.mark.parametrize("mode", ["fast", "naive"])
@pytest.mark.parametrize("fill", [0.0, -1.0, 0.25])
@pytest.mark.parametrize("negatives", ["batch", 2])
def test_fill_reaches_the_corrupted_input_and_the_negatives(mode: str, fill: float, negatives: str | int) -> None:
    """Pins: ``fill`` ignored (in the corrupted input of Eq. 3 or in the negatives of Eq. 4); LaMa uses 0.0."""
    check_generator_step(mode=mode, fill=fill, negatives=negatives)


@pytest.mark.parametrize("mode", ["fast", "naive"])
@pytest.mark.parametrize("semantic_pool", ["relu_sum", "mean", "flatten"])
def test_semantic_map_pooling(mode: str, semantic_pool: str) -> None:
    """Pins: ``relu`` dropped from ``relu_sum``. The pooled map (conv2, pre-activation) has negative values."""
    D = make_d()
    _, image, _ = make_batch()
    conv2 = hand_forward(D, image)["conv2"]
    assert (conv2 < -1e-3).any() and (conv2 > 1e-3).any()
    relu_sum, plain_sum = torch.relu(conv2).sum(dim=(2, 3)), conv2.sum(dim=(2, 3))
    assert (relu_sum - plain_sum).abs().max() > 1e-2  # dropping relu changes the pooled vector
    check_generator_step(mode=mode, semantic_pool=semantic_pool, textural=("act1",))


def test_vector_semantic_feature_is_used_unpooled() -> None:
    """A ``(B, D)`` feature (``head:input``) goes to InfoNCE as it is."""
    D = make_d()
    prediction, image, hole = make_batch()
    crit = SCATCriterion(D, semantic_layer="head:input", terms=("sem",), fill=0.5)
    got = crit.generator_step(prediction, image, hole)

    def vec(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(hand_forward(D, x)["act2"]).sum(dim=(2, 3))

    b = image.shape[0]
    comp = hole * prediction + (1 - hole) * image
    negs = torch.stack([vec(image * (1 - hole[j]) + 0.5 * hole[j]) for j in range(b)], dim=1)
    want = R.semantic_contrastive_loss(vec(comp), vec(image), negs, 0.07, True, "mean")
    torch.testing.assert_close(got["sem"], want, rtol=RTOL, atol=0.0)


# ------------------------------------------------------------------------------------------------------------------
# discriminator step
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hinge", "bce", "ls"])
def test_discriminator_step_equals_the_hand_written_reference(kind: str) -> None:
    D = make_d()
    prediction, image, hole = make_batch()
    crit = SCATCriterion(D, objective=InpaintingObjective(kind=kind))  # type: ignore[arg-type]
    got = crit.discriminator_step(prediction, image, hole)
    params = list(D.parameters())
    got_grads = torch.autograd.grad(got["total"], params)

    comp = hole * prediction + (1 - hole) * image
    fake, real = hand_forward(D, comp), hand_forward(D, image)
    adv = R.real_term(real["global"], kind).mean() + R.fake_term(fake["global"], kind).mean()
    h = F.avg_pool2d(hole, 2)
    per_pixel = (1 - h) * R.real_term(fake["pixel"], kind) + h * R.fake_term(fake["pixel"], kind)
    scat = (per_pixel + R.real_term(real["pixel"], kind)).mean()
    want_grads = torch.autograd.grad(adv + scat, params)

    torch.testing.assert_close(got["adv"], adv, rtol=RTOL, atol=0.0)
    torch.testing.assert_close(got["scat"], scat, rtol=RTOL, atol=0.0)
    torch.testing.assert_close(got["total"], adv + scat, rtol=RTOL, atol=0.0)
    for i, (g, w) in enumerate(zip(got_grads, want_grads, strict=True)):
        assert w.abs().sum() > 0
        assert rel(g, w) <= RTOL, f"D parameter {i} gradient differs by {rel(g, w):.2e}"


@pytest.mark.parametrize("kind", ["hinge", "bce", "ls"])
def test_separate_segmenter_terms_equal_the_reference(kind: str) -> None:
    """The paper's layout (D global only, a separate S): S's terms in both steps, the SCAT mask at full size."""
    D = make_d()
    torch.manual_seed(3)
    S = nn.Conv2d(3, 1, 3, padding=1).to(F64)
    prediction, image, hole = make_batch()
    objective = InpaintingObjective(kind=kind)  # type: ignore[arg-type]
    crit = SCATCriterion(D, segmenter=S, objective=objective, terms=("adv", "scat"))

    def seg(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, S.weight, S.bias, padding=1)

    comp_d = hole * prediction + (1 - hole) * image
    d_terms = crit.discriminator_step(prediction, image, hole)
    d_scat = ((1 - hole) * R.real_term(seg(comp_d), kind) + hole * R.fake_term(seg(comp_d), kind)).mean()
    d_scat = d_scat + R.real_term(seg(image), kind).mean()
    torch.testing.assert_close(d_terms["scat"], d_scat, rtol=RTOL, atol=0.0)

    pred = prediction.clone().requires_grad_(True)
    g_terms = crit.generator_step(pred, image, hole)
    (g_grad,) = torch.autograd.grad(g_terms["total"], pred)
    ref_pred = prediction.clone().requires_grad_(True)
    comp = hole * ref_pred + (1 - hole) * image
    adv = R.generator_term(hand_forward(D, comp)["global"], kind).mean()
    scat = (R.generator_term(seg(comp), kind) * hole).mean()
    total = adv + scat + 10 * (ref_pred - image).abs().mean()
    (want_grad,) = torch.autograd.grad(total, ref_pred)
    torch.testing.assert_close(g_terms["adv"], adv, rtol=RTOL, atol=0.0)
    torch.testing.assert_close(g_terms["scat"], scat, rtol=RTOL, atol=0.0)
    assert rel(g_grad, want_grad) <= RTOL


# ------------------------------------------------------------------------------------------------------------------
# the default mask sampler of negatives=M
# ------------------------------------------------------------------------------------------------------------------


def _semantic_reference(
    D: TinyD,
    crit: SCATCriterion,
    prediction: torch.Tensor,
    image: torch.Tensor,
    hole: torch.Tensor,
    negative_masks: torch.Tensor,
) -> torch.Tensor:
    """Eq. 6 (``conv2``, relu-sum, the criterion's ``fill``) with negative ``(b, j)`` = image ``b`` corrupted by
    ``negative_masks[b, j]`` (``(B, M, 1, H, W)``)."""
    want = reference_generator_terms(
        D,
        crit.objective,
        prediction,
        image,
        hole,
        textural=(),
        semantic="conv2",
        semantic_pool="relu_sum",
        negative_masks=negative_masks,
        fill=crit.fill,
        kind="hinge",
    )
    return want["sem"]


def _semantic_only(crit: SCATCriterion, D: TinyD, b: int, h: int, w: int, masks: torch.Tensor) -> None:
    """The criterion's semantic term on a ``b x 3 x h x w`` batch equals the reference with negatives ``masks``."""
    g = torch.Generator().manual_seed(h * w)
    image = torch.rand(b, 3, h, w, generator=g, dtype=F64) * 2 - 1
    prediction = torch.rand(b, 3, h, w, generator=g, dtype=F64) * 2 - 1
    hole = rect_masks(b, h, w)
    got = crit.generator_step(prediction, image, hole)
    m = masks.shape[0] // b
    want = _semantic_reference(D, crit, prediction, image, hole, masks.to(F64).view(b, m, 1, h, w))
    torch.testing.assert_close(got["sem"], want, rtol=RTOL, atol=0.0)


def test_default_sampler_is_a_seeded_mask_generator_per_image_size() -> None:
    """``negatives=M`` without a sampler: ``MaskGenerator(H, W, seed=seed)``, one per size, its stream continued."""
    from scatloss.masks import MaskGenerator

    D = make_d()
    crit = SCATCriterion(D, semantic_layer="conv2", terms=("sem",), negatives=2, seed=5)
    big, small = MaskGenerator(H, W, seed=5), MaskGenerator(12, 16, seed=5)
    _semantic_only(crit, D, 3, H, W, big.sample(6))
    _semantic_only(crit, D, 3, 12, 16, small.sample(6))
    _semantic_only(crit, D, 3, H, W, big.sample(6))  # the 16 x 20 stream goes on where it stopped


@pytest.mark.parametrize("n_wrong", [-1, 1])
def test_mask_sampler_returning_the_wrong_number_of_masks_raises(n_wrong: int) -> None:
    D = make_d()

    def sampler(n: int, h: int, w: int) -> torch.Tensor:
        return rect_masks(n + n_wrong, h, w)

    crit = SCATCriterion(D, semantic_layer="conv2", terms=("sem",), negatives=2, mask_sampler=sampler)
    with pytest.raises(ValueError, match=r"^mask_sampler\(\.\.\.\): expected batch size 6"):
        crit.generator_step(*make_batch())


@pytest.mark.parametrize("bad", [2.0, -0.5, float("nan")])
def test_mask_sampler_values_are_checked_inside_the_step(bad: float) -> None:
    """The step's inputs are checked once at entry; the sampler's masks arrive later and are checked themselves."""
    D = make_d()

    def sampler(n: int, h: int, w: int) -> torch.Tensor:
        masks = rect_masks(n, h, w)
        masks[-1, 0, 0, 0] = bad
        return masks

    crit = SCATCriterion(D, semantic_layer="conv2", terms=("sem",), negatives=2, mask_sampler=sampler)
    with pytest.raises(ValueError, match=r"^mask_sampler\(\.\.\.\): expected values in \[0, 1\]"):
        crit.generator_step(*make_batch())


# ------------------------------------------------------------------------------------------------------------------
# discriminator step: which networks run, which head is read
# ------------------------------------------------------------------------------------------------------------------


def _count_calls(net: nn.Module) -> list[int]:
    calls: list[int] = []
    net.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize("kind", ["hinge", "ls"])
def test_discriminator_step_with_only_the_scat_term(kind: str) -> None:
    """``terms=("scat",)``: D's pixel head (two-head layout) on composite and ground truth; with a separate S, D
    does not run at all."""
    prediction, image, hole = make_batch()
    comp = hole * prediction + (1 - hole) * image
    h = F.avg_pool2d(hole, 2)

    D = make_d()
    d_calls = _count_calls(D)
    crit = SCATCriterion(D, objective=InpaintingObjective(kind=kind), terms=("scat",))  # type: ignore[arg-type]
    got = crit.discriminator_step(prediction, image, hole)
    fake, real = hand_forward(D, comp)["pixel"], hand_forward(D, image)["pixel"]
    want = ((1 - h) * R.real_term(fake, kind) + h * R.fake_term(fake, kind) + R.real_term(real, kind)).mean()
    assert set(got) == {"scat", "total"} and d_calls == [3, 3]
    torch.testing.assert_close(got["scat"], want, rtol=RTOL, atol=0.0)

    D2 = make_d()
    d2_calls = _count_calls(D2)
    torch.manual_seed(3)
    S = nn.Conv2d(3, 1, 3, padding=1).to(F64)
    crit = SCATCriterion(D2, segmenter=S, objective=InpaintingObjective(kind=kind), terms=("scat",))  # type: ignore[arg-type]
    got = crit.discriminator_step(prediction, image, hole)
    fake, real = F.conv2d(comp, S.weight, S.bias, padding=1), F.conv2d(image, S.weight, S.bias, padding=1)
    want = ((1 - hole) * R.real_term(fake, kind) + hole * R.fake_term(fake, kind) + R.real_term(real, kind)).mean()
    assert d2_calls == [], "the discriminator must not run when only the separate segmenter's term is asked for"
    torch.testing.assert_close(got["scat"], want, rtol=RTOL, atol=0.0)


class PixelOnlyD(nn.Module):
    """A discriminator returning one tensor, its per-pixel map (``global_output=None``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_single_tensor_output_is_the_pixel_map_without_a_global_head() -> None:
    torch.manual_seed(0)
    D = PixelOnlyD().to(F64)
    prediction, image, hole = make_batch()
    crit = SCATCriterion(D, global_output=None, pixel_output=0)
    assert crit.terms == ("scat", "rec")
    comp = hole * prediction + (1 - hole) * image
    fake, real = (
        F.conv2d(comp, D.conv.weight, D.conv.bias, padding=1),
        F.conv2d(image, D.conv.weight, D.conv.bias, padding=1),
    )
    d_want = (1 - hole) * R.real_term(fake, "hinge") + hole * R.fake_term(fake, "hinge") + R.real_term(real, "hinge")
    torch.testing.assert_close(
        crit.discriminator_step(prediction, image, hole)["scat"], d_want.mean(), rtol=RTOL, atol=0.0
    )
    g_want = (R.generator_term(fake, "hinge") * hole).mean()
    torch.testing.assert_close(crit.generator_step(prediction, image, hole)["scat"], g_want, rtol=RTOL, atol=0.0)


class ScriptedD(nn.Module):
    """Returns ``{"global": (B, 1), "pixel": (B, 1, H, W)}``, except on call number ``bad_call``, where ``missing`` is
    left out (a discriminator whose output structure is not what the criterion was told)."""

    def __init__(self, bad_call: int, missing: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        self.bad_call, self.missing, self.calls = bad_call, missing, 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.conv(x)
        out = {"global": p.mean(dim=(2, 3)), "pixel": p}
        if self.calls == self.bad_call:
            del out[self.missing]
        self.calls += 1
        return out


@pytest.mark.parametrize(
    ("step", "bad_call", "missing"),
    # the discriminator step runs D on the composite (call 0) and the ground truth (call 1); the generator step,
    # with only these terms, once on the composite
    [(s, c, m) for s, c in (("discriminator", 0), ("discriminator", 1), ("generator", 0)) for m in ("global", "pixel")],
)
def test_a_missing_head_is_named_by_its_option(step: str, bad_call: int, missing: str) -> None:
    """The error names the option (``global_output`` / ``pixel_output``), whichever pass and head lack it."""
    D = ScriptedD(bad_call, missing).to(F64)
    crit = SCATCriterion(D, global_output="global", pixel_output="pixel", terms=("adv", "scat"))
    with pytest.raises(ValueError, match=rf"^{missing}_output: expected index or key '{missing}'"):
        getattr(crit, f"{step}_step")(*make_batch())


def test_discriminator_step_accepts_a_ground_truth_that_requires_grad() -> None:
    """An R1 penalty needs ``image.requires_grad`` (LaMa sets it before its discriminator step) while the prediction
    is detached: the generator step's swapped-arguments check must not fire here, and the gradient reaches the
    image as the reference's does."""
    D = make_d()
    prediction, image, hole = make_batch()
    image = image.requires_grad_(True)
    crit = SCATCriterion(D)
    got = crit.discriminator_step(prediction, image, hole)
    (g_got,) = torch.autograd.grad(got["total"], image)
    ref_image = image.detach().requires_grad_(True)
    comp = hole * prediction + (1 - hole) * ref_image
    fake, real = hand_forward(D, comp), hand_forward(D, ref_image)
    h = F.avg_pool2d(hole, 2)
    adv = R.real_term(real["global"], "hinge").mean() + R.fake_term(fake["global"], "hinge").mean()
    scat = (
        (1 - h) * R.real_term(fake["pixel"], "hinge")
        + h * R.fake_term(fake["pixel"], "hinge")
        + R.real_term(real["pixel"], "hinge")
    ).mean()
    (g_want,) = torch.autograd.grad(adv + scat, ref_image)
    torch.testing.assert_close(got["total"], adv + scat, rtol=RTOL, atol=0.0)
    assert rel(g_got, g_want) <= RTOL


@pytest.mark.parametrize("mode", ["fast", "naive"])
@pytest.mark.parametrize("rank", [0, 1, 2])
def test_global_negatives_use_every_ranks_masks_with_this_ranks_own_at_its_offset(
    mode: str, rank: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``negatives_from="global"``: negative (b, j) is image b corrupted by mask j of the masks of all ranks in rank
    order; this rank's own masks sit at ``rank * B``. The all_gather is replaced by a stand-in for rank ``rank`` of
    3 (the collective itself runs in tests/test_distributed.py)."""
    D = make_d()
    prediction, image, hole = make_batch(b=2)
    others = [rect_masks(2, H, W, offset=5 + 2 * r) for r in range(2)]
    gathered = torch.cat([*others[:rank], hole, *others[rank:]])
    crit = SCATCriterion(
        D, semantic_layer="conv2", terms=("sem",), negatives_from="global", fill=0.5, chunk_size=3, mode=mode
    )  # type: ignore[arg-type]
    monkeypatch.setattr(crit, "_gather_holes", lambda h: (gathered, rank * h.shape[0]))
    got = crit.generator_step(prediction, image, hole)
    want = _semantic_reference(D, crit, prediction, image, hole, gathered.expand(2, 6, 1, H, W))
    torch.testing.assert_close(got["sem"], want, rtol=RTOL, atol=0.0)


class FakeWorld:
    """``torch.distributed`` as rank ``rank`` of ``len(holes)`` sees it, in one process: ``all_gather`` fills every
    other rank's slot with that rank's scripted tensor (its world size and mask shape first, then its masks), and
    records each call with the group it was given. No collective runs: the real one is in tests/test_distributed.py;
    this one lets the mutation run (one process) reach every line of ``SCATCriterion._gather_holes``."""

    def __init__(self, rank: int, holes: list[torch.Tensor], worlds: list[int] | None = None) -> None:
        self.rank, self.holes = rank, holes
        self.worlds = worlds if worlds is not None else [len(holes)] * len(holes)
        self.calls: list[tuple[str, Any]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch, initialized: bool = True) -> None:
        import torch.distributed as dist

        monkeypatch.setattr(dist, "is_available", lambda: True)
        monkeypatch.setattr(dist, "is_initialized", lambda: initialized)
        monkeypatch.setattr(dist, "get_world_size", self.get_world_size)
        monkeypatch.setattr(dist, "get_rank", self.get_rank)
        monkeypatch.setattr(dist, "all_gather", self.all_gather)

    def get_world_size(self, group: Any = None) -> int:
        self.calls.append(("get_world_size", group))
        return self.worlds[self.rank]

    def get_rank(self, group: Any = None) -> int:
        self.calls.append(("get_rank", group))
        return self.rank

    def all_gather(self, parts: list[torch.Tensor], tensor: torch.Tensor, group: Any = None) -> None:
        first = not any(name == "all_gather" for name, _ in self.calls)
        self.calls.append(("all_gather", group))
        assert len(parts) == len(self.holes), "one slot per rank"
        for i, part in enumerate(parts):
            if i == self.rank:
                want = tensor
            elif first:  # the metadata exchange: (world size, *mask shape)
                want = torch.tensor([self.worlds[i], *self.holes[i].shape], dtype=torch.int64)
            else:
                want = self.holes[i].to(tensor.dtype)
            assert part.shape == want.shape and part.dtype == tensor.dtype, "slots shaped like the local tensor"
            part.copy_(want)


GROUP = object()  # a process group stand-in: every call must name the criterion's group, not the default one


@pytest.mark.parametrize("dtype", [F64, torch.float16, torch.bool])
@pytest.mark.parametrize(("rank", "world"), [(0, 2), (1, 2), (2, 3)])
def test_gather_holes_concatenates_every_ranks_masks_in_rank_order(
    rank: int, world: int, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    holes = [rect_masks(2, H, W, offset=3 * r).to(dtype) for r in range(world)]
    fake = FakeWorld(rank, holes)
    fake.install(monkeypatch)
    crit = SCATCriterion(make_d(), terms=("sem",), semantic_layer="conv2", negatives_from="global", process_group=GROUP)
    masks, offset = crit._gather_holes(holes[rank])
    assert masks.dtype == dtype and masks.shape == (2 * world, 1, H, W)
    assert torch.equal(masks, torch.cat(holes)) and offset == 2 * rank
    assert [name for name, _ in fake.calls].count("all_gather") == 2
    assert all(group is GROUP for _, group in fake.calls), fake.calls


def test_gather_holes_without_a_process_group_or_with_one_rank_returns_the_local_masks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hole = rect_masks(2, H, W)
    crit = SCATCriterion(make_d(), terms=("sem",), semantic_layer="conv2", negatives_from="global")
    for initialized, holes in [(False, [hole, hole]), (True, [hole])]:
        fake = FakeWorld(0, holes)
        fake.install(monkeypatch, initialized=initialized)
        masks, offset = crit._gather_holes(hole)
        assert masks is hole and offset == 0
        assert not any(name == "all_gather" for name, _ in fake.calls)
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_available", lambda: False)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # never asked when distributed is unavailable
    assert crit._gather_holes(hole) == (hole, 0)


def test_gather_holes_refuses_ranks_that_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another world size on rank 2 (e.g. another group), or another mask shape on rank 1: named errors listing
    every rank's value in rank order, raised before the masks are exchanged."""
    crit = SCATCriterion(make_d(), terms=("sem",), semantic_layer="conv2", negatives_from="global")
    holes = [rect_masks(2, H, W) for _ in range(3)]
    fake = FakeWorld(0, holes, worlds=[3, 3, 4])
    fake.install(monkeypatch)
    with pytest.raises(ValueError, match=r"world size of 3, got \[3, 3, 4\]"):
        crit._gather_holes(holes[0])
    for other, shown in [
        (rect_masks(3, H, W), r"rank 1: \(3, 1, 16, 20\)"),
        (rect_masks(2, H, W + 2), r"rank 1: \(2, 1, 16, 22\)"),
    ]:
        fake = FakeWorld(0, [holes[0], other])
        fake.install(monkeypatch)
        with pytest.raises(ValueError, match=rf"same mask shape on every rank.*rank 0: \(2, 1, 16, 20\).*{shown}"):
            crit._gather_holes(holes[0])
        assert [name for name, _ in fake.calls].count("all_gather") == 1


@pytest.mark.parametrize("mode", ["fast", "naive"])
def test_global_negatives_through_the_gather_equal_the_reference(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole generator step with ``_gather_holes`` itself running (rank 1 of 2, a stand-in collective): the
    semantic term is Eq. 6 with every rank's masks as negatives (this rank's own at offset B)."""
    D = make_d()
    prediction, image, hole = make_batch(b=2)
    other = rect_masks(2, H, W, offset=7)
    FakeWorld(1, [other, hole]).install(monkeypatch)
    crit = SCATCriterion(
        D,
        semantic_layer="conv2",
        terms=("sem",),
        negatives_from="global",
        fill=0.5,
        mode=mode,  # type: ignore[arg-type]
    )
    got = crit.generator_step(prediction, image, hole)
    want = _semantic_reference(D, crit, prediction, image, hole, torch.cat([other, hole]).expand(2, 4, 1, H, W))
    torch.testing.assert_close(got["sem"], want, rtol=RTOL, atol=0.0)


@pytest.mark.parametrize("negatives", ["batch", 2])
def test_autograd_free_passes_never_exceed_chunk_size(negatives: str | int) -> None:
    """Ground truth, corrupted input and negatives run in passes of at most ``chunk_size`` images (3 here, equal
    to the channel count, with a batch of 4); the composite's autograd pass is whole."""
    D = make_d()
    passes: list[tuple[int, bool]] = []
    D.register_forward_pre_hook(lambda module, args: passes.append((args[0].shape[0], torch.is_grad_enabled())))
    crit = SCATCriterion(
        D,
        textural_layers=("act1",),
        semantic_layer="conv2",
        negatives=negatives,  # type: ignore[arg-type]
        mask_sampler=RecordingSampler(),
        chunk_size=3,
    )
    crit.generator_step(*make_batch(b=4))
    assert passes[0] == (4, True)
    no_grad = [n for n, grad in passes[1:]]
    assert not any(grad for _, grad in passes[1:])
    assert max(no_grad) <= 3
    # x and x~ (4 images each, in 3 + 1) and the negatives (4 * 4 - 4 own masks, or 4 * 2)
    assert sum(no_grad) == 8 + (12 if negatives == "batch" else 8)


@pytest.mark.parametrize("mode", ["fast", "naive"])
@pytest.mark.parametrize("negatives", ["batch", 2])
def test_steps_keep_every_tensor_on_the_inputs_device(mode: str, negatives: str | int) -> None:
    """A second device without a GPU: networks and inputs on ``meta``, the mask sampler returning CPU masks (as a
    MaskGenerator does). Every term comes back on ``meta``: masks, indices and features are moved to the inputs'
    device, whatever device the sampler used."""
    with torch.device("meta"):
        D = TinyD().to(F64)
    sampler = RecordingSampler()
    crit = SCATCriterion(
        D,
        textural_layers=("act1",),
        semantic_layer="conv2",
        negatives=negatives,  # type: ignore[arg-type]
        mask_sampler=sampler,
        chunk_size=2,
        mode=mode,  # type: ignore[arg-type]
    )
    prediction, image, hole = (t.to("meta") for t in make_batch())
    terms = crit.generator_step(prediction.requires_grad_(True), image, hole)
    terms["total"].backward()
    d_terms = crit.discriminator_step(prediction, image, hole)
    assert all(v.device.type == "meta" for v in (*terms.values(), *d_terms.values()))
    assert prediction.grad is not None and prediction.grad.device.type == "meta"
    assert all(m.device.type == "cpu" for m in sampler.calls) and len(sampler.calls) == (negatives != "batch")


# ------------------------------------------------------------------------------------------------------------------
# input checks against the networks
# ------------------------------------------------------------------------------------------------------------------


class ParameterFreeD(nn.Module):
    """A discriminator without parameters (its dtype cannot be checked): a fixed global and pixel score."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean(dim=(1, 2, 3)).unsqueeze(1), x.mean(dim=1, keepdim=True)


def test_image_dtype_is_checked_against_the_segmenter_too() -> None:
    """The segmenter is checked after the discriminator, also when the discriminator has no parameters."""
    prediction, image, hole = make_batch()
    S = nn.Conv2d(3, 1, 3, padding=1)  # float32, the inputs float64
    for D in (make_d(), ParameterFreeD()):
        crit = SCATCriterion(D, segmenter=S, pixel_output=None)
        with pytest.raises(TypeError, match=r"^image: expected dtype torch.float32 like the segmenter's parameters"):
            crit.discriminator_step(prediction, image, hole)
    with pytest.raises(TypeError, match=r"^image: expected dtype torch.float32 like the discriminator's parameters"):
        SCATCriterion(make_d().float()).generator_step(prediction, image, hole)


def test_swapped_prediction_and_image_are_refused_in_the_generator_step() -> None:
    prediction, image, hole = make_batch()
    crit = SCATCriterion(make_d())
    with pytest.raises(ValueError, match=r"^prediction, image: expected the generator's output .* look swapped"):
        crit.generator_step(prediction, image.clone().requires_grad_(True), hole)
    # both with gradient (e.g. an image produced by a differentiable augmentation): not a swap
    terms = crit.generator_step(prediction.clone().requires_grad_(True), image.clone().requires_grad_(True), hole)
    assert torch.isfinite(terms["total"])


@pytest.mark.parametrize("step", ["generator", "discriminator"])
def test_a_bad_image_is_named_as_the_image(step: str) -> None:
    """A 3-D image, or an empty batch, is reported as a problem of ``image`` (not of ``prediction``)."""
    prediction, image, hole = make_batch()
    crit = SCATCriterion(make_d())
    run = getattr(crit, f"{step}_step")
    with pytest.raises(ValueError, match=r"^image: expected a 4-D"):
        run(prediction, image[0], hole)
    with pytest.raises(ValueError, match=r"^image: expected a non-empty batch \(B >= 1\)"):
        run(prediction[:0], image[:0], hole[:0])


def test_boundary_heuristics_name_the_argument_the_convention_and_the_switch() -> None:
    """Image range and mask convention errors say what, whose convention and how to switch the check off."""
    prediction, image, hole = make_batch()
    crit = SCATCriterion(make_d())
    zero_one = (image + 1) / 2
    with pytest.raises(
        ValueError,
        match=r"^image: expected images in \[-1, 1\] \(SCATCriterion's convention\), got values in .* "
        r"pass check_inputs=False if",
    ):
        crit.generator_step(prediction, zero_one, hole)
    comp = hole * prediction + (1 - hole) * image
    with pytest.raises(
        ValueError,
        match=r"^hole: expected a hole mask \(1 = missing pixel, scatloss's convention\).* or check_inputs=False to",
    ):
        crit.discriminator_step(comp, image, 1 - hole)  # a valid mask (1 = known) where a hole mask belongs
    mostly_holes = 1 - rect_masks(3, H, W)
    with pytest.raises(
        ValueError,
        match=r"^hole: expected a hole mask \(1 = missing pixel\) with a mean hole ratio of at most 0.6, .* or "
        r"check_inputs=False if",
    ):
        crit.generator_step(prediction, image, mostly_holes)
    assert torch.isfinite(SCATCriterion(make_d(), image_range=None).generator_step(prediction, zero_one, hole)["total"])
    unit = SCATCriterion(make_d(), image_range=(0.0, 1.0))
    assert torch.isfinite(unit.generator_step((prediction + 1) / 2, zero_one, hole)["total"])
    with pytest.raises(ValueError, match=r"^image: expected images in \[0, 1\] \(SCATCriterion's convention\)"):
        unit.generator_step(prediction, image, hole)


# ------------------------------------------------------------------------------------------------------------------
# configuration errors
# ------------------------------------------------------------------------------------------------------------------

BAD_OPTIONS = {
    "check_inputs": ({"check_inputs": 1}, TypeError, r"check_inputs: expected a bool, got int 1"),
    "image_range-length": ({"image_range": (0.0,)}, TypeError, r"image_range: expected a \(low, high\) pair"),
    "image_range-type": ({"image_range": 3.0}, TypeError, r"image_range: expected a \(low, high\) pair"),
    "image_range[0]": ({"image_range": ("a", 1.0)}, TypeError, r"image_range\[0\]: expected a finite number"),
    "image_range[1]": ({"image_range": (0.0, float("nan"))}, ValueError, r"image_range\[1\]: expected a finite number"),
    "image_range-order": (
        {"image_range": (1.0, 1.0)},
        ValueError,
        r"image_range: expected low < high, got \(1.0, 1.0\)",
    ),
    "segmenter": ({"segmenter": "S"}, TypeError, r"segmenter: expected a torch.nn.Module or None"),
    "textural_layers": ({"textural_layers": "act1"}, TypeError, r"textural_layers: expected a sequence of layer names"),
    "semantic_pool": (
        {"semantic_pool": "max"},
        ValueError,
        r"semantic_pool: expected one of 'relu_sum', 'mean', 'flatten'",
    ),
    "negatives-0": ({"negatives": 0}, ValueError, r"negatives: expected 'batch' or an int M >= 1, got 0"),
    "negatives-bool": ({"negatives": True}, ValueError, r"negatives: expected 'batch' or an int M >= 1, got True"),
    "negatives_from": ({"negatives_from": "world"}, ValueError, r"negatives_from: expected one of 'local', 'global'"),
    "chunk_size": ({"chunk_size": 0}, ValueError, r"chunk_size: expected an int >= 1, got 0"),
    "chunk_size-bool": ({"chunk_size": True}, ValueError, r"chunk_size: expected an int >= 1, got True"),
    "chunk_size-float": ({"chunk_size": 2.0}, ValueError, r"chunk_size: expected an int >= 1, got 2.0"),
    "fill": ({"fill": float("inf")}, ValueError, r"fill: expected a finite float, got inf"),
    "objective": ({"objective": "x"}, TypeError, r"objective: expected an InpaintingObjective"),
    "mode": ({"mode": "slow"}, ValueError, r"mode: expected one of 'fast', 'naive', got 'slow'"),
    "terms-unknown": ({"terms": ("adv", "gan")}, ValueError, r"terms: expected a subset of .* got unknown \['gan'\]"),
    "terms-missing": ({"terms": ("text",)}, ValueError, r"terms: \['text'\] requested but the criterion is not"),
    "layer": ({"textural_layers": ("nope",)}, ValueError, r"SCATCriterion: the discriminator lacks a layer"),
}


@pytest.mark.parametrize(("kwargs", "error", "match"), list(BAD_OPTIONS.values()), ids=list(BAD_OPTIONS))
def test_bad_options_raise_naming_the_option(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match="^" + match):
        SCATCriterion(make_d(), **kwargs)


def test_boundary_options_are_accepted() -> None:
    crit = SCATCriterion(
        make_d(), semantic_layer="conv2", negatives=1, chunk_size=1, image_range=[0, 1], mask_sampler=RecordingSampler()
    )
    assert (crit.negatives, crit.chunk_size, crit.image_range) == (1, 1, (0.0, 1.0))
    assert SCATCriterion(make_d(), image_range=(-2, 3)).image_range == (-2.0, 3.0)
    assert SCATCriterion(make_d(), terms=("adv", "scat")).terms == ("adv", "scat", "rec")
    with pytest.raises(TypeError, match=r"^discriminator: expected a torch.nn.Module"):
        SCATCriterion("D")  # type: ignore[arg-type]


def test_documented_defaults() -> None:
    """The defaults the docstring promises (the release's choices), and the default sampler's seed 0."""
    crit = SCATCriterion(make_d())
    assert (crit.global_output, crit.pixel_output, crit.semantic_pool) == (0, 1, "relu_sum")
    assert (crit.negatives, crit.negatives_from, crit.process_group, crit.mask_sampler) == (
        "batch",
        "local",
        None,
        None,
    )
    assert (crit.seed, crit.chunk_size, crit.fill, crit.mode) == (0, 8, 1.0, "fast")
    assert (crit.freeze_discriminator, crit.check_inputs, crit.image_range) == (True, True, (-1.0, 1.0))
    assert crit.textural_layers == () and crit.semantic_layer is None and crit.segmenter is None
    assert crit.terms == ("adv", "scat", "rec")
    assert SCATCriterion(make_d(), segmenter=nn.Conv2d(3, 1, 1)).pixel_output is None  # "then ignored"
    group = object()  # any process group object is kept for the all_gather of negatives_from="global"
    assert SCATCriterion(make_d(), negatives_from="global", process_group=group).process_group is group
    from scatloss.masks import MaskGenerator

    D = make_d()
    unseeded = SCATCriterion(D, semantic_layer="conv2", terms=("sem",), negatives=2)
    _semantic_only(unseeded, D, 3, H, W, MaskGenerator(H, W, seed=0).sample(6))


@pytest.mark.parametrize("mode", ["fast", "naive"])
def test_feature_passes_stop_after_the_deepest_requested_layer(mode: str) -> None:
    """Fast mode: the autograd-free passes (ground truth, corrupted input, negatives) stop after the deepest tapped
    layer: ``conv2`` and the pixel head run only in the composite's pass. Naive mode (the release) runs them all."""
    D = make_d()
    seen: dict[str, list[bool]] = {"conv1": [], "conv2": [], "pix": []}
    for name, calls in seen.items():
        getattr(D, name).register_forward_pre_hook(lambda m, a, calls=calls: calls.append(torch.is_grad_enabled()))
    crit = SCATCriterion(D, textural_layers=("act1",), semantic_layer="act1", semantic_pool="mean", mode=mode)
    crit.generator_step(*make_batch())
    if mode == "fast":  # composite, x, x~, and the 3 * 3 - 3 negatives in one chunk of at most 8
        assert seen["conv1"] == [True, False, False, False]
        assert seen["conv2"] == [True] and seen["pix"] == [True]
    else:
        assert len(seen["conv1"]) >= 4 and all(seen["conv1"])
        assert seen["conv2"] == seen["pix"] == seen["conv1"]


def test_inputs_on_different_devices_are_named() -> None:
    prediction, image, hole = make_batch()
    crit = SCATCriterion(make_d())
    for step in (crit.generator_step, crit.discriminator_step):
        for moved in ("prediction", "image", "hole"):
            args = {"prediction": prediction, "image": image, "hole": hole}
            args[moved] = args[moved].to("meta")
            where = ", ".join(f"{k} on {'meta' if k == moved else 'cpu'}" for k in args)
            with pytest.raises(ValueError, match=rf"^device mismatch: expected all inputs on one device, got {where}$"):
                step(**args)


def test_dtype_is_checked_on_a_device_without_autocast() -> None:
    """``meta`` has no autocast: the dtype check still applies there (only autocast lifts it)."""
    with torch.device("meta"):
        D = TinyD().to(F64)
    prediction, image, hole = (t.to("meta", torch.float32) for t in make_batch())
    with pytest.raises(TypeError, match=r"^image: expected dtype torch.float64 like the discriminator's parameters"):
        SCATCriterion(D).discriminator_step(prediction, image, hole)


def test_a_single_tensor_is_not_both_heads_in_the_discriminator_step() -> None:
    """With a global head configured, a single-tensor output cannot also be the pixel map: on either pass."""

    class Alternating(nn.Module):
        def __init__(self, single_on: int) -> None:
            super().__init__()
            self.conv, self.single_on, self.calls = nn.Conv2d(3, 1, 1).to(F64), single_on, 0

        def forward(self, x: torch.Tensor) -> Any:
            p = self.conv(x)
            single = self.calls == self.single_on
            self.calls += 1
            return p if single else (p.mean(dim=(2, 3)), p)

    for single_on in (0, 1):
        crit = SCATCriterion(Alternating(single_on))
        with pytest.raises(ValueError, match=r"^pixel_output: expected a discriminator output with several heads"):
            crit.discriminator_step(*make_batch())
