"""Tests pinning :mod:`scatloss.masks` behaviour that the session-7 mutation rerun found unchecked.

The fallback grower's first pixel (drawn uniformly over the whole mask, pixel 0 included), an empty batch,
the masks' dtype under a non-default ``torch.get_default_dtype()``, restoring a state saved without a
``seed`` entry, and the named errors for a non-tensor ``rng_state`` and a float or bool seed. Each expectation
comes from the documented contract, not from another mode of the same code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scatloss.masks as masks_module
from scatloss.masks import MaskGenerator, free_form_mask


def test_fallback_growth_seeds_any_pixel_including_the_first() -> None:
    # From an empty 1x2 mask, growing to one pixel picks its position uniformly over both pixels.
    picked = set()
    for seed in range(40):
        mask = np.zeros((1, 2), dtype=bool)
        masks_module._grow(mask, 0, 1, torch.Generator().manual_seed(seed))
        assert int(mask.sum()) == 1
        picked.add(int(np.flatnonzero(mask.reshape(-1))[0]))
    assert picked == {0, 1}


def test_sample_of_zero_masks_is_an_empty_batch() -> None:
    out = MaskGenerator(8, 12, seed=0).sample(0)
    assert out.shape == (0, 1, 8, 12) and out.dtype == torch.float32


def test_sample_is_float32_whatever_the_default_dtype() -> None:
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out = MaskGenerator(8, 8, seed=0).sample(2)
    finally:
        torch.set_default_dtype(before)
    assert out.dtype == torch.float32


def test_load_state_dict_without_a_seed_entry_keeps_the_generators_seed_and_restores_the_stream() -> None:
    saved = MaskGenerator(16, 16, seed=5)
    state = saved.state_dict()
    del state["seed"]  # e.g. a checkpoint written before the seed was recorded
    expected = saved.sample(3)
    resumed = MaskGenerator(16, 16, seed=9)
    resumed.load_state_dict(state)
    assert resumed.seed == 9
    torch.testing.assert_close(resumed.sample(3), expected, rtol=0, atol=0)


def test_load_state_dict_names_a_non_tensor_rng_state() -> None:
    state = MaskGenerator(16, 16, seed=5).state_dict()
    state["rng_state"] = state["rng_state"].tolist()
    with pytest.raises(TypeError, match=r"state\['rng_state'\]: expected a uint8 tensor"):
        MaskGenerator(16, 16).load_state_dict(state)


@pytest.mark.parametrize("seed", [1.5, True, "3"])
def test_a_seed_that_is_not_a_non_negative_int_gets_the_named_error(seed: object) -> None:
    with pytest.raises(TypeError, match="seed: expected a non-negative int"):
        free_form_mask(8, 8, seed=seed)  # type: ignore[arg-type]


def test_nearest_resampling_at_full_height_takes_the_top_left_pixel_of_each_block() -> None:
    # Same height, width divided by 4: "nearest" keeps column 0 of every 4-column block (as F.interpolate
    # does), never the block's maximum.
    hole = torch.zeros(1, 1, 3, 8)
    hole[..., 1::4] = 1.0  # one hole column inside each block, never its first column
    got = masks_module.resample_hole(hole, (3, 2), mode="nearest")
    torch.testing.assert_close(got, torch.nn.functional.interpolate(hole, size=(3, 2), mode="nearest"))
    assert float(got.sum()) == 0.0
