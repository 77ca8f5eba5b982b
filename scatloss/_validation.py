"""Input checks shared by every public entry point.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape, value
or option) with a message of the form ``"<argument>: expected <what>, got <what arrived>"``. Nothing
here uses ``assert``, so behaviour is identical under ``python -O``.

Value checks (hole masks in ``[0, 1]``, the boundary heuristics of :class:`scatloss.SCATCriterion` and the
adapters) read tensor data back to the host. They can be switched off globally for speed with
:func:`set_value_checks` / :func:`value_checks`, or by setting the environment variable
``SCATLOSS_CHECK_VALUES=0`` before import. They are skipped automatically while ``torch.compile`` traces
(they would force a graph break) and on ``meta`` tensors (no data; shape inference still works).

**Check once, at the boundary.** A public entry point (the criterion, an adapter) collects all of its value
checks in one :class:`ValueChecks`, reads them back in **one** device-to-host transfer
(:func:`read_to_host`), and then runs its internals under :func:`validated`, which makes every value check
below it (``composite``, ``corrupt``, the SCAT losses, ...) a no-op. Shape, dtype and option checks always
run: they cost no synchronisation. The functional API called directly still validates its own inputs.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

__all__ = [
    "ValueChecks",
    "check_bool",
    "check_choice",
    "check_float_tensor",
    "check_hole",
    "check_hole_convention",
    "check_image_range",
    "check_nonempty_batch",
    "check_nonempty_map",
    "check_number",
    "check_same_batch",
    "check_sizes",
    "check_same_device",
    "inverted_hole_samples",
    "read_to_host",
    "set_value_checks",
    "validated",
    "value_checks",
    "value_checks_enabled",
]

_VALUE_CHECKS = os.environ.get("SCATLOSS_CHECK_VALUES", "1").strip().lower() not in ("0", "false", "no", "off")

_VALIDATED: contextvars.ContextVar[bool] = contextvars.ContextVar("scatloss_inputs_validated", default=False)
"""True inside :func:`validated`: the inputs were value-checked at the public entry point."""


def set_value_checks(enabled: bool) -> None:
    """Switch the data-dependent checks (hole values in ``[0, 1]``, boundary heuristics) on or off process-wide.

    Shape, dtype and option checks always run: they cost nothing. Value checks synchronise with the
    device (one transfer per public call), so a training loop that has validated its data pipeline may turn
    them off.
    """
    global _VALUE_CHECKS
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected a bool, got {type(enabled).__name__}")
    _VALUE_CHECKS = enabled


def value_checks_enabled() -> bool:
    """Whether data-dependent checks run here (``False`` while ``torch.compile`` traces, or inside
    :func:`validated`, where the public entry point has already checked the values)."""
    if not _VALUE_CHECKS or _VALIDATED.get():
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


@contextlib.contextmanager
def validated() -> Iterator[None]:
    """Mark the inputs of every call inside the block as already value-checked (internal use).

    A public entry point checks its inputs' values once, then runs its internals inside this block so that the
    functions it calls skip their own device-to-host reads. The mark lives in a :mod:`contextvars` variable, so
    it is per thread and per asyncio task, and it is reset on exit whatever is raised.
    """
    token = _VALIDATED.set(True)
    try:
        yield
    finally:
        _VALIDATED.reset(token)


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return bool(compiler.is_compiling())
    return False  # pragma: no cover - very old torch


def _has_data(*tensors: torch.Tensor) -> bool:
    """Whether value checks can read these tensors: not ``meta`` (shape inference), not empty."""
    return all(t.device.type != "meta" and t.numel() > 0 for t in tensors)


def read_to_host(*tensors: torch.Tensor) -> list[float]:
    """The one device-to-host read of a value check: all ``tensors`` flattened into one list of floats.

    Every value check of scatloss goes through here (tests count the calls to pin "one read per step").
    """
    if not tensors:
        return []
    dtype = torch.float32 if tensors[0].device.type == "mps" else torch.float64
    flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])
    return [float(v) for v in flat.tolist()]


class ValueChecks:
    """Value checks collected on the device and read back in one transfer.

    ``add(stats, interpret)`` queues a small tensor of statistics (computed without synchronising) and the
    function that turns their host values into an error; :meth:`run` does one :func:`read_to_host` for all of
    them and calls each ``interpret`` in the order they were added (so the first failing check raises).
    """

    def __init__(self) -> None:
        self._stats: list[torch.Tensor] = []
        self._interpret: list[Callable[[list[float]], None]] = []

    def __len__(self) -> int:
        return len(self._stats)

    def add(self, stats: torch.Tensor, interpret: Callable[[list[float]], None]) -> None:
        self._stats.append(stats.detach().reshape(-1))
        self._interpret.append(interpret)

    def run(self) -> None:
        if not self._stats:
            return
        values = read_to_host(*self._stats)
        start = 0
        stats, interpret = self._stats, self._interpret
        self._stats, self._interpret = [], []
        for s, fn in zip(stats, interpret, strict=True):
            n = s.numel()
            fn(values[start : start + n])
            start += n


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


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    what: str | None = None,
) -> float:
    """Check a float option: a real number (not a bool, str or tensor), finite, within ``[low, high]``.

    ``low_open=True`` excludes ``low`` itself; ``what`` replaces the generated description of what is expected.
    Returns the value as a ``float``.

    Raises:
        TypeError: not an ``int`` or ``float`` (``"white"``, ``None``, a tensor, a bool).
        ValueError: NaN, infinite, or out of range.
    """
    if what is None:
        what = "a finite number"
        if low is not None or high is not None:
            left = "(" if low_open else "["
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            what += f" in {left}{lo}, {hi}{')' if high is None else ']'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected {what}, got {describe(value)}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    if (low is not None and (v < low or (low_open and v == low))) or (high is not None and v > high):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return v


def check_bool(name: str, value: Any) -> bool:
    """Check a flag: a ``bool`` (``bool("no")`` is ``True``, so no conversion is attempted)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {describe(value)}")
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


def check_nonempty_batch(name: str, x: torch.Tensor) -> None:
    """The one error for an empty batch: ``ValueError`` naming the argument (losses average over ``B``)."""
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty batch (B >= 1), got shape {tuple(x.shape)}")


def check_nonempty_map(name: str, x: torch.Tensor, what: str) -> None:
    """``ValueError`` naming ``name`` for a ``(B, C, h, w)`` ``what`` (a mask, a logit map) without rows or columns."""
    if x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name}: expected a {what} with at least one row and one column, got shape {tuple(x.shape)}")


def check_sizes(*sizes: tuple[str, Any], what: str = "") -> None:
    """``ValueError`` naming the first ``(name, value)`` of ``sizes`` that is not a positive int (a bool is not)."""
    for name, value in sizes:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int{what}, got {value!r}")


def check_same_batch(**tensors: torch.Tensor) -> None:
    """Check that all tensors share their first (batch) dimension."""
    sizes = {name: t.shape[0] for name, t in tensors.items()}
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{name} has {n}" for name, n in sizes.items())
        raise ValueError(f"batch size mismatch: expected the same batch size for all inputs, got {detail}")


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """Check that all (non-``None``) tensors are on one device (``meta`` included: no mixing)."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        detail = ", ".join(f"{name} on {d}" for name, d in devices.items())
        raise ValueError(f"device mismatch: expected all inputs on one device, got {detail}")


def check_hole(
    hole: Any,
    *,
    batch: int | None = None,
    name: str = "hole",
    checks: ValueChecks | None = None,
    recheck: bool = False,
) -> torch.Tensor:
    """Check a hole mask: ``(B, 1, H, W)``, float or bool, values in ``[0, 1]`` (1 = missing).

    The value check is queued on ``checks`` (read back by the caller, together with its other checks), or read
    here when ``checks`` is ``None``. It is skipped inside :func:`validated` unless ``recheck`` (a mask that did
    not pass the entry point's checks, e.g. from a user's sampler). Returns the mask unchanged (bool stays
    bool); callers convert to the working dtype.
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
    check_nonempty_map(name, hole, "mask")
    if batch is not None and hole.shape[0] != batch:
        raise ValueError(f"{name}: expected batch size {batch} to match the other inputs, got {hole.shape[0]}")
    wanted = _VALUE_CHECKS and not _is_compiling() and (recheck or not _VALIDATED.get())
    if hole.is_floating_point() and wanted and _has_data(hole):
        own = ValueChecks() if checks is None else checks
        own.add(torch.stack(list(torch.aminmax(hole.detach()))), lambda v: _hole_values(name, v[0], v[1]))
        if checks is None:
            own.run()
    return hole


def _hole_values(name: str, lo: float, hi: float) -> None:
    if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise ValueError(
            f"{name}: expected values in [0, 1] (1 = missing pixel), got values in [{lo:g}, {hi:g}]; "
            "switch this check off with scatloss.set_value_checks(False)"
        )


# ----------------------------------------------------------------------------------------------------------
# Boundary heuristics of the image and mask conventions (criterion and adapters)
# ----------------------------------------------------------------------------------------------------------

RANGE_TOLERANCE = 1e-2
"""Overshoot tolerated beyond a range's ends (interpolation and float round-off in data pipelines)."""

MAX_MEAN_HOLE_RATIO = 0.6
"""Largest mean hole ratio of a batch (all-hole samples left out) the criterion accepts without
``check_inputs=False``: the paper trains and evaluates on masks of at most 60 % holes, whereas a valid mask
(1 = known) passed as a hole mask has mostly ones."""


def _range_error(name: str, host: str, expected: str, lo: float, hi: float, guess: str, switch: str) -> ValueError:
    return ValueError(
        f"{name}: expected images in {expected} ({host}'s convention), got values in [{lo:.4g}, {hi:.4g}], "
        f"which looks like {guess}. Convert the images, or pass {switch} if this batch really is in "
        f"{expected} (the check is a heuristic over the whole batch)"
    )


def _interpret_range(name: str, lo: float, hi: float, expected: tuple[float, float], host: str, switch: str) -> None:
    low_end, high_end = expected
    text = f"[{low_end:g}, {high_end:g}]"
    if not (lo == lo and hi == hi):  # NaN
        raise ValueError(f"{name}: expected finite images in {text} ({host}'s convention), got NaN values")
    if hi > high_end + RANGE_TOLERANCE:
        guess = "[0, 255] (uint8 scale)" if hi > 2.0 else "a different normalisation"
        raise _range_error(name, host, text, lo, hi, guess, switch)
    if low_end < 0.0 and lo >= 0.0:
        raise _range_error(name, host, text, lo, hi, "[0, 1] (no negative value in the whole batch)", switch)
    if lo < low_end - RANGE_TOLERANCE:
        raise _range_error(
            name,
            host,
            text,
            lo,
            hi,
            "[-1, 1]" if low_end >= 0.0 and lo >= -1.0 - RANGE_TOLERANCE else "unnormalised data",
            switch,
        )


def check_image_range(
    name: str,
    image: torch.Tensor,
    *,
    expected: tuple[float, float],
    host: str,
    checks: ValueChecks | None = None,
    switch: str = "check_range=False",
) -> None:
    """Raise ``ValueError`` when a batch of natural images is clearly not in ``expected`` (``(-1, 1)`` or ``(0, 1)``).

    Heuristics, over the whole batch: NaN; any value beyond ``expected`` by more than 1e-2 (e.g. ``[0, 255]``);
    for ``(-1, 1)``, no negative value at all (a ``[0, 1]`` batch: natural images in ``[-1, 1]`` have dark
    pixels below 0); any value below the low end by more than 1e-2 (for ``(0, 1)``: a ``[-1, 1]`` batch).
    Skipped while :func:`value_checks_enabled` is false. Queued on ``checks``, or one read here.
    """
    if not value_checks_enabled() or not _has_data(image):
        return
    own = ValueChecks() if checks is None else checks
    own.add(
        torch.stack(list(torch.aminmax(image.detach()))),
        lambda v: _interpret_range(name, v[0], v[1], expected, host, switch),
    )
    if checks is None:
        own.run()


def inverted_hole_samples(fake: torch.Tensor, real: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: samples whose mask looks like a *valid* mask (1 = known) given where ``fake == real``.

    Under a hole mask a composite equals the ground truth exactly wherever the mask is 0 (``(1 - 0) * x + 0 *
    pred == x`` in floating point). A sample is flagged when ``fake`` equals ``real`` (all channels) on every
    pixel the mask calls a hole (``== 1``), differs on at least one pixel the mask calls known (``== 0``), and
    the mask has at least one hole. A correct composite under a correct hole mask is never flagged; a raw
    prediction (not a composite) essentially never equals the ground truth on every hole pixel, so it is not
    flagged either (the check then simply cannot tell).
    """
    with torch.no_grad():
        h = hole.float() if hole.dtype == torch.bool else hole
        same = (fake == real).all(dim=1, keepdim=True)
        known, holes = h == 0, h == 1
        consistent = (same | ~known).flatten(1).all(dim=1)
        same_on_holes = (same | ~holes).flatten(1).all(dim=1)
        has_holes = holes.flatten(1).any(dim=1)
        return same_on_holes & has_holes & ~consistent


def _interpret_convention(name: str, flags: list[float], host: str, switch: str) -> None:
    idx = [i for i, f in enumerate(flags) if f != 0.0]
    if idx:
        raise ValueError(
            f"{name}: expected a hole mask (1 = missing pixel, {host}'s convention), got what looks like a valid "
            f"mask (1 = known pixel): in sample(s) {idx[:8]} the composite equals the ground truth exactly on "
            "every pixel the mask calls a hole and differs from it where the mask calls pixels known. Pass "
            f"1 - mask, or {switch} to skip this check"
        )


def check_hole_convention(
    name: str,
    fake: torch.Tensor,
    real: torch.Tensor,
    hole: torch.Tensor,
    *,
    host: str,
    checks: ValueChecks | None = None,
    switch: str = "check_mask=False",
) -> None:
    """Raise ``ValueError`` when ``hole`` is evidently a valid mask (1 = known); see :func:`inverted_hole_samples`."""
    if not value_checks_enabled() or not _has_data(fake, real, hole):
        return
    own = ValueChecks() if checks is None else checks
    own.add(
        inverted_hole_samples(fake.detach(), real.detach(), hole).to(torch.float32),
        lambda v: _interpret_convention(name, v, host, switch),
    )
    if checks is None:
        own.run()


def check_hole_ratio(
    name: str,
    hole: torch.Tensor,
    *,
    limit: float = MAX_MEAN_HOLE_RATIO,
    checks: ValueChecks | None = None,
    switch: str = "check_inputs=False",
) -> None:
    """Raise ``ValueError`` when the batch's mean hole ratio exceeds ``limit`` ("mostly ones": an inverted mask).

    All-hole samples (a legal degenerate input) are left out of the mean; a batch of only all-hole samples
    passes.
    """
    if not value_checks_enabled() or not _has_data(hole):
        return
    with torch.no_grad():
        ratio = hole.detach().flatten(1).to(torch.float32).mean(dim=1)
        partial = ratio < 1.0
        count = partial.sum().to(torch.float32)
        total = torch.where(partial, ratio, torch.zeros_like(ratio)).sum()
    own = ValueChecks() if checks is None else checks
    own.add(torch.stack([total, count]), lambda v: _interpret_ratio(name, v[0], v[1], limit, switch))
    if checks is None:
        own.run()


def _interpret_ratio(name: str, total: float, count: float, limit: float, switch: str) -> None:
    if count > 0 and total / count > limit:
        raise ValueError(
            f"{name}: expected a hole mask (1 = missing pixel) with a mean hole ratio of at most {limit:g}, got "
            f"{total / count:.3g} over the batch (all-hole samples left out), which looks like a valid mask "
            f"(1 = known pixel); pass 1 - mask, or {switch} if these masks really are mostly holes"
        )
