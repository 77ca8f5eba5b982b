"""What an exact resume needs: atomic files, checked checkpoints, RNG states as tensors, a resumable sampler.

* :func:`atomic_write` / :func:`save_checkpoint`: temporary file in the target's folder, ``flush`` +
  ``fsync``, ``os.replace``, then an ``fsync`` of the folder. A reader never sees a half-written file; a
  crash leaves the previous file intact.
* :func:`load_checkpoint`: ``torch.load(..., weights_only=True)`` (no arbitrary code runs), and every
  failure (missing file, random bytes, truncated zip, a torch file of someone else's, a missing key) becomes
  a :class:`TrainerError` naming the file and what is wrong.
* :func:`rng_state` / :func:`set_rng_state`: torch (CPU and CUDA), numpy and Python RNG states as tensors and
  numbers, so they pass ``weights_only=True``.
* :class:`ResumableSampler`: :class:`~torch.utils.data.DistributedSampler` (a seeded generator per epoch,
  ``seed + epoch``) that can start an epoch at a given position, so a resumed run sees the same batches.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from scatloss.utils import atomic_write

__all__ = [
    "FORMAT",
    "ResumableSampler",
    "TrainerError",
    "atomic_write",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "scatloss.examples.aotgan/1"
"""Value of a checkpoint's ``"format"`` key; anything else is refused."""

REQUIRED_KEYS: tuple[str, ...] = (
    "format",
    "step",
    "epoch",
    "batch_in_epoch",
    "world_size",
    "config",
    "generator",
    "discriminator",
    "loss",
    "optim_g",
    "optim_d",
    "rng",
)


class TrainerError(RuntimeError):
    """A problem with the trainer's inputs (configuration, data, masks, checkpoint), with a message for humans.

    Raised before anything is written, so a failed start leaves the run folder untouched.
    """


# ---- files -----------------------------------------------------------------------------------------------------------


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save(state)`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: torch.save(dict(state), handle))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and sanity-check a trainer checkpoint with ``weights_only=True``.

    Raises:
        TrainerError: the file is missing, unreadable (random bytes, truncated), not a dict, not written by
            this trainer (no or another ``"format"``) or lacks one of :data:`REQUIRED_KEYS`.
    """
    file = Path(path)
    if not file.is_file():
        raise TrainerError(f"checkpoint {str(file)!r} does not exist (or is not a file)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (bad zip), EOFError, ...
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        # weights_only errors put the useful line ("WeightsUnpickler error: Unsupported global ...") further down
        first = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
        raise TrainerError(
            f"checkpoint {str(file)!r} cannot be read as a torch checkpoint (truncated, corrupted or not a "
            f"torch file): {type(error).__name__}: {first[:300]}"
        ) from None
    if not isinstance(state, dict):
        raise TrainerError(
            f"checkpoint {str(file)!r} holds a {type(state).__name__}, not a checkpoint of this trainer (a dict "
            f"with format {FORMAT!r})"
        )
    if state.get("format") != FORMAT:
        found = state.get("format", "<no 'format' key>")
        keys = ", ".join(sorted(map(str, state))[:8])
        raise TrainerError(
            f"checkpoint {str(file)!r} was not written by this trainer: expected format {FORMAT!r}, got "
            f"{found!r} (keys: {keys})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise TrainerError(f"checkpoint {str(file)!r} is incomplete: missing {', '.join(missing)}")
    if not isinstance(state["config"], dict):
        raise TrainerError(f"checkpoint {str(file)!r} is damaged: 'config' is a {type(state['config']).__name__}")
    return state


# ---- RNG states ------------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU, and CUDA when initialised), numpy and Python, as tensors/numbers."""
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned.

    Raises:
        TrainerError: the state is malformed.
    """
    try:
        torch.set_rng_state(state["torch"])
        cuda = state.get("cuda") or []
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        n = state["numpy"]
        np.random.set_state(
            (
                n["name"],
                n["keys"].numpy().astype(np.uint32),
                int(n["pos"]),
                int(n["has_gauss"]),
                float(n["cached_gaussian"]),
            )
        )
        p = state["python"]
        random.setstate((int(p["version"]), tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:
        raise TrainerError(f"checkpoint RNG state is malformed: {type(error).__name__}: {error}") from None


# ---- data order ------------------------------------------------------------------------------------------------------


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can begin an epoch part-way: ``set_start(n)`` skips this rank's first ``n`` indices.

    Each epoch's permutation comes from a generator seeded with ``seed + epoch`` (``DistributedSampler``'s own
    scheme), so ``set_epoch(e); set_start(k * batch_size)`` yields exactly the batches ``k, k+1, ...`` that an
    uninterrupted epoch ``e`` would have yielded. Works with one process (``num_replicas=1, rank=0``).
    """

    def __init__(self, dataset: Dataset[Any], *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def set_start(self, start: int) -> None:
        if start < 0:
            raise ValueError(f"start: expected a non-negative index, got {start}")
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)
