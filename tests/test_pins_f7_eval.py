"""Tests pinning :mod:`scatloss.evaluate` behaviour that the session-7 mutation rerun found unchecked.

Re-batching yields no empty batch when a new image size follows a run of whole batches, ``evaluate`` names
``buckets`` in its error for an empty bucket list, and a float or bool ``seed`` gets the named error from both
``evaluate`` and ``segmentation_confusion``. Each expectation is the documented contract or an exact message.
"""

from __future__ import annotations

import pytest
import torch

from scatloss import evaluate as ev


def _identity(x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    return x


def test_rebatching_yields_no_empty_batch_when_the_size_changes_after_whole_batches() -> None:
    small, large = torch.zeros(4, 3, 12, 12), torch.ones(3, 3, 16, 16)
    got = [tuple(b.shape) for b in ev._batches([small, large], 2)]
    assert got == [(2, 3, 12, 12), (2, 3, 12, 12), (2, 3, 16, 16), (1, 3, 16, 16)]


def test_evaluate_names_buckets_for_an_empty_bucket_list() -> None:
    with pytest.raises(TypeError, match=r"^buckets: expected a non-empty sequence"):
        ev.evaluate(_identity, torch.zeros(2, 3, 16, 16), buckets=[])


@pytest.mark.parametrize("seed", [1.5, True])
def test_evaluate_refuses_a_seed_that_is_not_a_non_negative_int(seed: object) -> None:
    with pytest.raises(TypeError, match="seed: expected a non-negative int"):
        ev.evaluate(_identity, torch.zeros(2, 3, 16, 16), seed=seed)  # type: ignore[arg-type]
