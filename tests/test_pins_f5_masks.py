"""Tests pinning behaviour that mutation testing (run f5) found unchecked in ``scatloss.masks._shape``.

``_shape`` rasterises one candidate shape of a free-form mask from 24 uniforms ``u``: a box when ``u0 < 1/4``,
else a brush stroke. Each test compares with an independent expectation (box sizes and positions computed by
hand from the documented formulas, strokes re-computed in float64 by ``tests._pins.stroke_reference``) on
inputs where a surviving mutant behaves differently: the box/stroke threshold itself, the one-pixel floor of a
box side, a shrunk brush, a box flush with the far edge, and strokes clipped at each side of the image.
"""

from __future__ import annotations

import numpy as np
import pytest

import scatloss.masks as masks_module
from tests._pins import full_shape as _full_shape
from tests._pins import stroke_reference as _stroke_reference


def _u(*head: float) -> list[float]:
    """24 uniforms: ``head`` followed by 0.5s."""
    return [*head] + [0.5] * (24 - len(head))


def test_u0_of_exactly_a_quarter_draws_a_stroke_and_just_below_a_box() -> None:
    """Boxes are ``u0 < 1/4`` (a quarter of the shapes): ``u0 = 0.25`` already draws a brush stroke."""
    tail = [0.5, 0.2, 0.4, 0.63, 0.1, 0.7, 0.3]
    h = w = 16
    expected, margin = _stroke_reference(_u(0.25, *tail), h, w, 16.0, 1.0)
    assert margin > 1e-3 and 0 < expected.sum() < 16  # a thin 2-segment stroke, not a filled rectangle
    np.testing.assert_array_equal(_full_shape(_u(0.25, *tail), h, w, 16.0, 1.0), expected)
    # the same uniforms with u0 just below 1/4: a 3x2 box (round(16 * 0.2) = 3, round(16 * 0.11) = 2) at
    # (int(0.4 * 14), int(0.63 * 15)) = (5, 9)
    y0, y1, x0, x1, crop = masks_module._shape(_u(0.2499, *tail), h, w, 16.0, 1.0)
    assert (y0, y1, x0, x1) == (5, 8, 9, 11)
    assert crop.dtype == np.bool_ and crop.shape == (3, 2) and crop.all()


def test_a_box_side_is_at_least_one_pixel() -> None:
    """On a 3x3 image with the brush shrunk to half, ``round(3 * 0.5 * 0.05) = 0``: each side is floored at one
    pixel (not two), placed at ``int(0.9 * (3 - 1 + 1)) = 2``."""
    y0, y1, x0, x1, crop = masks_module._shape(_u(0.1, 0.0, 0.0, 0.9, 0.9), 3, 3, 3.0, 0.5)
    assert (y0, y1, x0, x1) == (2, 3, 2, 3)
    assert crop.dtype == np.bool_ and crop.shape == (1, 1) and crop.all()


def test_a_box_shrinks_with_the_brush_and_can_touch_the_far_edge() -> None:
    """Box sides are ``round(side scale (0.05 + 0.3 u))``: with scale 1/2 on 40x48, ``u1 = 0.5`` gives
    ``round(20 * 0.2) = 4`` rows and ``u2 = 0.8`` gives ``round(24 * 0.29) = 7`` columns; the corner is
    ``(int(0.9 * 37), int(0.99 * 42)) = (33, 41)``, so the box ends on the image's last column."""
    y0, y1, x0, x1, crop = masks_module._shape(_u(0.2, 0.5, 0.8, 0.9, 0.99), 40, 48, 40.0, 0.5)
    assert (y0, y1, x0, x1) == (33, 37, 41, 48)
    assert crop.dtype == np.bool_ and crop.shape == (4, 7) and crop.all()


BORDER_STROKES = {
    # from (1.5, 6) up-left twice (heading 1.2 pi, lengths ~4 and 3.68): the vertices are clipped to row 0,
    # then to column 0: the stroke runs along the top edge into the corner
    "top-left": (_u(0.5, 0.5, 0.2, 0.1, 0.4, 0.6, 0.5, 0.999, 0.5, 0.9), (0, 0)),
    # from (12, 12) right, then down, then left (turns of ~+90 degrees, lengths ~4): the first vertex is clipped
    # to column 15, the second to row 15, so the stroke hugs the right and bottom edges
    "bottom-right": (_u(0.5, 0.5, 0.3, 0.8, 0.8, 0.0, 0.5, 0.999, 0.999, 0.999, 0.999, 0.999), (15, 15)),
}


@pytest.mark.parametrize("case", list(BORDER_STROKES))
def test_stroke_vertices_are_clipped_to_the_image_and_paint_its_border(case: str) -> None:
    """Stroke vertices are clipped to ``[0, h - 1] x [0, w - 1]`` (not 1 or ``h``/``h - 2``) and the crop starts
    at row/column 0 when the stroke reaches it: a stroke that runs into a border paints the border pixels,
    exactly as the float64 re-computation with clipped vertices."""
    u, (row, col) = BORDER_STROKES[case]
    expected, margin = _stroke_reference(u, 16, 16, 16.0, 1.0)
    assert margin > 1e-3
    assert expected[row].any() and expected[:, col].any()  # the stroke reaches both borders
    np.testing.assert_array_equal(_full_shape(u, 16, 16, 16.0, 1.0), expected)
