"""Input checks shared by every public entry point.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape, value
or option) with a message of the form ``"<argument>: expected <what>, got <what arrived>"``. Nothing
here uses ``assert``, so behaviour is identical under ``python -O``.

Value checks (hole masks in ``[0, 1]``) read tensor data back to the host. They can be switched off
globally for speed with :func:`set_value_checks` / :func:`value_checks`, or by setting the
environment variable ``SCATLOSS_CHECK_VALUES=0`` before import. They are skipped automatically while
``torch.compile`` traces, since they would force a graph break.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

__all__ = [
    "check_choice",
    "check_float_tensor",
    "check_hole",
    "check_same_batch",
    "set_value_checks",
    "value_checks",
    "value_checks_enabled",
]

_VALUE_CHECKS = os.environ.get("SCATLOSS_CHECK_VALUES", "1").strip().lower() not in ("0", "false", "no", "off")


def set_value_checks(enabled: bool) -> None:
    """Switch the data-dependent checks (hole values in ``[0, 1]``) on or off for the whole process.

    Shape, dtype and option checks always run: they cost nothing. Value checks synchronise with the
    device (one reduction per mask), so a training loop that has validated its data pipeline may turn
    them off.
    """
    global _VALUE_CHECKS
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected a bool, got {type(enabled).__name__}")
    _VALUE_CHECKS = enabled


def value_checks_enabled() -> bool:
    """Whether data-dependent checks run (``False`` while ``torch.compile`` is tracing)."""
    if not _VALUE_CHECKS:
        return False
    return not _is_compiling()


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Context manager form of :func:`set_value_checks`; restores the previous setting on exit."""
    global _VALUE_CHECKS
    previous = _VALUE_CHECKS
    set_value_checks(enabled)
    try:
        yield
    finally:
        _VALUE_CHECKS = previous


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return bool(compiler.is_compiling())
    return False  # pragma: no cover - very old torch


def describe(x: Any) -> str:
    """Short description of what arrived, for error messages."""
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}" if isinstance(x, (int, float, str, bool)) else type(x).__name__


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of the string ``choices``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")
    return value


def check_float_tensor(name: str, x: Any, *, ndim: int | Sequence[int] | None = None) -> torch.Tensor:
    """Check that ``x`` is a floating-point tensor with the given number of dimensions."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a floating-point torch.Tensor, got {describe(x)}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got dtype {x.dtype}; convert with .float()"
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(f"{n}-D" for n in allowed)
            raise ValueError(f"{name}: expected a {want} tensor, got shape {tuple(x.shape)}")
    return x


def check_same_batch(**tensors: torch.Tensor) -> None:
    """Check that all tensors share their first (batch) dimension."""
    sizes = {name: t.shape[0] for name, t in tensors.items()}
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{name} has {n}" for name, n in sizes.items())
        raise ValueError(f"batch size mismatch: expected the same batch size for all inputs, got {detail}")


def check_hole(hole: Any, *, batch: int | None = None, name: str = "hole") -> torch.Tensor:
    """Check a hole mask: ``(B, 1, H, W)``, float or bool, values in ``[0, 1]`` (1 = missing).

    Returns the mask unchanged (bool stays bool); callers convert to the working dtype.
    """
    if not isinstance(hole, torch.Tensor):
        raise TypeError(f"{name}: expected a float or bool torch.Tensor of shape (B, 1, H, W), got {describe(hole)}")
    if not (hole.is_floating_point() or hole.dtype == torch.bool):
        raise TypeError(
            f"{name}: expected a float or bool tensor (1 = missing pixel), got dtype {hole.dtype}; "
            "convert with .float() or .bool()"
        )
    if hole.dim() != 4 or hole.shape[1] != 1:
        raise ValueError(
            f"{name}: expected shape (B, 1, H, W) with one channel (1 = missing pixel), got shape {tuple(hole.shape)}"
        )
    if batch is not None and hole.shape[0] != batch:
        raise ValueError(f"{name}: expected batch size {batch} to match the other inputs, got {hole.shape[0]}")
    if hole.is_floating_point() and hole.numel() > 0 and value_checks_enabled():
        lo, hi = torch.aminmax(hole.detach())
        lo_v, hi_v = float(lo), float(hi)
        if not (lo_v >= 0.0 and hi_v <= 1.0):  # also catches NaN
            raise ValueError(
                f"{name}: expected values in [0, 1] (1 = missing pixel), got values in [{lo_v:g}, {hi_v:g}]; "
                "switch this check off with scatloss.set_value_checks(False)"
            )
    return hole
