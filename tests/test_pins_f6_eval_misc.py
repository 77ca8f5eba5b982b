"""Tests pinning behaviour that mutation testing (run f6, helper h6) found unchecked in ``scatloss.evaluate``.

The image checks of the evaluation stream (which argument an error names, 3-D or 4-D only, the smallest image
side ``SSIM_MIN_SIZE`` itself accepted, empty batches skipped, the ``[-1, 1]`` range with its inclusive rounding
tolerance), the fixed-mask seed of buckets starting at or above 50 % and :func:`scatloss.evaluate.
segmenter_p_generated` (its documented default ``output="logit_real"``, the exact TypeError with the two-headed
hint only for tuples and lists, the closed ``[0, 1]`` range of ``prob_generated``). Each test compares with an
independent expectation: the documented contract, an exact error message or a seed re-derived from its recipe.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from scatloss import evaluate as ev
from scatloss.masks import free_form_mask
from tests._pins import channel_map as _channel_map
from tests._pins import identity as _identity
from tests._pins import smooth_images
from tests.test_pins_evaluate import _documented_mask_seed

_ONE_BUCKET = ((0.0, 1.0),)


def _confusion(images: object, **kwargs: object) -> ev.ConfusionReport:
    """``segmentation_confusion`` with the channel-0 segmenter and the identity generator."""
    return ev.segmentation_confusion(_channel_map, _identity, images, **kwargs)  # type: ignore[arg-type]


# ---- the image checks of the evaluation stream -----------------------------------------------------------------------


def test_image_type_errors_name_the_images_argument() -> None:
    """A non-float tensor is refused naming ``images``; a bad item of a sequence is named ``images[i]``."""
    with pytest.raises(
        TypeError,
        match=r"^images: expected a floating-point tensor \(float16, bfloat16, float32 or float64\), "
        r"got dtype torch\.int64; convert with \.float\(\)$",
    ):
        _confusion(torch.zeros(1, 3, 16, 16, dtype=torch.long))
    with pytest.raises(TypeError, match=r"^images\[1\]: expected a floating-point torch\.Tensor, got str 'x'$"):
        _confusion([torch.zeros(3, 16, 16), "x"])


@pytest.mark.parametrize("shape", [(16, 16), (1, 1, 3, 16, 16)])
def test_images_must_be_three_or_four_dimensional(shape: tuple[int, ...]) -> None:
    """2-D and 5-D images are a ValueError saying 3-D or 4-D (documented: images not 4-D / 3-D)."""
    want = re.escape(f"images: expected a 3-D or 4-D tensor, got shape {shape}")
    with pytest.raises(ValueError, match=f"^{want}$"):
        _confusion(torch.zeros(shape))


def test_images_of_exactly_ssim_min_size_are_accepted() -> None:
    """``H, W >= SSIM_MIN_SIZE``: 11x11 images are scored, 10x11 ones are refused with the exact message."""
    assert ev.SSIM_MIN_SIZE == 11
    report = _confusion(torch.zeros(2, 3, 11, 11), buckets=_ONE_BUCKET)
    assert report.n_images == 2
    assert report.buckets[0].hole_pixels + report.buckets[0].known_pixels == 2 * 11 * 11
    with pytest.raises(
        ValueError,
        match=r"^images: expected images of at least 11x11 pixels \(SSIM window\), got shape \(2, 3, 10, 11\)$",
    ):
        _confusion(torch.zeros(2, 3, 10, 11), buckets=_ONE_BUCKET)


def test_empty_batches_hold_no_images_and_are_skipped() -> None:
    """A ``(0, C, H, W)`` batch has no values to range-check: alone it is "no images", in a stream it is skipped."""
    with pytest.raises(ValueError, match=r"^images: expected at least one image, got none$"):
        _confusion(torch.zeros(0, 3, 16, 16))
    images = smooth_images()
    report = _confusion([torch.zeros(0, 3, 16, 16), images, torch.zeros(0, 3, 16, 16)], buckets=_ONE_BUCKET)
    assert report.n_images == len(images)
    assert report.buckets[0].count == len(images)


def test_image_range_tolerance_is_inclusive_and_one_sided_checks_hold() -> None:
    """Images may exceed ``[-1, 1]`` by up to 1e-3 (rounding), boundary included; beyond that, on either side, the
    run stops with a ValueError quoting the values found."""
    tol = 1e-3
    edge = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    edge[0, 0, 0, 0] = -1.0 - tol
    edge[0, 1, 5, 5] = 1.0 + tol
    assert (float(edge.min()), float(edge.max())) == (-1.0 - tol, 1.0 + tol)
    assert _confusion(edge, buckets=_ONE_BUCKET).n_images == 1
    for value, shown in ((-1.5, "[-1.5, 0]"), (1.5, "[0, 1.5]"), (-1.0011, "[-1.0011, 0]"), (1.0011, "[0, 1.0011]")):
        bad = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
        bad[0, 2, 3, 4] = value
        with pytest.raises(
            ValueError, match=rf"^images: expected images in \[-1, 1\], got values in {re.escape(shown)}$"
        ):
            _confusion(bad, buckets=_ONE_BUCKET)


# ---- fixed masks: buckets starting at 50 % or more -------------------------------------------------------------------


def test_fixed_masks_of_high_buckets_come_from_the_documented_seed() -> None:
    """The seed recipe rounds the bucket bounds in units of 1e-6, also for a bucket starting above 50 %, so its
    masks are free_form_mask drawn from the documented 63-bit seed of ``(seed, i, 600000, 800000, k)``."""
    seen: list[torch.Tensor] = []

    def recorder(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        seen.append(hole.clone())
        return corrupted

    images = smooth_images()
    bucket = (0.6, 0.8)
    ev.segmentation_confusion(_channel_map, recorder, images, buckets=(bucket,), masks_per_image=2, seed=5)
    assert len(seen) == 2
    for k in range(2):
        for i in range(len(images)):
            gen = torch.Generator().manual_seed(_documented_mask_seed(5, i, bucket, k))
            assert torch.equal(seen[k][i], free_form_mask(16, 16, bucket=bucket, generator=gen))


# ---- segmenter_p_generated -------------------------------------------------------------------------------------------


def test_segmenter_p_generated_reads_logits_of_real_by_default() -> None:
    """Without ``output`` the map is SCAT's logit of "real": P(generated) = 1 / (1 + exp(logit))."""
    logits = torch.tensor([0.0, math.log(3.0), -math.log(3.0), 2.0]).reshape(1, 1, 2, 2)
    images = torch.zeros(1, 3, 2, 2)
    p = ev.segmenter_p_generated(lambda x: logits, images)
    want = torch.tensor([0.5, 0.25, 0.75, 1 / (1 + math.exp(2.0))]).reshape(1, 1, 2, 2)
    assert p.dtype == torch.float32
    torch.testing.assert_close(p, want)


def test_segmenter_p_generated_type_error_hints_at_two_heads_only_for_tuples() -> None:
    """A non-float map is a TypeError; only a tuple or list gets the two-headed discriminator hint, word for word."""
    images = torch.zeros(1, 3, 4, 4)
    with pytest.raises(TypeError) as error:
        ev.segmenter_p_generated(lambda x: torch.zeros(1, 1, 4, 4, dtype=torch.long), images)
    assert str(error.value) == (
        "segmenter: expected a floating-point (B, 1, H, W) tensor, "
        "got tensor of shape (1, 1, 4, 4) and dtype torch.int64"
    )
    with pytest.raises(TypeError) as error:
        ev.segmenter_p_generated(lambda x: None, images)
    assert str(error.value) == "segmenter: expected a floating-point (B, 1, H, W) tensor, got NoneType"
    hint = " (a two-headed discriminator returns (global, pixel): pass lambda x: D(x)[1])"
    for container in (tuple, list):
        with pytest.raises(TypeError) as error:
            ev.segmenter_p_generated(lambda x, c=container: c((x.mean(), x[:, :1])), images)
        got = f"{container.__name__}{hint}"
        assert str(error.value) == f"segmenter: expected a floating-point (B, 1, H, W) tensor, got {got}"


def test_segmenter_p_generated_probabilities_above_one_are_refused() -> None:
    """``output="prob_generated"`` accepts only ``[0, 1]``: 1.5 is a ValueError quoting the range found."""
    probs = torch.tensor([0.0, 0.5, 1.5, 1.0]).reshape(1, 1, 2, 2)
    with pytest.raises(ValueError) as error:
        ev.segmenter_p_generated(lambda x: probs, torch.zeros(1, 3, 2, 2), output="prob_generated")
    assert str(error.value) == (
        "segmenter: output='prob_generated' expects values in [0, 1], got [0, 1.5]; use output='logit_real' for logits"
    )
