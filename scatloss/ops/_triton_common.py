"""Helpers shared by the Triton kernel modules (``_scat_triton``, ``_infonce_triton``).

Importing this module imports Triton; :mod:`scatloss.ops.scat` and :mod:`scatloss.ops.infonce` only
import it on first use, so ``import scatloss`` works without Triton.

Registration. On a GPU each op is a :func:`torch.library.triton_op`: ``torch.compile`` traces into
its body and sees the ``wrap_triton`` kernel launches (Inductor launches them from its own wrapper,
which is what CUDA-graph trees and AOTInductor need). Under the Triton interpreter
(``TRITON_INTERPRET=1``, CPU tensors) ``wrap_triton`` hands back the interpreted function, which
cannot be traced with fake tensors; there the same body is registered as an opaque
:func:`torch.library.custom_op` with an explicit fake (shape) function, so ``torch.compile(fullgraph=True)``
still works on CPU and exercises the same schema, fake functions and autograd formulas.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from . import _interpreting

__all__ = ["acc_dtype", "launch", "next_pow2", "register_op", "target_programs"]


def register_op(name: str, fn: Callable[..., Any], fake: Callable[..., Any]) -> Any:
    """Register ``fn`` (torch ops + kernel launches) as ``scatloss::<name>``; see the module docstring."""
    qualname = f"scatloss::{name}"
    if _interpreting():
        op = torch.library.custom_op(qualname, fn, mutates_args=())
        op.register_fake(fake)
        return op
    # triton_op registers ``fn`` itself as the fake function (it is make_fx-traceable).
    return torch.library.triton_op(qualname, fn, mutates_args=())


def launch(kernel: Any, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    """Launch a ``@triton.jit`` kernel so that ``torch.compile`` can trace it (``wrap_triton``)."""
    wrap_triton(kernel)[grid](*args, **kwargs)


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def acc_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 if any input is float64, else float32 (fp16/bf16 accumulate in fp32)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


@functools.cache
def _sm_count(index: int) -> int:
    return int(torch.cuda.get_device_properties(index).multi_processor_count)


def target_programs(device: torch.device) -> int:
    """How many programs a split launch aims for: ~4 per SM on a GPU, few on the CPU interpreter.

    Reads cached device properties only (no synchronisation). Under the interpreter every program runs
    one after the other in Python, so fewer, wider programs are faster.
    """
    if device.type == "cuda":
        return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 1


@triton.jit
def to_acc(x, F64: tl.constexpr):
    """Cast to the accumulation type (float64 when ``F64``, else float32)."""
    if F64:
        return x.to(tl.float64)
    else:
        return x.to(tl.float32)


@triton.jit
def log1p(x):
    """Accurate ``log(1 + x)`` for ``x >= 0`` without libdevice (Goldberg's trick; portable to the interpreter)."""
    u = 1.0 + x
    d = u - 1.0
    return tl.where(d == 0.0, x, tl.log(u) * (x / tl.where(d == 0.0, 1.0, d)))
