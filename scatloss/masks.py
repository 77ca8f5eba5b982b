"""Hole masks: resampling to a logit map's resolution (and, below, seeded free-form generation).

Convention used everywhere in scatloss: a *hole mask* is ``(B, 1, H, W)``, float or bool,
1 = missing pixel, 0 = known pixel (AOT-GAN, LaMa and DeepFill use the same convention). The paper
writes the complement, ``m = 1 - hole``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ._validation import check_choice, check_hole, describe

Resample = Literal["area", "nearest", "max"]
RESAMPLE_MODES: tuple[str, ...] = ("area", "nearest", "max")

__all__ = [
    "BUCKETS",
    "BUCKET_NAMES",
    "RESAMPLE_MODES",
    "Bucket",
    "MaskGenerator",
    "Resample",
    "bucket_name",
    "bucket_of",
    "free_form_mask",
    "hole_ratio",
    "resample_hole",
]


def resample_hole(hole: torch.Tensor, size: tuple[int, int], mode: Resample = "area") -> torch.Tensor:
    """Resample a hole mask to ``size`` (the spatial size of a logit map).

    Args:
        hole: ``(B, 1, H, W)`` float or bool hole mask (1 = missing).
        size: target ``(h, w)``.
        mode: ``"area"`` gives the fraction of missing pixels under each output pixel
            (soft targets; exact block averages when ``H, W`` are integer multiples of ``h, w``),
            ``"nearest"`` picks the top-left source pixel of each block (``F.interpolate(mode="nearest")``),
            ``"max"`` marks an output pixel missing if any source pixel under it is missing.

    Returns:
        ``(B, 1, h, w)`` floating tensor. A bool mask comes back as float32; a float mask keeps its
        dtype. When the size already matches, the mask is returned as is (no copy), converted to
        float if it was bool; ``"nearest"`` with an integer factor returns a strided view of a float
        mask (no copy). Integer factors use fixed-window pooling, other ratios adaptive pooling.

    Upsampling (``h > H``) is allowed in every mode; area and max then reduce to nearest-style
    replication through adaptive pooling.

    Raises:
        TypeError: ``hole`` not a float or bool tensor (an int64 mask: convert with ``.float()``), ``size`` not a
            pair of ints (a fractional size is refused, not truncated).
        ValueError: ``hole`` not ``(B, 1, H, W)`` (a 3-D or 2-channel mask), float values outside ``[0, 1]``,
            non-positive sizes, an unknown ``mode``.
    """
    check_hole(hole)
    check_choice("resample", mode, RESAMPLE_MODES)
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise TypeError(f"size: expected a pair (h, w) of positive ints, got {describe(size)}")
    for axis, v in zip(("h", "w"), size, strict=True):
        if isinstance(v, bool) or not isinstance(v, (int, torch.SymInt)):
            raise TypeError(f"size: expected a pair (h, w) of positive ints, got {axis} = {describe(v)}")
        if v < 1:
            raise ValueError(f"size: expected a pair (h, w) of positive ints, got {axis} = {v}")
    return resample_hole_unchecked(hole, (size[0], size[1]), mode)


def resample_hole_unchecked(hole: torch.Tensor, size: tuple[int, int], mode: Resample = "area") -> torch.Tensor:
    """:func:`resample_hole` without input checks, for callers that validated ``hole`` already (internal)."""
    h, w = int(size[0]), int(size[1])
    H, W = int(hole.shape[-2]), int(hole.shape[-1])
    if mode == "nearest" and h <= H and w <= W and H % h == 0 and W % w == 0:
        # integer factor: the top-left pixel of each block, as F.interpolate(mode="nearest"), as a strided view
        hole = hole[..., :: H // h, :: W // w]
        return hole if hole.is_floating_point() else hole.float()
    if not hole.is_floating_point():
        hole = hole.float()
    if (h, w) == (H, W):
        return hole
    if h <= H and w <= W and H % h == 0 and W % w == 0:
        # integer factor: the fixed-window pools give the adaptive pools' blocks, faster (and traceable with
        # symbolic shapes)
        kernel = (H // h, W // w)
        return F.avg_pool2d(hole, kernel) if mode == "area" else F.max_pool2d(hole, kernel)
    if mode == "area":
        return F.adaptive_avg_pool2d(hole, (h, w))
    if mode == "max":
        return F.adaptive_max_pool2d(hole, (h, w))
    return F.interpolate(hole, size=(h, w), mode="nearest")


# ----------------------------------------------------------------------------------------------------------------------
# Seeded free-form hole masks (DeepFill v2 / LaMa style) by hole-ratio bucket
# ----------------------------------------------------------------------------------------------------------------------

BUCKETS: tuple[tuple[float, float], ...] = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6))
"""Hole-ratio buckets of the paper's evaluation (Table 2): 0-20 %, 20-40 %, 40-60 % of the pixels missing."""

BUCKET_NAMES: tuple[str, ...] = ("0-20%", "20-40%", "40-60%")
"""Display names of :data:`BUCKETS`, index for index."""

Bucket = int | tuple[float, float] | None

_MAX_CANDIDATES = 96  # shapes tried before the exact fill-in fallback takes over
_PARAMS_PER_SHAPE = 24  # uniforms drawn per candidate shape (fixed, so the RNG stream is easy to reason about)
_MAX_SEGMENTS = 8


def bucket_name(bucket: tuple[float, float]) -> str:
    """Display name of a ``(lo, hi)`` ratio bucket, e.g. ``(0.2, 0.4) -> "20-40%"``."""
    lo, hi = _check_bucket_pair("bucket", bucket)
    return f"{lo * 100:g}-{hi * 100:g}%"


def hole_ratio(hole: torch.Tensor) -> torch.Tensor:
    """Fraction of missing pixels of each mask.

    Args:
        hole: ``(B, 1, H, W)`` float or bool hole mask (1 = missing). Soft float masks count fractionally.

    Returns:
        ``(B,)`` float64 tensor on the mask's device (float64 so that a ratio computed from a pixel count
        lands on the same side of a bucket boundary as the count itself).

    Raises:
        TypeError: ``hole`` is not a float or bool tensor.
        ValueError: ``hole`` is not ``(B, 1, H, W)`` or (float) has values outside ``[0, 1]``.
    """
    check_hole(hole)  # also refuses a mask without rows or columns (no ratio; a NaN mean otherwise)
    return hole.detach().to(torch.float64).mean(dim=(1, 2, 3))


def bucket_of(ratio: float | torch.Tensor, buckets: Sequence[tuple[float, float]] = BUCKETS) -> int:
    """Index of the bucket a measured hole ratio falls in.

    Buckets are half-open ``[lo, hi)`` except the last one, which is closed ``[lo, hi]`` (so with the
    default buckets a ratio of exactly 0.6 belongs to "40-60%").

    Args:
        ratio: a Python number or a one-element tensor (e.g. one entry of :func:`hole_ratio`), in ``[0, 1]``.
        buckets: sorted, non-overlapping ``(lo, hi)`` pairs; default :data:`BUCKETS`.

    Returns:
        The bucket index, or ``-1`` when the ratio lies in no bucket (with the default buckets: a hole
        ratio above 0.6). Evaluation code can then skip or report such masks separately.

    Raises:
        TypeError: ``ratio`` is not a number or a one-element tensor.
        ValueError: ``ratio`` is NaN or outside ``[0, 1]``, or ``buckets`` is malformed.
    """
    if isinstance(ratio, torch.Tensor):
        if ratio.numel() != 1:
            raise TypeError(f"ratio: expected a number or a one-element tensor, got {describe(ratio)}")
        value = float(ratio.item())
    elif isinstance(ratio, (int, float)) and not isinstance(ratio, bool):
        value = float(ratio)
    else:
        raise TypeError(f"ratio: expected a number or a one-element tensor, got {describe(ratio)}")
    if not (0.0 <= value <= 1.0):  # also rejects NaN
        raise ValueError(f"ratio: expected a hole ratio in [0, 1], got {value!r}")
    pairs = _check_buckets("buckets", buckets)
    last = len(pairs) - 1
    for index, (lo, hi) in enumerate(pairs):
        if lo <= value < hi or (index == last and value == hi):
            return index
    return -1


def free_form_mask(
    height: int,
    width: int,
    *,
    bucket: Bucket = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """One free-form hole mask whose hole ratio lies in a requested bucket.

    The mask is a union of random thick brush strokes (polylines of 1-8 segments with random angles and
    lengths, drawn with a disc brush of random width, as in DeepFill v2 / LaMa) and random axis-aligned
    boxes. Shapes are added until the hole ratio reaches a target drawn uniformly inside the bucket; a
    shape that would push the ratio to or past the bucket's upper bound is rejected and the brush shrinks.
    If that has not reached the bucket after a fixed number of tries (rare: tiny images or very narrow
    buckets), the mask is grown by random boundary pixels until it does. Shape sizes scale with
    ``min(height, width)``. Everything is rasterised with torch on the CPU (no OpenCV); a 256x256 mask
    takes a few milliseconds.

    Guarantee: the measured ratio ``r = holes / (height * width)`` satisfies ``lo <= r < hi`` (so
    :func:`bucket_of` returns the requested bucket), and the mask is never empty, also for ``lo = 0``.

    Args:
        height, width: mask size in pixels.
        bucket: ``None`` (uniform choice among :data:`BUCKETS`), an index into :data:`BUCKETS`, or a
            ``(lo, hi)`` pair with ``0 <= lo < hi <= 1``.
        generator: a CPU ``torch.Generator`` to draw from (advanced by the call).
        seed: build a private generator from this seed instead. Give at most one of ``generator`` and
            ``seed``. With neither, a seed is drawn from torch's global RNG, so ``torch.manual_seed``
            makes unseeded calls repeatable; with either, the result does not depend on the global RNG.

    Returns:
        ``(1, height, width)`` float32 tensor on the CPU, 1 = missing pixel.

    Raises:
        TypeError: wrong argument types (``generator`` not a ``torch.Generator``, non-integer sizes, ...).
        ValueError: non-positive sizes, a CUDA generator, both ``generator`` and ``seed``, a malformed bucket,
            or a bucket that no pixel count of a ``height x width`` mask can hit.
    """
    h, w = _check_size(height, width)
    gen = _resolve_generator(generator, seed)
    lo, hi = _resolve_bucket(bucket, BUCKETS, gen)
    return _draw_mask(h, w, lo, hi, gen)[None]


class MaskGenerator:
    """Seeded source of free-form hole masks, balanced over hole-ratio buckets.

    The generator owns a private CPU ``torch.Generator`` seeded with ``seed``: two instances with the same
    arguments produce identical sequences, whatever the global torch RNG does. :meth:`state_dict` /
    :meth:`load_state_dict` save and restore that RNG, so a resumed training run draws exactly the masks it
    would have drawn without the interruption.

    Args:
        height, width: mask size in pixels.
        buckets: ``(lo, hi)`` hole-ratio buckets to sample from; default :data:`BUCKETS`.
        seed: RNG seed (a non-negative integer).

    Example:
        >>> gen = MaskGenerator(64, 64, seed=0)
        >>> gen.sample(4).shape
        torch.Size([4, 1, 64, 64])
        >>> bucket_of(hole_ratio(gen.sample(1, bucket=2))[0])
        2
    """

    def __init__(
        self, height: int, width: int, *, buckets: Sequence[tuple[float, float]] = BUCKETS, seed: int = 0
    ) -> None:
        self.height, self.width = _check_size(height, width)
        self.buckets: tuple[tuple[float, float], ...] = _check_buckets("buckets", buckets)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise TypeError(f"seed: expected a non-negative int, got {describe(seed)}")
        self.seed = seed
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(seed)

    def __repr__(self) -> str:
        return f"MaskGenerator(height={self.height}, width={self.width}, buckets={self.buckets}, seed={self.seed})"

    def sample(
        self,
        batch: int,
        *,
        bucket: Bucket = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Draw ``batch`` masks.

        Args:
            batch: number of masks (``>= 0``).
            bucket: ``None`` draws each mask's bucket uniformly from ``self.buckets``; an int indexes
                ``self.buckets``; a ``(lo, hi)`` pair is used as given.
            generator: draw from this CPU generator instead of the instance's own (whose state then stays
                untouched).
            device: where to put the result (masks are drawn on the CPU).

        Returns:
            ``(batch, 1, height, width)`` float32 hole masks (1 = missing).
        """
        if not isinstance(batch, int) or isinstance(batch, bool):
            raise TypeError(f"batch: expected an int, got {describe(batch)}")
        if batch < 0:
            raise ValueError(f"batch: expected a non-negative int, got {batch}")
        gen = self._generator if generator is None else _resolve_generator(generator, None)
        masks = torch.empty(batch, 1, self.height, self.width, dtype=torch.float32)
        for i in range(batch):
            lo, hi = _resolve_bucket(bucket, self.buckets, gen)
            masks[i, 0] = _draw_mask(self.height, self.width, lo, hi, gen)
        return masks if device is None else masks.to(device)

    def state_dict(self) -> dict[str, Any]:
        """RNG state plus the configuration it belongs to (for checkpoints)."""
        return {
            "height": self.height,
            "width": self.width,
            "buckets": [list(b) for b in self.buckets],
            "seed": self.seed,
            "rng_state": self._generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the RNG state saved by :meth:`state_dict`.

        Raises:
            TypeError: ``state`` is not a mapping or its ``rng_state`` is not a uint8 tensor.
            ValueError: a key is missing, or the saved size / buckets differ from this generator's.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state: expected a mapping from MaskGenerator.state_dict(), got {describe(state)}")
        missing = [k for k in ("height", "width", "buckets", "rng_state") if k not in state]
        if missing:
            raise ValueError(f"state: expected keys height, width, buckets, rng_state, got no {', '.join(missing)}")
        try:
            saved = (
                int(state["height"]),
                int(state["width"]),
                tuple(tuple(float(v) for v in b) for b in state["buckets"]),
            )
            seed = int(state.get("seed", self.seed))
        except (TypeError, ValueError):
            raise TypeError(
                "state: expected int height, width and seed and (lo, hi) float buckets, got "
                f"height={state['height']!r}, width={state['width']!r}, buckets={state['buckets']!r}, "
                f"seed={state.get('seed')!r}"
            ) from None
        mine = (self.height, self.width, self.buckets)
        if saved != mine:
            raise ValueError(
                f"state: expected a state saved by a generator with (height, width, buckets) = {mine}, got {saved}"
            )
        rng_state = state["rng_state"]
        if not isinstance(rng_state, torch.Tensor) or rng_state.dtype != torch.uint8:
            raise TypeError(f"state['rng_state']: expected a uint8 tensor, got {describe(rng_state)}")
        self._generator.set_state(rng_state.clone())
        self.seed = seed


# ---- helpers ---------------------------------------------------------------------------------------------------------


def _check_size(height: Any, width: Any) -> tuple[int, int]:
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{name}: expected a positive int, got {describe(v)}")
        if v <= 0:
            raise ValueError(f"{name}: expected a positive int, got {v}")
    return height, width


def _check_bucket_pair(name: str, bucket: Any) -> tuple[float, float]:
    if (
        not isinstance(bucket, (tuple, list))
        or len(bucket) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bucket)
    ):
        raise TypeError(f"{name}: expected a (lo, hi) pair of numbers, got {describe(bucket)}")
    lo, hi = float(bucket[0]), float(bucket[1])
    if not (0.0 <= lo < hi <= 1.0):
        raise ValueError(f"{name}: expected 0 <= lo < hi <= 1, got ({lo!r}, {hi!r})")
    return lo, hi


def _check_buckets(name: str, buckets: Any) -> tuple[tuple[float, float], ...]:
    if not isinstance(buckets, (tuple, list)) or len(buckets) == 0:
        raise TypeError(f"{name}: expected a non-empty sequence of (lo, hi) pairs, got {describe(buckets)}")
    pairs = tuple(_check_bucket_pair(f"{name}[{i}]", b) for i, b in enumerate(buckets))
    for i in range(1, len(pairs)):
        if pairs[i][0] < pairs[i - 1][1]:
            raise ValueError(f"{name}: expected sorted, non-overlapping buckets, got {pairs}")
    return pairs


def _resolve_generator(generator: Any, seed: Any) -> torch.Generator:
    if generator is not None and seed is not None:
        raise ValueError("generator, seed: expected at most one of them, got both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator, got {describe(generator)}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator: expected a CPU torch.Generator, got one on {generator.device}")
        return generator
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())  # global RNG: torch.manual_seed governs unseeded calls
    elif not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"seed: expected a non-negative int, got {describe(seed)}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


def _resolve_bucket(bucket: Any, buckets: tuple[tuple[float, float], ...], gen: torch.Generator) -> tuple[float, float]:
    if bucket is None:
        return buckets[int(torch.randint(0, len(buckets), (1,), generator=gen).item())]
    if isinstance(bucket, int) and not isinstance(bucket, bool):
        if not 0 <= bucket < len(buckets):
            raise ValueError(f"bucket: expected an index in [0, {len(buckets) - 1}], got {bucket}")
        return buckets[bucket]
    if isinstance(bucket, (tuple, list)):
        return _check_bucket_pair("bucket", bucket)
    raise TypeError(f"bucket: expected None, an int index or a (lo, hi) pair, got {describe(bucket)}")


def _count_bounds(n_pixels: int, lo: float, hi: float) -> tuple[int, int]:
    """Pixel counts ``n`` with ``lo <= n / n_pixels < hi`` and ``n >= 1``: returns ``[n_min, n_stop)``."""

    def first_at_least(r: float) -> int:
        n = max(0, math.ceil(r * n_pixels) - 1)
        while n / n_pixels < r:
            n += 1
        return n

    n_min = max(1, first_at_least(lo))
    n_stop = first_at_least(hi) if hi < 1.0 else n_pixels  # hi = 1 would allow an all-hole mask: keep one pixel
    return n_min, n_stop


def _draw_mask(h: int, w: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    """``(h, w)`` float32 hole mask with ``lo <= ratio < hi`` (and at least one hole pixel).

    Rasterisation runs in NumPy (single-threaded, no per-op dispatch cost); all randomness comes from ``gen``.
    """
    n_pixels = h * w
    n_min, n_stop = _count_bounds(n_pixels, lo, hi)
    if n_min >= n_stop:
        raise ValueError(
            f"bucket: expected a hole-ratio range that a {h}x{w} mask can hit with at least one hole pixel, "
            f"got ({lo:g}, {hi:g}); use a larger mask or a wider bucket"
        )
    # Target count drawn uniformly in [n_min, n_stop); shapes are added until the count reaches it.
    target = n_min + int(torch.randint(0, n_stop - n_min, (1,), generator=gen).item())
    mask = np.zeros((h, w), dtype=bool)
    count = 0
    scale = 1.0
    side = float(min(h, w))
    for _ in range(_MAX_CANDIDATES):
        if count >= target:
            break
        u = torch.rand(_PARAMS_PER_SHAPE, generator=gen, dtype=torch.float64).tolist()
        y0, y1, x0, x1, shape = _shape(u, h, w, side, scale)
        region = mask[y0:y1, x0:x1]  # a view: updated in place below
        added = int(np.count_nonzero(shape & ~region))
        if count + added >= n_stop:
            scale *= 0.7  # overshoot: reject the shape, shrink the brush
            continue
        region |= shape
        count += added
    if count < n_min:
        _grow(mask, count, n_min, gen)
    return torch.from_numpy(mask.astype(np.float32))


def _shape(u: list[float], h: int, w: int, side: float, scale: float) -> tuple[int, int, int, int, np.ndarray]:
    """Rasterise one random shape from uniforms ``u``; returns its bounding box and its bool crop."""
    if u[0] < 0.25:  # axis-aligned box, sides 5-35 % of the image side
        bh = max(1, round(h * scale * (0.05 + 0.30 * u[1])))
        bw = max(1, round(w * scale * (0.05 + 0.30 * u[2])))
        y0 = int(u[3] * (h - bh + 1))
        x0 = int(u[4] * (w - bw + 1))
        return y0, y0 + bh, x0, x0 + bw, np.ones((bh, bw), dtype=bool)
    # Brush stroke: a polyline of 1-8 segments with a disc brush of diameter 3-15 % of the image side.
    radius = max(0.5, 0.5 * side * scale * (0.03 + 0.12 * u[1]))
    n_seg = 1 + int(u[2] * _MAX_SEGMENTS)
    ys = [u[3] * (h - 1)]
    xs = [u[4] * (w - 1)]
    heading = 2.0 * math.pi * u[5]
    for k in range(n_seg):
        heading += (u[6 + 2 * k] - 0.5) * math.pi  # turn by up to +-90 degrees
        length = side * max(scale, 0.25) * (0.05 + 0.20 * u[7 + 2 * k])
        ys.append(min(max(ys[-1] + length * math.sin(heading), 0.0), h - 1.0))
        xs.append(min(max(xs[-1] + length * math.cos(heading), 0.0), w - 1.0))
    pad = math.ceil(radius)
    y0 = max(0, math.floor(min(ys)) - pad)
    y1 = min(h, math.ceil(max(ys)) + pad + 1)
    x0 = max(0, math.floor(min(xs)) - pad)
    x1 = min(w, math.ceil(max(xs)) + pad + 1)
    # Segment k runs from (ay, ax)[k] to (ay + dy, ax + dx)[k], in box-relative coordinates; shapes (K, 1, 1).
    ay = (np.asarray(ys[:-1], dtype=np.float32) - y0)[:, None, None]
    ax = (np.asarray(xs[:-1], dtype=np.float32) - x0)[:, None, None]
    dy = np.asarray(ys[1:], dtype=np.float32)[:, None, None] - y0 - ay
    dx = np.asarray(xs[1:], dtype=np.float32)[:, None, None] - x0 - ax
    dd = np.maximum(dy * dy + dx * dx, np.float32(1e-12))
    ry = np.arange(y1 - y0, dtype=np.float32)[None, :, None] - ay  # (K, h', 1)
    rx = np.arange(x1 - x0, dtype=np.float32)[None, None, :] - ax  # (K, 1, w')
    t = np.clip((ry * dy + rx * dx) / dd, 0.0, 1.0)  # (K, h', w') projection onto each segment
    ey = ry - t * dy
    ex = rx - t * dx
    dist2 = (ey * ey + ex * ex).min(axis=0)  # (h', w') squared distance to the polyline
    return y0, y1, x0, x1, dist2 <= radius * radius


def _grow(mask: np.ndarray, count: int, n_min: int, gen: torch.Generator) -> None:
    """Fallback, in place: add random boundary pixels (3x3 dilation ring) until ``mask`` holds ``n_min`` pixels."""
    h, w = mask.shape
    flat = mask.reshape(-1)  # a view
    if count == 0:
        flat[int(torch.randint(0, h * w, (1,), generator=gen).item())] = True
        count = 1
    while count < n_min:
        padded = np.pad(mask, 1)
        grown = np.zeros_like(mask)
        for oy in range(3):
            for ox in range(3):
                grown |= padded[oy : oy + h, ox : ox + w]
        ring = np.flatnonzero(grown & ~mask)
        need = n_min - count
        if ring.size > need:
            ring = ring[torch.randperm(ring.size, generator=gen)[:need].numpy()]
        flat[ring] = True
        count += int(ring.size)
