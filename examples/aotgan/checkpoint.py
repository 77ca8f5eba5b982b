"""What an exact resume needs: atomic files, checked checkpoints, RNG states as tensors, a resumable sampler.

* :func:`atomic_write` / :func:`save_checkpoint`: temporary file in the target's folder, ``flush`` +
  ``fsync``, ``os.replace``, then an ``fsync`` of the folder. A reader never sees a half-written file; a
  crash leaves the previous file intact (and at most a ``.step_*.pt.*.tmp`` file, which
  :func:`remove_stale_temp_files` deletes at the next start).
* Integrity: a checkpoint file is one header line, ``scatloss-checkpoint sha256=<64 hex> bytes=<n>``, followed
  by the ``torch.save`` payload. :func:`verify_checkpoint` checks the length and the SHA-256 of the payload
  before anything is unpickled, so a truncated file or a flipped bit is refused instead of loading wrong
  weights. Files without the header (plain ``torch.save`` zips of earlier versions) load with a warning.
* :func:`load_checkpoint`: verify, then ``torch.load(..., weights_only=True)`` (no arbitrary code runs), and
  every failure (missing file, random bytes, truncated or corrupted file, a torch file of someone else's, a
  missing key) becomes a :class:`TrainerError` naming the file and what is wrong.
* :func:`load_newest`: the newest loadable checkpoint of a folder; a corrupt newer one is skipped with a
  warning naming it (fall back to the previous one), and when none loads the error lists every file.
* :func:`rng_state` / :func:`set_rng_state`: torch (CPU and CUDA), numpy and Python RNG states as tensors and
  numbers, so they pass ``weights_only=True``.
* :class:`ResumableSampler`: :class:`~torch.utils.data.DistributedSampler` (a seeded generator per epoch,
  ``seed + epoch``) that can start an epoch at a given position, so a resumed run sees the same batches.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from scatloss.utils import atomic_write

__all__ = [
    "FORMAT",
    "NonFiniteError",
    "ResumableSampler",
    "TrainerError",
    "atomic_write",
    "load_checkpoint",
    "load_newest",
    "remove_stale_temp_files",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "verify_checkpoint",
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


HEADER_PREFIX = b"scatloss-checkpoint sha256="
"""Start of a checkpoint file's first line, ``scatloss-checkpoint sha256=<64 hex> bytes=<n>`` and a newline."""

_HEADER = re.compile(rb"scatloss-checkpoint sha256=([0-9a-f]{64}) bytes=([0-9]{1,15})\n")
_HEADER_MAX = 128  # the header line is at most 114 bytes (99 + up to 15 digits)
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip format: a checkpoint written before the header existed


class TrainerError(RuntimeError):
    """A problem with the trainer's inputs (configuration, data, masks, checkpoint), with a message for humans.

    Raised before anything is written, so a failed start leaves the run folder untouched.
    """


class NonFiniteError(TrainerError):
    """Training produced a NaN or an infinity (a loss term, a gradient, a weight): the run stopped.

    Raised before the optimiser step that would have used it and before any checkpoint holding it could be
    written, so the newest checkpoint on disk is the last good one (named in the message).
    """


# ---- files -----------------------------------------------------------------------------------------------------------


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save(state)`` to ``path`` atomically, behind a header with the payload's length and SHA-256.

    The payload is serialised in memory first, so the file is written (and hashed) in one pass; see
    :func:`atomic_write` for the atomicity and :func:`verify_checkpoint` for the check.
    """
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    payload = buffer.getbuffer()
    header = HEADER_PREFIX + f"{hashlib.sha256(payload).hexdigest()} bytes={len(payload)}\n".encode("ascii")

    def write(handle: Any) -> None:
        handle.write(header)
        handle.write(payload)

    return atomic_write(path, write)


def _payload(file: Path) -> memoryview:
    """The verified ``torch.save`` payload of ``file`` (or the whole file when it has no header, with a warning)."""
    try:
        data = file.read_bytes()
    except OSError as error:
        raise TrainerError(f"checkpoint {str(file)!r} cannot be read: {error}") from None
    view = memoryview(data)
    if data.startswith(_ZIP_MAGIC):
        warnings.warn(
            f"checkpoint {str(file)!r} has no content hash (a plain torch.save file, e.g. from an earlier version of "
            "this trainer): loading it without an integrity check",
            stacklevel=3,
        )
        return view
    newline = data.find(b"\n", 0, _HEADER_MAX)
    match = _HEADER.fullmatch(data[: newline + 1]) if newline >= 0 else None
    if match is None:
        what = "a damaged header" if data.startswith(HEADER_PREFIX[:12]) else "no checkpoint header"
        raise TrainerError(
            f"checkpoint {str(file)!r} cannot be read as a torch checkpoint of this trainer ({what}; corrupted, "
            "or not a checkpoint)"
        )
    expected_hash, expected_size = match.group(1).decode("ascii"), int(match.group(2))
    payload = view[newline + 1 :]
    if len(payload) != expected_size:
        raise TrainerError(
            f"checkpoint {str(file)!r} is corrupted: its header promises {expected_size} bytes of payload, the "
            f"file holds {len(payload)} ({'truncated' if len(payload) < expected_size else 'bytes appended'})"
        )
    digest = hashlib.sha256(payload).hexdigest()
    if digest != expected_hash:
        raise TrainerError(
            f"checkpoint {str(file)!r} is corrupted: SHA-256 of the payload is {digest[:16]}..., the header "
            f"says {expected_hash[:16]}... (a changed byte: disk or copy error)"
        )
    return payload


def verify_checkpoint(path: str | os.PathLike[str]) -> None:
    """Check a checkpoint file's length and SHA-256 against its header, without unpickling anything.

    Raises:
        TrainerError: the file is missing, has no valid header, is truncated or extended, or its content
            does not match the hash (a plain ``torch.save`` zip without header passes with a warning).
    """
    file = Path(path)
    if not file.is_file():
        raise TrainerError(f"checkpoint {str(file)!r} does not exist (or is not a file)")
    _payload(file)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Verify (:func:`verify_checkpoint`), load with ``weights_only=True`` and sanity-check a trainer checkpoint.

    Raises:
        TrainerError: the file is missing, corrupted (hash or length mismatch), unreadable (random bytes), not
            a dict, not written by this trainer (no or another ``"format"``) or lacks one of
            :data:`REQUIRED_KEYS`.
    """
    file = Path(path)
    if not file.is_file():
        raise TrainerError(f"checkpoint {str(file)!r} does not exist (or is not a file)")
    payload = _payload(file)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
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


def load_newest(paths: list[Path]) -> tuple[Path, dict[str, Any], list[Path]]:
    """Load the newest loadable checkpoint among ``paths`` (sorted oldest first, e.g. ``step_*.pt`` by name).

    A checkpoint that fails :func:`load_checkpoint` (corrupted, truncated, unreadable) is skipped with a
    ``UserWarning`` naming it and the one tried next.

    Returns:
        ``(path, state, skipped)``: the file loaded, its state, and the newer files that were skipped.

    Raises:
        TrainerError: ``paths`` is empty, or no file loads (the message lists each file and why).
    """
    if not paths:
        raise TrainerError("no checkpoint to load")
    failures: list[tuple[Path, str]] = []
    for index, path in enumerate(reversed(paths)):
        try:
            state = load_checkpoint(path)
        except TrainerError as error:
            failures.append((path, str(error)))
            fallback = paths[len(paths) - index - 2] if index + 1 < len(paths) else None
            then = f"falling back to {str(fallback)!r}" if fallback is not None else "no older checkpoint is left"
            warnings.warn(f"skipping a checkpoint that does not load ({error}); {then}", stacklevel=2)
            continue
        return path, state, [p for p, _ in failures]
    reasons = "; ".join(message for _, message in failures)
    raise TrainerError(f"none of the {len(paths)} checkpoint(s) loads: {reasons}")


def remove_stale_temp_files(folder: str | os.PathLike[str], pattern: str = "step_*.pt") -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` for targets matching ``pattern``.

    An ``atomic_write`` killed before its ``os.replace`` (``SIGKILL``, power loss) leaves
    ``.<target name>.<random>.tmp`` beside the target; nothing else removes it. Only that name pattern,
    only directly in ``folder`` (not recursive), is touched. Call it only when no other process writes there.

    Returns:
        The files removed.
    """
    removed = []
    for stale in sorted(Path(folder).glob(f".{pattern}.*.tmp")):
        if stale.is_file() and not stale.is_symlink():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


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
