"""Hole masks: free-form generation by hole-ratio bucket, ratio/bucket bookkeeping, resampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import scatloss.masks as masks_module
from scatloss.masks import (
    BUCKET_NAMES,
    BUCKETS,
    MaskGenerator,
    bucket_name,
    bucket_of,
    free_form_mask,
    hole_ratio,
    resample_hole,
)

FAST = settings(max_examples=40, deadline=None)

sizes = st.integers(min_value=8, max_value=80)
seeds = st.integers(min_value=0, max_value=2**31 - 1)
bucket_indices = st.integers(min_value=0, max_value=len(BUCKETS) - 1)


# ---- free_form_mask ----------------------------------------------------------------------------------------------


@FAST
@given(h=sizes, w=sizes, seed=seeds, bucket=bucket_indices)
def test_free_form_mask_ratio_lands_in_requested_bucket(h: int, w: int, seed: int, bucket: int) -> None:
    mask = free_form_mask(h, w, bucket=bucket, seed=seed)
    ratio = hole_ratio(mask[None])[0]
    lo, hi = BUCKETS[bucket]
    assert lo <= ratio.item() < hi
    assert bucket_of(ratio) == bucket


@FAST
@given(h=sizes, w=sizes, seed=seeds, lo=st.floats(0.0, 0.85), width=st.floats(0.1, 0.3))
def test_free_form_mask_respects_custom_bucket_pair(h: int, w: int, seed: int, lo: float, width: float) -> None:
    hi = min(1.0, lo + width)
    mask = free_form_mask(h, w, bucket=(lo, hi), seed=seed)
    ratio = mask.double().mean().item()
    assert lo <= ratio < hi


@FAST
@given(h=sizes, w=sizes, seed=seeds)
def test_free_form_mask_is_never_empty_in_lowest_bucket(h: int, w: int, seed: int) -> None:
    assert free_form_mask(h, w, bucket=0, seed=seed).sum() >= 1


def test_free_form_mask_is_binary_float32_of_shape_1_h_w() -> None:
    mask = free_form_mask(24, 40, seed=3)
    assert mask.shape == (1, 24, 40)
    assert mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_free_form_mask_same_seed_is_identical_whatever_the_global_rng() -> None:
    torch.manual_seed(1)
    a = free_form_mask(64, 48, bucket=1, seed=123)
    torch.manual_seed(2)
    torch.rand(100)
    b = free_form_mask(64, 48, bucket=1, seed=123)
    assert torch.equal(a, b)
    assert not torch.equal(a, free_form_mask(64, 48, bucket=1, seed=124))


def test_free_form_mask_with_seed_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    free_form_mask(32, 32, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_free_form_mask_generator_is_advanced_and_reproducible() -> None:
    g1 = torch.Generator().manual_seed(7)
    g2 = torch.Generator().manual_seed(7)
    first = free_form_mask(32, 32, generator=g1)
    assert torch.equal(first, free_form_mask(32, 32, generator=g2))
    assert not torch.equal(first, free_form_mask(32, 32, generator=g1))  # g1 has moved on


def test_unseeded_free_form_mask_follows_torch_manual_seed() -> None:
    torch.manual_seed(11)
    a = free_form_mask(32, 32)
    torch.manual_seed(11)
    assert torch.equal(a, free_form_mask(32, 32))


def test_free_form_mask_rejects_seed_and_generator_together() -> None:
    with pytest.raises(ValueError, match="generator, seed"):
        free_form_mask(16, 16, seed=1, generator=torch.Generator())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"bucket": 3}, ValueError, r"bucket: expected an index in \[0, 2\], got 3"),
        ({"bucket": (0.5, 0.2)}, ValueError, r"bucket: expected 0 <= lo < hi <= 1"),
        ({"bucket": "0-20%"}, TypeError, "bucket: expected None, an int index or a"),
        ({"seed": -1}, TypeError, "seed: expected a non-negative int"),
        ({"generator": 3}, TypeError, "generator: expected a torch.Generator"),
    ],
)
def test_free_form_mask_bad_arguments_raise_with_the_argument_named(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        free_form_mask(16, 16, **kwargs)


@pytest.mark.parametrize(("h", "w"), [(0, 8), (8, -1)])
def test_free_form_mask_non_positive_size_raises(h: int, w: int) -> None:
    with pytest.raises(ValueError, match="expected a positive int"):
        free_form_mask(h, w, seed=0)


def test_free_form_mask_bucket_no_pixel_count_can_hit_raises() -> None:
    # 1x4 mask: ratios are multiples of 0.25, and the 0-20% bucket needs at least one hole pixel.
    with pytest.raises(ValueError, match="1x4 mask can hit"):
        free_form_mask(1, 4, bucket=0, seed=0)


@pytest.mark.parametrize("bucket", range(len(BUCKETS)))
def test_free_form_mask_fallback_growth_still_lands_in_bucket(monkeypatch: pytest.MonkeyPatch, bucket: int) -> None:
    # With no shape allowed, the mask comes entirely from the exact fill-in fallback (one seed pixel, then
    # random pixels of the dilation ring): it must still hit the bucket and form one connected blob.
    monkeypatch.setattr(masks_module, "_MAX_CANDIDATES", 0)
    mask = free_form_mask(20, 30, bucket=bucket, seed=bucket)
    assert bucket_of(hole_ratio(mask[None])[0]) == bucket
    assert _connected_components(mask[0].bool()) == 1


def _connected_components(mask: torch.Tensor) -> int:
    seen = torch.zeros_like(mask)
    count = 0
    h, w = mask.shape
    for y0, x0 in mask.nonzero().tolist():
        if seen[y0, x0]:
            continue
        count += 1
        stack = [(y0, x0)]
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v, u = y + dy, x + dx
                    if 0 <= v < h and 0 <= u < w and mask[v, u] and not seen[v, u]:
                        seen[v, u] = True
                        stack.append((v, u))
    return count


# ---- MaskGenerator -----------------------------------------------------------------------------------------------


def test_mask_generator_same_seed_gives_identical_batches_whatever_the_global_rng() -> None:
    torch.manual_seed(0)
    a = MaskGenerator(32, 40, seed=5).sample(6)
    torch.manual_seed(99)
    b = MaskGenerator(32, 40, seed=5).sample(6)
    assert a.shape == (6, 1, 32, 40)
    assert a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, MaskGenerator(32, 40, seed=6).sample(6))


def test_mask_generator_state_dict_resume_gives_the_same_next_masks() -> None:
    gen = MaskGenerator(32, 32, seed=1)
    gen.sample(3)
    state = gen.state_dict()
    expected = gen.sample(4)
    resumed = MaskGenerator(32, 32, seed=1)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.sample(4), expected)


def test_mask_generator_state_dict_is_a_snapshot_not_a_live_view() -> None:
    gen = MaskGenerator(16, 16, seed=2)
    state = gen.state_dict()
    first = gen.sample(2)
    gen.load_state_dict(state)
    assert torch.equal(gen.sample(2), first)


def test_mask_generator_load_state_dict_rejects_another_configuration() -> None:
    state = MaskGenerator(32, 32, seed=1).state_dict()
    with pytest.raises(ValueError, match=r"state: expected a state saved by a generator with \(height, width"):
        MaskGenerator(32, 48, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="state: expected keys"):
        MaskGenerator(32, 32).load_state_dict({"height": 32})
    with pytest.raises(TypeError, match="state: expected a mapping"):
        MaskGenerator(32, 32).load_state_dict([1, 2])  # type: ignore[arg-type]


def test_mask_generator_explicit_generator_leaves_own_state_untouched() -> None:
    gen = MaskGenerator(24, 24, seed=4)
    reference = MaskGenerator(24, 24, seed=4).sample(2)
    gen.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gen.sample(2), reference)


@pytest.mark.parametrize("bucket", range(len(BUCKETS)))
def test_mask_generator_bucket_argument_is_honoured(bucket: int) -> None:
    masks = MaskGenerator(32, 32, seed=0).sample(5, bucket=bucket)
    assert [bucket_of(r) for r in hole_ratio(masks)] == [bucket] * 5


def test_mask_generator_default_draws_every_bucket() -> None:
    masks = MaskGenerator(24, 24, seed=0).sample(30)
    assert {bucket_of(r) for r in hole_ratio(masks)} == {0, 1, 2}


def test_mask_generator_custom_buckets() -> None:
    gen = MaskGenerator(32, 32, buckets=((0.6, 0.8),), seed=0)
    ratios = hole_ratio(gen.sample(3))
    assert bool(((ratios >= 0.6) & (ratios < 0.8)).all())


def test_mask_generator_bad_batch_raises() -> None:
    with pytest.raises(ValueError, match="batch: expected a non-negative int, got -1"):
        MaskGenerator(8, 8).sample(-1)
    with pytest.raises(TypeError, match="batch: expected an int"):
        MaskGenerator(8, 8).sample(2.0)  # type: ignore[arg-type]


def test_mask_generator_overlapping_buckets_raise() -> None:
    with pytest.raises(ValueError, match="buckets: expected sorted, non-overlapping"):
        MaskGenerator(8, 8, buckets=((0.0, 0.5), (0.4, 0.6)))


# ---- hole_ratio / bucket_of / names ------------------------------------------------------------------------------


@FAST
@given(b=st.integers(1, 3), h=st.integers(1, 12), w=st.integers(1, 12), seed=seeds)
def test_hole_ratio_is_the_fraction_of_missing_pixels(b: int, h: int, w: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    hole = torch.rand(b, 1, h, w, generator=g) < 0.4
    ratio = hole_ratio(hole)
    assert ratio.shape == (b,)
    expected = hole.flatten(1).sum(1).double() / (h * w)
    assert torch.equal(ratio, expected)
    assert torch.equal(hole_ratio(hole.float()), expected)


def test_hole_ratio_rejects_a_mask_without_channel_dimension() -> None:
    with pytest.raises(ValueError, match=r"hole: expected shape \(B, 1, H, W\)"):
        hole_ratio(torch.zeros(1, 8, 8))


@pytest.mark.parametrize(
    ("ratio", "index"),
    [(0.0, 0), (0.1999, 0), (0.2, 1), (0.3999, 1), (0.4, 2), (0.6, 2), (0.6001, -1), (1.0, -1), (1, -1)],
)
def test_bucket_of_is_half_open_with_a_closed_last_bucket(ratio: float, index: int) -> None:
    assert bucket_of(ratio) == index
    assert bucket_of(torch.tensor(ratio, dtype=torch.float64)) == index


@pytest.mark.parametrize(
    ("ratio", "error", "match"),
    [
        (1.5, ValueError, r"ratio: expected a hole ratio in \[0, 1\], got 1.5"),
        (float("nan"), ValueError, "ratio: expected a hole ratio in"),
        ("0.1", TypeError, "ratio: expected a number"),
        (torch.zeros(2), TypeError, "ratio: expected a number or a one-element tensor"),
    ],
)
def test_bucket_of_bad_ratio_raises(ratio: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        bucket_of(ratio)  # type: ignore[arg-type]


def test_bucket_names_match_buckets() -> None:
    assert tuple(bucket_name(b) for b in BUCKETS) == BUCKET_NAMES == ("0-20%", "20-40%", "40-60%")


# ---- resample_hole -----------------------------------------------------------------------------------------------

factors = st.integers(min_value=1, max_value=4)
out_sizes = st.integers(min_value=1, max_value=6)


def _random_hole(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    return (torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(seed)) < 0.5).float()


def _blocks(hole: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    b, _, h, w = hole.shape
    return hole.reshape(b, 1, h // fh, fh, w // fw, fw)


@FAST
@given(oh=out_sizes, ow=out_sizes, fh=factors, fw=factors, seed=seeds)
def test_resample_area_equals_block_mean_for_integer_factors(oh: int, ow: int, fh: int, fw: int, seed: int) -> None:
    hole = _random_hole(2, oh * fh, ow * fw, seed)
    out = resample_hole(hole, (oh, ow), "area")
    torch.testing.assert_close(out, _blocks(hole, fh, fw).mean(dim=(3, 5)))


@FAST
@given(oh=out_sizes, ow=out_sizes, fh=factors, fw=factors, seed=seeds)
def test_resample_max_marks_a_block_missing_if_any_pixel_is(oh: int, ow: int, fh: int, fw: int, seed: int) -> None:
    hole = _random_hole(2, oh * fh, ow * fw, seed)
    out = resample_hole(hole, (oh, ow), "max")
    assert torch.equal(out, _blocks(hole, fh, fw).amax(dim=(3, 5)))


@FAST
@given(oh=out_sizes, ow=out_sizes, fh=factors, fw=factors, seed=seeds)
def test_resample_nearest_picks_the_top_left_pixel_of_each_block(oh: int, ow: int, fh: int, fw: int, seed: int) -> None:
    hole = _random_hole(1, oh * fh, ow * fw, seed)
    out = resample_hole(hole, (oh, ow), "nearest")
    assert torch.equal(out, hole[..., ::fh, ::fw])


@pytest.mark.parametrize("mode", ["area", "nearest", "max"])
def test_resample_bool_mask_gives_float32_equal_to_float_input(mode: str) -> None:
    hole = _random_hole(2, 16, 12, 0)
    out = resample_hole(hole.bool(), (4, 3), mode)  # type: ignore[arg-type]
    assert out.dtype == torch.float32
    assert torch.equal(out, resample_hole(hole, (4, 3), mode))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["area", "nearest", "max"])
@pytest.mark.parametrize("size", [(5, 7), (16, 12), (32, 8)])
def test_resample_gives_shape_b_1_h_w_and_keeps_float_dtype(mode: str, size: tuple[int, int]) -> None:
    hole = _random_hole(3, 16, 12, 1).double()
    out = resample_hole(hole, size, mode)  # type: ignore[arg-type]
    assert out.shape == (3, 1, *size)
    assert out.dtype == torch.float64


def test_resample_same_size_returns_the_input() -> None:
    hole = _random_hole(1, 8, 8, 2)
    assert resample_hole(hole, (8, 8)) is hole


def test_resample_area_preserves_hole_ratio_for_integer_factors() -> None:
    hole = free_form_mask(64, 64, bucket=1, seed=0)[None]
    out = resample_hole(hole, (8, 8), "area")
    assert math.isclose(out.mean().item(), hole.mean().item(), rel_tol=1e-6)


def test_resample_bad_mode_raises() -> None:
    with pytest.raises(ValueError, match="resample: expected one of 'area', 'nearest', 'max', got 'bilinear'"):
        resample_hole(torch.zeros(1, 1, 4, 4), (2, 2), "bilinear")  # type: ignore[arg-type]


def test_resample_nearest_agrees_with_interpolate_for_non_integer_factors() -> None:
    hole = _random_hole(1, 10, 10, 3)
    assert torch.equal(resample_hole(hole, (4, 4), "nearest"), F.interpolate(hole, size=(4, 4), mode="nearest"))
