"""scatloss.testing: the strategies draw what they claim, and every check can fail."""

from __future__ import annotations

import doctest
import importlib
import sys

import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

import scatloss
import scatloss.functional as SF
import scatloss.testing as T
from scatloss.testing import (
    EXTREME_LOGIT,
    check_batch_permutation_invariance,
    check_contrastive_gradient_direction,
    check_finite_on_degenerate_masks,
    check_module_matches_functional,
    contrastive_embeddings,
    feature_lists,
    hole_masks,
    image_batches,
    logit_maps,
)

pytestmark = pytest.mark.usefixtures("single_thread")

FIND = settings(max_examples=300, database=None, suppress_health_check=list(HealthCheck))
BUCKETS = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.25, 0.5), (0.9, 1.0)]

# ----------------------------------------------------------------------------------------------------------------------
# strategies
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", BUCKETS, ids=str)
@given(data=st.data())
def test_hole_masks_hit_the_requested_ratio_bucket_exactly(bucket, data):
    hole = data.draw(hole_masks(st.integers(1, 3), st.integers(4, 12), st.integers(4, 12), bucket=bucket))
    lo, hi = bucket
    ratios = hole.to(torch.float64).mean(dim=(1, 2, 3))
    assert ((ratios >= lo) & ((ratios < hi) if hi < 1 else (ratios <= 1))).all(), (bucket, ratios.tolist())


def test_hole_masks_bucket_upper_bound_is_open_below_1_and_closed_at_1():
    # a 2 x 2 mask can only be 0, 25, 50, 75 or 100 % holes
    ratios = set()

    @settings(max_examples=20, database=None)
    @given(hole_masks(1, 2, 2, bucket=(0.25, 0.5)))
    def collect(hole):
        ratios.add(float(hole.mean()))

    collect()
    assert ratios == {0.25}
    assert find(hole_masks(1, 2, 2, bucket=(0.75, 1.0)), lambda m: bool(m.all()), settings=FIND).all()


@pytest.mark.parametrize(("bucket", "value"), [("empty", 0.0), ("full", 1.0)])
@given(data=st.data())
def test_hole_masks_empty_and_full_buckets(bucket, value, data):
    hole = data.draw(hole_masks(bucket=bucket))
    assert (hole == value).all()


def test_hole_masks_without_bucket_include_hole_free_all_hole_and_partial_masks():
    strategy = hole_masks(1, 5, 5)
    assert find(strategy, lambda m: m.sum() == 0, settings=FIND).sum() == 0
    assert find(strategy, lambda m: bool(m.all()), settings=FIND).all()
    assert 0 < find(strategy, lambda m: 0 < m.sum() < 25, settings=FIND).sum() < 25


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.bool])
@given(data=st.data())
def test_hole_masks_have_the_claimed_shape_dtype_and_values(dtype, data):
    b, h, w = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    hole = data.draw(hole_masks(b, st.just(h), w, dtype=dtype))
    assert hole.shape == (b, 1, h, w) and hole.dtype == dtype
    assert ((hole == 0) | (hole == 1)).all()


@given(data=st.data())
def test_logit_maps_have_the_claimed_shape_and_extremes(data):
    b, h, w = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    dtype = data.draw(st.sampled_from((torch.float32, torch.float64, torch.bfloat16)))
    z = data.draw(logit_maps(b, h, w, extreme=True, dtype=dtype))
    assert z.shape == (b, 1, h, w) and z.dtype == dtype
    assert z.max() == EXTREME_LOGIT
    if z.numel() > 1:
        assert z.min() == -EXTREME_LOGIT
    plain = data.draw(logit_maps(b, h, w))
    assert torch.isfinite(plain).all() and plain.abs().max() < 100


@given(data=st.data())
def test_image_batches_lie_in_minus_one_one(data):
    shape = tuple(data.draw(st.integers(1, 5)) for _ in range(4))
    x = data.draw(image_batches(*shape, dtype=torch.float64))
    assert x.shape == shape and x.dtype == torch.float64
    assert x.min() >= -1 and x.max() <= 1


@given(data=st.data())
def test_feature_lists_share_shapes_across_roles(data):
    b, n = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    anchor, positive, negative = data.draw(feature_lists(b, n, channels=st.integers(1, 3)))
    assert len(anchor) == len(positive) == len(negative) == n
    for a, p, q in zip(anchor, positive, negative, strict=True):
        assert a.dim() == 4 and a.shape[0] == b and 1 <= a.shape[1] <= 3
        assert a.shape == p.shape == q.shape


@given(data=st.data())
def test_contrastive_embeddings_have_infonce_shapes(data):
    b, m, d = (data.draw(st.integers(1, 6)) for _ in range(3))
    a, p, n = data.draw(contrastive_embeddings(b, m, d, dtype=torch.float64))
    assert a.shape == p.shape == (b, d) and n.shape == (b, m, d)
    assert a.dtype == p.dtype == n.dtype == torch.float64


@pytest.mark.parametrize(
    ("make", "exc", "pattern"),
    [
        (lambda: hole_masks(bucket="half"), ValueError, r"bucket: expected None, 'empty', 'full' or a \(lo, hi\)"),
        (lambda: hole_masks(bucket=(0.6, 0.4)), ValueError, r"bucket: expected 0 <= lo < hi <= 1, got \(0.6, 0.4\)"),
        (lambda: hole_masks(bucket=(0.1, "x")), TypeError, r"bucket: expected a \(lo, hi\) pair of numbers"),
        (lambda: hole_masks(bucket=[0.1, 0.2]), TypeError, r"bucket: expected None, .* got list"),
        (lambda: hole_masks(batch=0), ValueError, r"batch: expected an int >= 1 or a hypothesis strategy, got 0"),
        (
            lambda: logit_maps(height="7"),
            TypeError,
            r"height: expected an int or a hypothesis strategy of ints, got str",
        ),
        (lambda: logit_maps(dtype=torch.int64), ValueError, r"dtype: expected one of .*got torch.int64"),
        (lambda: hole_masks(dtype=torch.uint8), ValueError, r"dtype: expected one of .*got torch.uint8"),
        (lambda: feature_lists(n_layers=0), ValueError, r"n_layers: expected an int >= 1"),
    ],
)
def test_strategies_reject_bad_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_strategy_that_draws_a_bad_size_is_reported():
    @given(hole_masks(1, st.just(0), 4))
    def draw(hole):
        pass

    with pytest.raises(ValueError, match=r"height: expected the strategy to draw ints >= 1, got 0"):
        draw()


def test_missing_hypothesis_gives_an_install_hint(monkeypatch):
    original = sys.modules.pop("scatloss.testing")
    try:
        monkeypatch.setitem(sys.modules, "hypothesis", None)
        with pytest.raises(ImportError, match=r"scatloss.testing needs hypothesis: pip install 'scatloss\[dev\]'"):
            importlib.import_module("scatloss.testing")
    finally:
        sys.modules["scatloss.testing"] = original
        scatloss.testing = original


def test_docstring_examples_run():
    result = doctest.testmod(T, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 15 and result.failed == 0


# ----------------------------------------------------------------------------------------------------------------------
# checks pass on correct losses and fail on broken ones
# ----------------------------------------------------------------------------------------------------------------------


def _index_weighted_loss(z, hole):
    weights = torch.arange(1, z.shape[0] + 1, dtype=z.dtype).view(-1, 1, 1, 1)
    return (SF.scat_generator_loss(z, hole, reduction="none") * weights).mean()


def test_permutation_check_fails_on_a_loss_that_depends_on_batch_order():
    z, hole = torch.randn(4, 1, 7, 11), torch.ones(4, 1, 14, 22)
    check_batch_permutation_invariance(SF.scat_generator_loss, z, hole)
    with pytest.raises(AssertionError, match=r"result 0 of fn is not unchanged under the reversed batch permutation"):
        check_batch_permutation_invariance(_index_weighted_loss, z, hole)


def test_permutation_check_fails_on_per_sample_output_that_does_not_follow_the_batch():
    a, p, n = torch.randn(3, 8), torch.randn(3, 8), torch.randn(3, 4, 8)
    per_sample = lambda *x: SF.semantic_contrastive_loss(*x, reduction="none")  # noqa: E731
    check_batch_permutation_invariance(per_sample, a, p, n)
    with pytest.raises(AssertionError, match=r"not permuted like the batch"):
        check_batch_permutation_invariance(lambda *x: per_sample(*x).sort().values, a, p, n)
    with pytest.raises(AssertionError, match=r"not unchanged"):  # forcing invariance of a per-sample output fails
        check_batch_permutation_invariance(per_sample, a, p, n, equivariant=False)


def test_permutation_check_handles_feature_lists_and_rejects_a_batch_of_one():
    feats = [[torch.randn(3, 2, 4, 4), torch.randn(3, 5, 2, 2)] for _ in range(3)]
    check_batch_permutation_invariance(SF.textural_contrastive_loss, *feats)
    broken = lambda a, p, n: SF.textural_contrastive_loss([a[0][:2]], [p[0][:2]], [n[0][:2]])  # noqa: E731
    with pytest.raises(AssertionError, match=r"batch permutation"):
        check_batch_permutation_invariance(broken, *feats)
    with pytest.raises(ValueError, match=r"batched_tensors: expected a batch of at least 2 to permute, got 1"):
        check_batch_permutation_invariance(SF.adversarial_generator_loss, torch.randn(1, 1))
    with pytest.raises(ValueError, match=r"expected every tensor to have size 3 along batch_dim=0, got shape \(2, 8\)"):
        check_batch_permutation_invariance(SF.semantic_contrastive_loss, torch.randn(3, 8), torch.randn(2, 8))


def test_module_check_fails_on_a_module_with_other_options_or_gradients():
    z, hole = torch.randn(2, 1, 4, 4, requires_grad=True), torch.rand(2, 1, 8, 8)
    check_module_matches_functional(scatloss.SCATLoss(), SF.scat_generator_loss, z, hole)
    with pytest.raises(AssertionError, match=r"module and functional differ in result 0"):
        check_module_matches_functional(scatloss.SCATLoss(region="all"), SF.scat_generator_loss, z, hole)
    detached = lambda z, h: SF.scat_generator_loss(z.detach(), h)  # noqa: E731
    with pytest.raises(AssertionError, match=r"receives a gradient from only one"):
        check_module_matches_functional(detached, SF.scat_generator_loss, z, hole)
    doubled_grad = lambda z, h: SF.scat_generator_loss(2 * z, h) - SF.scat_generator_loss(z, h).detach()  # noqa: E731
    with pytest.raises(AssertionError, match=r"gradients differ for input 0"):
        check_module_matches_functional(doubled_grad, lambda z, h: SF.scat_generator_loss(z, h) * 1, z, hole)
    with pytest.raises(AssertionError, match=r"keys"):
        check_module_matches_functional(lambda z: {"a": z.sum()}, lambda z: {"b": z.sum()}, z)


def _infonce(a, p, n):
    return SF.semantic_contrastive_loss(a, p, n, temperature=0.5)


def test_gradient_direction_check_fails_on_flipped_or_pull_only_losses():
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((4, 8), (4, 8), (4, 3, 8)))
    check_contrastive_gradient_direction(_infonce, a, p, n)
    with pytest.raises(AssertionError, match=r"^pull: moving the positive towards the anchor did not lower the loss"):
        check_contrastive_gradient_direction(lambda *x: -_infonce(*x), a, p, n)
    pull_only = lambda a, p, n: 1 - torch.nn.functional.cosine_similarity(a, p).mean()  # noqa: E731
    with pytest.raises(AssertionError, match=r"^push: moving the negatives towards the anchor did not raise"):
        check_contrastive_gradient_direction(pull_only, a, p, n)
    with pytest.raises(AssertionError, match=r"^descent: the anchor gradient is zero"):
        check_contrastive_gradient_direction(lambda a, p, n: _infonce(a.detach(), p, n) + 0 * a.sum(), a, p, n)
    # the gradient step pushing the anchor *towards* the negatives is caught although pull and push look right
    sign_flipped_grad = lambda a, p, n: _infonce(2 * a.detach() - a, p, n)  # noqa: E731
    with pytest.raises(AssertionError, match=r"^descent|^direction"):
        check_contrastive_gradient_direction(sign_flipped_grad, a, p, n)


def test_gradient_direction_check_fails_on_a_flipped_textural_loss():
    g = torch.Generator().manual_seed(1)
    feats = [[torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)] for _ in range(3)]
    check_contrastive_gradient_direction(SF.textural_contrastive_loss, *feats)
    with pytest.raises(AssertionError, match=r"^pull"):
        check_contrastive_gradient_direction(lambda *f: -SF.textural_contrastive_loss(*f), *feats)
    inverted = lambda a, p, n: SF.textural_contrastive_loss(a, n, p)  # noqa: E731  positive and negative swapped
    with pytest.raises(AssertionError, match=r"^pull"):
        check_contrastive_gradient_direction(inverted, *feats)


def test_gradient_direction_strict_mode_needs_the_anchor_between():
    """A negative between the anchor and the positive makes the anchor back away from both: only strict fails."""
    a, p = torch.zeros(1, 1, 1, 1, dtype=torch.float64), torch.full((1, 1, 1, 1), 3.0, dtype=torch.float64)
    between = torch.full((1, 1, 1, 1), 1.0, dtype=torch.float64)
    check_contrastive_gradient_direction(SF.textural_contrastive_loss, [a], [p], [between])
    with pytest.raises(AssertionError, match=r"^direction \(strict\)"):
        check_contrastive_gradient_direction(SF.textural_contrastive_loss, [a], [p], [between], strict=True)
    beyond = torch.full((1, 1, 1, 1), -1.0, dtype=torch.float64)
    check_contrastive_gradient_direction(SF.textural_contrastive_loss, [a], [p], [beyond], strict=True)


def test_finite_check_fails_on_unguarded_divisions_and_logs():
    shape = (2, 1, 7, 11)
    check_finite_on_degenerate_masks(lambda z, h: SF.scat_generator_loss(z, h, kind="bce"), shape, hole_size=(14, 22))

    def mean_over_holes(z, h):  # 0 / 0 on a hole-free mask
        h = h.float()
        return (z * h).sum() / h.sum()

    with pytest.raises(AssertionError, match=r"loss not finite for hole-free mask"):
        check_finite_on_degenerate_masks(mean_over_holes, shape)

    def naive_bce(z, h):  # log(sigmoid(z)) underflows to log(0) for z = -1e4
        return -(torch.log(torch.sigmoid(z)) * (1 - h.float())).mean()

    check_finite_on_degenerate_masks(naive_bce, shape, extreme=False)
    with pytest.raises(AssertionError, match=r"not finite for ±10000 inputs"):
        check_finite_on_degenerate_masks(naive_bce, shape)

    def norm_of_holes(z, h):  # finite value, NaN gradient: d sqrt(x) / dx at 0
        return (z * h.float()).square().sum().sqrt()

    with pytest.raises(AssertionError, match=r"gradient w.r.t. input 0 not finite for hole-free mask"):
        check_finite_on_degenerate_masks(norm_of_holes, shape)


def test_finite_check_runs_a_batch_of_one():
    seen = []
    check_finite_on_degenerate_masks(lambda z, h: seen.append(z.shape[0]) or z.sum() * 0, (3, 1, 2, 2), extreme=False)
    assert set(seen) == {3, 1}


def test_readme_downstream_example():
    """The README's downstream property test, verbatim."""
    import torch
    from hypothesis import given

    import scatloss.functional as SF
    from scatloss.testing import (
        check_batch_permutation_invariance,
        check_contrastive_gradient_direction,
        check_finite_on_degenerate_masks,
        contrastive_embeddings,
        hole_masks,
        logit_maps,
    )

    def my_loss(logits, hole):  # your loss, adapter or discriminator wrapper
        return SF.scat_generator_loss(logits, hole, kind="bce", region="all")

    @given(logit_maps(batch=4, height=7, width=11, extreme=True), hole_masks(batch=4, height=14, width=22))
    def test_my_loss(logits, hole):
        check_batch_permutation_invariance(my_loss, logits, hole)
        check_finite_on_degenerate_masks(my_loss, tuple(logits.shape), hole_size=(14, 22))

    @given(contrastive_embeddings(batch=4, n_negatives=8, dim=16, dtype=torch.float64))
    def test_my_infonce(emb):
        check_contrastive_gradient_direction(
            lambda a, p, n: SF.semantic_contrastive_loss(a, p, n, temperature=1.0), *emb
        )

    test_my_loss()
    test_my_infonce()
