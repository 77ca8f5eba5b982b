"""Tests pinning behaviour that mutation testing found unchecked in the core modules.

Core = ``scatloss.masks``, ``scatloss.functional``, ``scatloss.criterion`` and ``scatloss.ops``. Each test compares
with an independent expectation (a hand-computed value, a re-computation written here, or the documented
argument name of an error) on inputs where a surviving mutant behaves differently.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton (as tests/test_ops.py)

import numpy as np
import pytest
import torch
from torch import nn

import scatloss.functional as SF
import scatloss.masks as masks_module
from scatloss.criterion import SCATCriterion
from scatloss.losses import InpaintingObjective
from scatloss.masks import MaskGenerator, bucket_name, bucket_of, free_form_mask, hole_ratio
from tests._pins import full_shape as _full_shape
from tests._pins import stroke_reference as _stroke_reference

# ----------------------------------------------------------------------------------------------------------------------
# functional: errors name the argument that is wrong
# ----------------------------------------------------------------------------------------------------------------------


def test_adversarial_discriminator_loss_names_fake_logits_when_it_is_not_a_tensor() -> None:
    """A non-tensor ``fake_logits`` raises a TypeError that names ``fake_logits``."""
    with pytest.raises(TypeError, match=r"^fake_logits: expected a floating-point torch\.Tensor"):
        SF.adversarial_discriminator_loss([0.5], torch.zeros(2, 1))  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(0, 1), (2, 0)])
def test_adversarial_generator_loss_names_fake_logits_when_empty(shape: tuple[int, int]) -> None:
    """An empty ``fake_logits`` (no batch, or no element) raises a ValueError naming ``fake_logits``."""
    with pytest.raises(ValueError, match=r"^fake_logits: expected a non-empty"):
        SF.adversarial_generator_loss(torch.zeros(shape))


def test_reconstruction_loss_names_image_when_it_is_not_floating() -> None:
    """An integer ``image`` raises a TypeError that names ``image``."""
    with pytest.raises(TypeError, match=r"^image: expected a floating-point tensor"):
        SF.reconstruction_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4, dtype=torch.int64))


@pytest.mark.parametrize("fn", [SF.corrupt, lambda image, hole: SF.composite(torch.zeros(1, 1, 4, 4), image, hole)])
def test_corrupt_and_composite_refuse_a_3d_image(fn) -> None:  # type: ignore[no-untyped-def]
    """A ``(1, H, W)`` image is refused as not 4-D (it would otherwise broadcast against a (1, 1, H, W) mask)."""
    with pytest.raises(ValueError, match=r"^image: expected a 4-D tensor, got shape \(1, 4, 4\)"):
        fn(torch.zeros(1, 4, 4), torch.zeros(1, 1, 4, 4))


def test_corrupt_device_mismatch_names_hole() -> None:
    """A mask on another device than the image: the device error names ``image`` and ``hole``."""
    with pytest.raises(ValueError, match=r"^device mismatch: .*image on cpu, hole on meta$"):
        SF.corrupt(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4, device="meta"))


# ----------------------------------------------------------------------------------------------------------------------
# criterion: the release preset
# ----------------------------------------------------------------------------------------------------------------------


def test_release_preset_without_layer_attributes_has_no_feature_terms() -> None:
    """``release`` on a discriminator without ``textural_layers`` etc.: no textural/semantic term, no error."""
    crit = SCATCriterion.release(nn.Conv2d(3, 1, 3))
    assert crit.textural_layers == ()
    assert crit.semantic_layer is None
    assert crit.terms == ("adv", "scat", "rec")


def test_release_preset_uses_an_objective_passed_as_keyword() -> None:
    """``release(..., objective=obj)`` overrides the preset's objective with ``obj`` itself."""
    objective = InpaintingObjective(lambda_rec=3.0)
    crit = SCATCriterion.release(nn.Conv2d(3, 1, 3), objective=objective)
    assert crit.objective is objective
    assert crit.negatives == "batch" and crit.fill == 1.0  # the rest of the preset still applies


# ----------------------------------------------------------------------------------------------------------------------
# masks: argument checks
# ----------------------------------------------------------------------------------------------------------------------


def test_hole_ratio_refuses_zero_height() -> None:
    """A mask with zero rows (but columns) has no ratio: ValueError, not a NaN mean."""
    with pytest.raises(
        ValueError, match=r"^hole: expected a mask with at least one row and one column, got shape \(1, 1, 0, 5\)"
    ):
        hole_ratio(torch.zeros(1, 1, 0, 5))


def test_bucket_of_names_the_malformed_bucket() -> None:
    """A bad ``buckets`` entry is reported as ``buckets[i]``."""
    with pytest.raises(ValueError, match=r"^buckets\[1\]: expected 0 <= lo < hi <= 1"):
        bucket_of(0.1, buckets=[(0.0, 0.2), (0.5, 0.3)])


@pytest.mark.parametrize("pair", [(0.5, 1.5), (0.0, 1.0000001)])
def test_bucket_upper_bound_may_not_exceed_one(pair: tuple[float, float]) -> None:
    """A hole ratio bucket ends at 1 at most: ``hi > 1`` is refused everywhere a bucket is given."""
    with pytest.raises(ValueError, match=r"^bucket: expected 0 <= lo < hi <= 1"):
        bucket_name(pair)
    with pytest.raises(ValueError, match=r"^buckets\[0\]: expected 0 <= lo < hi <= 1"):
        MaskGenerator(8, 8, buckets=[pair])
    with pytest.raises(ValueError, match=r"^bucket: expected 0 <= lo < hi <= 1"):
        free_form_mask(8, 8, bucket=pair, seed=0)


# ----------------------------------------------------------------------------------------------------------------------
# masks: randomness
# ----------------------------------------------------------------------------------------------------------------------


def test_unseeded_masks_are_not_limited_to_a_few_seeds() -> None:
    """Unseeded calls draw their seed from the global RNG over a wide range: 300 calls give > 200 distinct masks."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        drawn = {free_form_mask(12, 12).numpy().tobytes() for _ in range(300)}
    assert len(drawn) > 200


def test_fallback_growth_does_not_depend_on_the_global_rng(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seeded mask grown by the fill-in fallback is the same whatever the global torch RNG state."""
    monkeypatch.setattr(masks_module, "_MAX_CANDIDATES", 0)  # every pixel comes from the fallback's random ring
    results = []
    with torch.random.fork_rng():
        for global_seed in (0, 1, 2):
            torch.manual_seed(global_seed)
            results.append(free_form_mask(20, 30, bucket=1, seed=7))
    assert bucket_of(hole_ratio(results[0][None])[0]) == 1
    for other in results[1:]:
        assert torch.equal(results[0], other)


def test_shapes_are_added_until_the_target_count_is_reached_not_past_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target pixel count is uniform in the bucket and shapes stop once it is reached.

    With one-pixel shapes on a 2x5 mask and bucket (0.1, 0.3) the allowed counts are 1 and 2: both must occur.
    """

    def one_pixel(u, h, w, side, scale):  # type: ignore[no-untyped-def]
        y, x = int(u[3] * h), int(u[4] * w)
        return y, y + 1, x, x + 1, np.ones((1, 1), dtype=bool)

    monkeypatch.setattr(masks_module, "_shape", one_pixel)
    counts = [int(free_form_mask(2, 5, bucket=(0.1, 0.3), seed=s).sum()) for s in range(24)]
    assert set(counts) == {1, 2}


# ----------------------------------------------------------------------------------------------------------------------
# masks: brush-stroke rasterisation against a float64 re-computation
# ----------------------------------------------------------------------------------------------------------------------


STROKES = {
    # a thin 3-segment stroke on a small image: the radius is at its floor of 1/2 pixel
    "thin": ([0.5, 0.2, 0.3, 0.4, 0.6, 0.1, 0.7, 0.9, 0.3, 0.8, 0.6, 0.9] + [0.5] * 12, 12, 14, 12.0, 1.0),
    # a 4-segment stroke of radius 1.44 with a shrunk brush (scale 0.8), away from the top-left corner
    "wide": ([0.5, 0.5, 0.45, 0.3, 0.7, 0.35, 0.2, 0.6, 0.8, 0.4, 0.3, 0.7, 0.65, 0.5] + [0.5] * 10, 40, 48, 40.0, 0.8),
}


@pytest.mark.parametrize("case", list(STROKES))
def test_brush_stroke_covers_exactly_the_pixels_near_its_polyline(case: str) -> None:
    """A brush stroke is the set of pixels within its radius of the polyline (float64 re-computation)."""
    u, h, w, side, scale = STROKES[case]
    expected, margin = _stroke_reference(u, h, w, side, scale)
    assert margin > 1e-3  # no pixel sits on the boundary, where float32 rounding could decide
    np.testing.assert_array_equal(_full_shape(u, h, w, side, scale), expected)


def test_brush_distances_are_float32_so_seeded_masks_stay_bit_identical() -> None:
    """The rasteriser measures distances in float32: a pixel whose exact squared distance exceeds ``r^2`` by
    ~5e-8 is inside because it rounds to ``r^2`` in float32. Pinned so a seed keeps giving the same mask."""
    h, w, side, scale = 24, 32, 24.0, 1.0
    # one horizontal segment (heading 0) starting at (0.13 * 23, 15.5); the pixel (3, 14) lies behind its start
    u = [0.5, 0.7916898026590301, 0.0, 0.13, 0.5, 0.0, 0.5, 0.5] + [0.5] * 16
    radius = 0.5 * side * scale * (0.03 + 0.12 * u[1])
    y0, x0 = math.floor(u[3] * 23) - 2, 15 - 2  # the crop's corner: pad = ceil(radius) = 2
    ry = np.float32(3 - y0) - (np.float32(u[3] * 23) - np.float32(y0))
    rx = np.float32(14 - x0) - (np.float32(15.5) - np.float32(x0))
    assert float(ry) ** 2 + float(rx) ** 2 > radius * radius  # outside in exact arithmetic ...
    assert ry * ry + rx * rx <= np.float32(radius * radius)  # ... inside in float32
    assert _full_shape(u, h, w, side, scale)[3, 14]


# ----------------------------------------------------------------------------------------------------------------------
# ops: registration under the interpreter, program count on GPUs
# ----------------------------------------------------------------------------------------------------------------------


def test_interpreted_ops_have_fake_functions_for_shape_inference() -> None:
    """Under ``TRITON_INTERPRET=1`` the custom ops carry fake functions: they run on meta tensors."""
    pytest.importorskip("triton")
    from scatloss.ops import _interpreting

    if not _interpreting():
        pytest.skip("the custom_op registration is used under TRITON_INTERPRET=1")
    from scatloss.ops import _scat_triton

    d = torch.empty(2, 1, 3, 5, device="meta", dtype=torch.float64)
    out = _scat_triton.scat_bwd(torch.empty((), device="meta", dtype=torch.float64), d, 0.5)
    assert out.device.type == "meta" and out.shape == (2, 1, 3, 5) and out.dtype == torch.float64


def test_target_programs_reads_the_sm_count_of_the_tensors_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """~4 programs per SM of *the tensors'* GPU: an explicit index wins over the current device, no index means
    the current device (as an index, so the cached count is per GPU)."""
    pytest.importorskip("triton")
    from scatloss.ops import _triton_common

    sm_counts = {1: 10, 3: 20}
    monkeypatch.setattr(_triton_common, "_sm_count", lambda index: sm_counts[index])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert _triton_common.target_programs(torch.device("cuda", 1)) == 40
    assert _triton_common.target_programs(torch.device("cuda")) == 80
    assert _triton_common.target_programs(torch.device("cpu")) == 1
