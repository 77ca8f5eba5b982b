"""What the host-check scripts share: CPU shims for CUDA-only host code, images, masks, spawn helpers.

The scripts drive a user's checkout from its path; nothing from a host is copied here. The shims only make
CUDA-only calls runnable on a CPU (``.cuda()`` becomes a no-op, ``torch.load(map_location="cuda")`` loads to the
CPU, ``DistributedDataParallel(device_ids=[rank])`` drops the device ids); each is installed by the script that
needs it and says so when it runs.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from scatloss.masks import MaskGenerator


def say(*parts: Any) -> None:
    print(*parts, flush=True)


FAILURES: list[str] = []  # this process's failed checks


def check(ok: bool, what: str) -> None:
    """Print ``PASS what`` or ``FAIL what``; a failure is remembered for :func:`summary`."""
    say(("PASS " if ok else "FAIL ") + what)
    if not ok:
        FAILURES.append(what)


def summary() -> int:
    """Print the verdict of this process's checks; the exit status (1 if any failed)."""
    say("\n" + ("all checks passed" if not FAILURES else f"{len(FAILURES)} check(s) failed"))
    return 1 if FAILURES else 0


def cuda_shims() -> list[str]:
    """Make ``.cuda()`` and ``torch.load(map_location='cuda')`` work without CUDA; returns what was patched."""
    if torch.cuda.is_available():
        return []
    nn.Module.cuda = lambda self, device=None: self  # type: ignore[method-assign,assignment]
    torch.Tensor.cuda = lambda self, device=None, non_blocking=False, **kw: self  # type: ignore[method-assign,assignment]
    original = torch.load

    def load(*args: Any, map_location: Any = None, **kwargs: Any) -> Any:
        if map_location is not None and "cuda" in str(map_location):
            map_location = "cpu"
        kwargs.setdefault("weights_only", False)
        return original(*args, map_location=map_location, **kwargs)

    torch.load = load  # type: ignore[assignment]
    return [".cuda() -> no-op", "torch.load(map_location='cuda') -> 'cpu'"]


def stub_modules(names: dict[str, dict[str, Any]]) -> list[str]:
    """Install stand-in modules for imports that are missing here and unused by the check (e.g. torchvision)."""
    done = []
    for name, attrs in names.items():
        try:
            __import__(name)
            continue
        except Exception:
            pass
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in sys.modules or i == len(parts):
                module = sys.modules.get(sub) or types.ModuleType(sub)
                sys.modules[sub] = module
                if i > 1:
                    setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], module)
        for key, value in attrs.items():
            setattr(sys.modules[name], key, value)
        done.append(name)
    return done


def photos(n: int, size: int, *, low: float, seed: int = 0) -> torch.Tensor:
    """``n`` random crops of scikit-image's sample photos (random smooth images without scikit-image)."""
    gen = torch.Generator().manual_seed(seed)
    try:
        from skimage import data as skdata

        pool = [torch.from_numpy(getattr(skdata, k)()).float() / 255 for k in ("astronaut", "chelsea", "coffee")]
        pool = [p.permute(2, 0, 1) for p in pool]
        out = []
        for i in range(n):
            img = pool[i % len(pool)]
            y = int(torch.randint(0, img.shape[1] - size + 1, (1,), generator=gen))
            x = int(torch.randint(0, img.shape[2] - size + 1, (1,), generator=gen))
            out.append(img[:, y : y + size, x : x + size])
        batch = torch.stack(out)
    except Exception:
        small = torch.rand(n, 3, max(size // 8, 1), max(size // 8, 1), generator=gen)
        batch = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return batch * 2 - 1 if low < 0 else batch


def masks(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return MaskGenerator(size, size, seed=seed).sample(n)


def interleaved_times(step: Callable[[str], Any], names: list[str], repeats: int) -> dict[str, list[float]]:
    """Wall times (s) of ``step(name)`` for every name: one untimed warm-up round, then ``repeats`` rounds that
    each run every name once in turn (interleaved, so drift in the machine's load hits every name alike)."""
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats + 1):
        for name in names:
            t0 = time.perf_counter()
            step(name)
            if r > 0:
                times[name].append(time.perf_counter() - t0)
    return times


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(fn: Callable[..., None], world: int, *args: Any) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` processes with a gloo group, as torchrun would; a process whose
    :func:`check` calls failed exits with status 1 (``mp.spawn`` then raises)."""
    import torch.multiprocessing as mp

    port = free_port()
    mp.spawn(_entry, args=(world, port, fn, args), nprocs=world, join=True)


def _entry(rank: int, world: int, port: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    import torch.distributed as dist

    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world),
         "LOCAL_RANK": str(rank)}
    )  # fmt: skip
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()
    if FAILURES:
        raise SystemExit(1)


def identical_on_all_ranks(tensors: list[torch.Tensor]) -> bool:
    import torch.distributed as dist

    flat = torch.cat([t.detach().double().flatten() for t in tensors])
    parts = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, flat)
    return all(torch.equal(parts[0], p) for p in parts)
