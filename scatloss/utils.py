"""Small helpers shared by the package, its examples, tests and benchmarks: atomic file writes, temporarily frozen
parameters, and a tensor-memory high-water mark."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["atomic_write", "frozen_parameters", "peak_memory_bytes"]


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform / file system can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], *, binary: bool = True) -> Path:
    """Create ``path`` atomically: ``write(handle)`` into a temporary file beside it, fsync, ``os.replace``.

    A reader never sees a half-written file, and an interrupted write leaves any previous file intact: on
    any error the temporary file is removed and ``path`` is untouched. Missing parent folders are created.

    Args:
        path: the file to create or replace.
        write: called with the open temporary file (binary, or UTF-8 text with ``binary=False``).

    Returns:
        The path written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        handle: Any = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


@contextlib.contextmanager
def frozen_parameters(*modules: nn.Module | None) -> Iterator[None]:
    """Switch ``requires_grad`` off for the parameters of ``modules`` that have it, and back on afterwards.

    A graph built inside the block has no weight-gradient work for these modules, while gradients still flow
    through them to their inputs. Parameters the caller had already frozen stay frozen; the flags are restored
    even when the block raises. ``None`` entries are skipped.
    """
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """High-water mark of live tensor bytes on ``device`` while ``fn()`` runs, above the level at its start.

    CUDA: ``torch.cuda.max_memory_allocated`` after a peak reset (synchronised). CPU: replayed from the
    allocation and free events that ``torch.profiler`` records with ``profile_memory=True`` (tensor bytes only:
    no allocator slack, no oneDNN scratch), which is deterministic for a given sequence of operations.
    Tensors allocated before the call (the inputs) are not counted; ones ``fn`` creates and keeps are.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    if device.type != "cpu":
        raise ValueError(f"device: expected 'cpu' or a CUDA device, got {device}")
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())  # type: ignore[union-attr]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and str(node.extra_fields.device) == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak
