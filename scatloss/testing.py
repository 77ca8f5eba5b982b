r"""Hypothesis strategies and reusable property checks for inpainting losses.

This module is what scatloss's own tests use, made public so that a downstream project can
property-test *its* losses, adapters and discriminators in a few lines::

    from hypothesis import given
    from scatloss.testing import check_batch_permutation_invariance, hole_masks, logit_maps

    @given(logit_maps(batch=3, height=7, width=11), hole_masks(batch=3, height=14, width=22))
    def test_my_loss_ignores_batch_order(logits, hole):
        check_batch_permutation_invariance(my_loss, logits, hole)

It needs the optional dependency `hypothesis <https://hypothesis.readthedocs.io>`_
(``pip install 'scatloss[dev]'``).

Strategies draw one seed through hypothesis and build every tensor from a seeded CPU
:class:`torch.Generator`, so they are fast and failures replay exactly. Sizes may be given as ints
or as hypothesis strategies of ints.

The ``check_*`` functions raise :class:`AssertionError` with a message saying which case failed and
by how much (they are test helpers, so assertions are their contract); they raise
:class:`ValueError`/:class:`TypeError` for arguments that make the check meaningless.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch

try:
    from hypothesis import assume
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "scatloss.testing needs hypothesis: pip install 'scatloss[dev]' (or pip install hypothesis)"
    ) from exc

__all__ = [
    "EXTREME_LOGIT",
    "HoleBucket",
    "check_batch_permutation_invariance",
    "check_contrastive_gradient_direction",
    "check_finite_on_degenerate_masks",
    "check_module_matches_functional",
    "contrastive_embeddings",
    "feature_lists",
    "hole_masks",
    "image_batches",
    "logit_maps",
]

EXTREME_LOGIT: float = 1e4
"""Magnitude of the extreme logits :func:`logit_maps` plants when ``extreme=True``."""

HoleBucket = Literal["empty", "full"] | tuple[float, float] | None
IntLike = int | SearchStrategy[int]

_SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ----------------------------------------------------------------------------------------------------------------------
# argument helpers
# ----------------------------------------------------------------------------------------------------------------------


def _int_strategy(name: str, value: Any, *, min_value: int) -> SearchStrategy[int]:
    if isinstance(value, SearchStrategy):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value < min_value:
            raise ValueError(f"{name}: expected an int >= {min_value} or a hypothesis strategy, got {value}")
        return st.just(value)
    raise TypeError(f"{name}: expected an int or a hypothesis strategy of ints, got {type(value).__name__}")


def _check_dtype(name: str, dtype: Any, allowed: Sequence[torch.dtype]) -> torch.dtype:
    if dtype not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(str(d) for d in allowed)}, got {dtype!r}")
    return dtype


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


def _drawn_int(draw: Callable[[SearchStrategy[Any]], Any], name: str, strategy: SearchStrategy[int], lo: int) -> int:
    value = draw(strategy)
    if not isinstance(value, int) or value < lo:
        raise ValueError(f"{name}: expected the strategy to draw ints >= {lo}, got {value!r}")
    return value


def _count_range(n: int, lo: float, hi: float) -> tuple[int, int]:
    """Pixel counts ``k`` (inclusive range) with ``lo <= k / n < hi``, or ``<= 1`` when ``hi == 1``."""
    k_min = max(0, math.ceil(lo * n) - 1)
    while k_min / n < lo:
        k_min += 1
    if hi >= 1.0:
        return k_min, n
    k_max = min(n, math.floor(hi * n) + 1)
    while k_max >= 0 and k_max / n >= hi:
        k_max -= 1
    return k_min, k_max


# ----------------------------------------------------------------------------------------------------------------------
# strategies
# ----------------------------------------------------------------------------------------------------------------------


def _place_holes(height: int, width: int, count: int, g: torch.Generator) -> torch.Tensor:
    """``(height, width)`` bool mask with exactly ``count`` hole pixels: one random box, then scattered pixels."""
    n = height * width
    if count <= 0:
        return torch.zeros(height, width, dtype=torch.bool)
    if count >= n:
        return torch.ones(height, width, dtype=torch.bool)
    bh = 1 + int(torch.randint(0, min(height, count), (1,), generator=g))
    bw = 1 + int(torch.randint(0, min(width, count // bh), (1,), generator=g))
    y0 = int(torch.randint(0, height - bh + 1, (1,), generator=g))
    x0 = int(torch.randint(0, width - bw + 1, (1,), generator=g))
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y0 : y0 + bh, x0 : x0 + bw] = True
    rest = count - bh * bw
    if rest > 0:
        free = (~mask).view(-1).nonzero().squeeze(1)
        mask.view(-1)[free[torch.randperm(free.numel(), generator=g)[:rest]]] = True
    return mask


def hole_masks(
    batch: IntLike = st.integers(1, 4),  # noqa: B008 - strategies are immutable values
    height: IntLike = st.integers(1, 16),  # noqa: B008
    width: IntLike = st.integers(1, 16),  # noqa: B008
    *,
    bucket: HoleBucket = None,
    dtype: torch.dtype = torch.float32,
) -> SearchStrategy[torch.Tensor]:
    """Hole masks ``(B, 1, H, W)`` (1 = missing) drawn by hole-ratio bucket.

    Each mask is one random box plus scattered pixels, with an exact number of hole pixels.

    Args:
        batch, height, width: sizes (ints or strategies of ints, ``batch >= 1``, ``height, width >= 1``).
        bucket: ``None`` draws each mask's ratio freely (hole-free and all-hole masks included, and
            favoured); ``"empty"`` gives hole-free masks; ``"full"`` all-hole masks; ``(lo, hi)`` with
            ``0 <= lo < hi <= 1`` gives masks whose ratio ``r = #holes / (H * W)`` satisfies
            ``lo <= r < hi`` (``lo <= r <= 1`` when ``hi == 1``), the convention of
            :data:`scatloss.masks.BUCKETS`. Sizes that cannot hit the bucket are rejected via
            ``hypothesis.assume``.
        dtype: ``torch.bool`` or a floating dtype (values exactly 0 and 1).

    Example:
        >>> from hypothesis import given
        >>> @given(hole_masks(batch=2, height=8, width=8, bucket=(0.2, 0.4)))
        ... def test_ratio(hole):
        ...     ratio = hole.float().mean(dim=(1, 2, 3))
        ...     assert ((0.2 <= ratio) & (ratio < 0.4)).all()
        >>> test_ratio()
    """
    b_st = _int_strategy("batch", batch, min_value=1)
    h_st = _int_strategy("height", height, min_value=1)
    w_st = _int_strategy("width", width, min_value=1)
    _check_dtype("dtype", dtype, (torch.bool, *_FLOAT_DTYPES))
    lo_hi: tuple[float, float] | None = None
    if isinstance(bucket, str):
        if bucket not in ("empty", "full"):
            raise ValueError(f"bucket: expected None, 'empty', 'full' or a (lo, hi) pair, got {bucket!r}")
    elif isinstance(bucket, tuple):
        if len(bucket) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bucket):
            raise TypeError(f"bucket: expected a (lo, hi) pair of numbers, got {bucket!r}")
        lo_hi = (float(bucket[0]), float(bucket[1]))
        if not 0.0 <= lo_hi[0] < lo_hi[1] <= 1.0:
            raise ValueError(f"bucket: expected 0 <= lo < hi <= 1, got {bucket!r}")
    elif bucket is not None:
        raise TypeError(f"bucket: expected None, 'empty', 'full' or a (lo, hi) pair, got {type(bucket).__name__}")

    @st.composite
    def draw_masks(draw: Callable[[SearchStrategy[Any]], Any]) -> torch.Tensor:
        b = _drawn_int(draw, "batch", b_st, 1)
        h = _drawn_int(draw, "height", h_st, 1)
        w = _drawn_int(draw, "width", w_st, 1)
        n = h * w
        if bucket == "empty":
            counts = st.just(0)
        elif bucket == "full":
            counts = st.just(n)
        elif lo_hi is not None:
            k_min, k_max = _count_range(n, *lo_hi)
            assume(k_min <= k_max)
            counts = st.integers(k_min, k_max)
        else:
            counts = st.one_of(st.just(0), st.just(n), st.integers(0, n))
        g = _generator(draw(_SEEDS))
        masks = torch.stack([_place_holes(h, w, draw(counts), g) for _ in range(b)]).unsqueeze(1)
        return masks.to(dtype)

    return draw_masks()


def logit_maps(
    batch: IntLike = st.integers(1, 4),  # noqa: B008
    height: IntLike = st.integers(1, 16),  # noqa: B008
    width: IntLike = st.integers(1, 16),  # noqa: B008
    *,
    extreme: bool = False,
    dtype: torch.dtype = torch.float32,
) -> SearchStrategy[torch.Tensor]:
    """Per-pixel logit maps ``(B, 1, H, W)`` of a segmenter (raw scores, no sigmoid).

    Values are standard normal times a drawn scale (0.1, 1 or 5). With ``extreme=True`` a drawn
    fraction of the pixels is set to ``±EXTREME_LOGIT`` (``±1e4``); at least one ``+1e4`` and, when
    the map has two or more pixels, at least one ``-1e4`` are always present.

    Args:
        batch, height, width: sizes (ints or strategies of ints, all ``>= 1``).
        extreme: plant extreme logits.
        dtype: a floating dtype.

    Example:
        >>> from hypothesis import given
        >>> @given(logit_maps(batch=2, height=3, width=5, extreme=True))
        ... def test_extreme(z):
        ...     assert z.shape == (2, 1, 3, 5) and z.abs().max() == 1e4
        >>> test_extreme()
    """
    b_st = _int_strategy("batch", batch, min_value=1)
    h_st = _int_strategy("height", height, min_value=1)
    w_st = _int_strategy("width", width, min_value=1)
    _check_dtype("dtype", dtype, _FLOAT_DTYPES)

    @st.composite
    def draw_logits(draw: Callable[[SearchStrategy[Any]], Any]) -> torch.Tensor:
        b = _drawn_int(draw, "batch", b_st, 1)
        h = _drawn_int(draw, "height", h_st, 1)
        w = _drawn_int(draw, "width", w_st, 1)
        scale = draw(st.sampled_from((1.0, 0.1, 5.0)))
        g = _generator(draw(_SEEDS))
        z = torch.randn(b, 1, h, w, generator=g, dtype=torch.float64) * scale
        if extreme:
            frac = draw(st.sampled_from((0.0, 0.25, 1.0)))
            flat = z.view(-1)
            hit = torch.rand(flat.numel(), generator=g, dtype=torch.float64) < frac
            sign = torch.where(torch.rand(flat.numel(), generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
            flat[hit] = EXTREME_LOGIT * sign[hit]
            flat[0] = EXTREME_LOGIT
            if flat.numel() > 1:
                flat[-1] = -EXTREME_LOGIT
        return z.to(dtype)

    return draw_logits()


def image_batches(
    batch: IntLike = st.integers(1, 4),  # noqa: B008
    channels: IntLike = 3,
    height: IntLike = st.integers(1, 16),  # noqa: B008
    width: IntLike = st.integers(1, 16),  # noqa: B008
    *,
    dtype: torch.dtype = torch.float32,
) -> SearchStrategy[torch.Tensor]:
    """Image batches ``(B, C, H, W)`` with values in ``[-1, 1]`` (the AOT-GAN/LaMa range).

    Mostly uniform noise; sometimes 8-bit-quantised images (exact ties) or binary ``±1`` images
    (saturated white/black, the fill value of :func:`scatloss.functional.corrupt`).

    Args:
        batch, channels, height, width: sizes (ints or strategies of ints, all ``>= 1``).
        dtype: a floating dtype.

    Example:
        >>> from hypothesis import given
        >>> @given(image_batches(batch=2, channels=3, height=4, width=6))
        ... def test_range(x):
        ...     assert x.shape == (2, 3, 4, 6) and x.abs().max() <= 1
        >>> test_range()
    """
    b_st = _int_strategy("batch", batch, min_value=1)
    c_st = _int_strategy("channels", channels, min_value=1)
    h_st = _int_strategy("height", height, min_value=1)
    w_st = _int_strategy("width", width, min_value=1)
    _check_dtype("dtype", dtype, _FLOAT_DTYPES)

    @st.composite
    def draw_images(draw: Callable[[SearchStrategy[Any]], Any]) -> torch.Tensor:
        shape = (
            _drawn_int(draw, "batch", b_st, 1),
            _drawn_int(draw, "channels", c_st, 1),
            _drawn_int(draw, "height", h_st, 1),
            _drawn_int(draw, "width", w_st, 1),
        )
        style = draw(st.sampled_from(("uniform", "quantised", "binary")))
        g = _generator(draw(_SEEDS))
        u = torch.rand(shape, generator=g, dtype=torch.float64)
        if style == "quantised":
            u = torch.round(u * 255.0) / 255.0
        elif style == "binary":
            u = (u < 0.5).to(torch.float64)
        return (u * 2.0 - 1.0).to(dtype)

    return draw_images()


def feature_lists(
    batch: IntLike = st.integers(1, 4),  # noqa: B008
    n_layers: IntLike = st.integers(1, 4),  # noqa: B008
    *,
    channels: IntLike = st.integers(1, 4),  # noqa: B008
    height: IntLike = st.integers(1, 6),  # noqa: B008
    width: IntLike = st.integers(1, 6),  # noqa: B008
    dtype: torch.dtype = torch.float32,
) -> SearchStrategy[tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]]:
    """``(anchor_feats, positive_feats, negative_feats)``: three lists of ``N`` per-layer feature maps.

    Layer ``i`` is ``(B, C_i, H_i, W_i)`` with its own drawn sizes; the three lists share every
    layer's shape (as features of the composite, the ground truth and the corrupted image taken
    from the same discriminator layers would). Values are standard normal.

    Args:
        batch: ``B`` (int or strategy, ``>= 1``).
        n_layers: ``N`` (int or strategy, ``>= 1``).
        channels, height, width: per-layer sizes, drawn independently for each layer.
        dtype: a floating dtype.

    Example:
        >>> from hypothesis import given
        >>> @given(feature_lists(batch=2, n_layers=3))
        ... def test_shapes(feats):
        ...     anchor, positive, negative = feats
        ...     assert len(anchor) == 3 and all(a.shape == n.shape for a, n in zip(anchor, negative))
        >>> test_shapes()
    """
    b_st = _int_strategy("batch", batch, min_value=1)
    n_st = _int_strategy("n_layers", n_layers, min_value=1)
    c_st = _int_strategy("channels", channels, min_value=1)
    h_st = _int_strategy("height", height, min_value=1)
    w_st = _int_strategy("width", width, min_value=1)
    _check_dtype("dtype", dtype, _FLOAT_DTYPES)

    @st.composite
    def draw_feats(
        draw: Callable[[SearchStrategy[Any]], Any],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        b = _drawn_int(draw, "batch", b_st, 1)
        n = _drawn_int(draw, "n_layers", n_st, 1)
        shapes = [
            (
                b,
                _drawn_int(draw, "channels", c_st, 1),
                _drawn_int(draw, "height", h_st, 1),
                _drawn_int(draw, "width", w_st, 1),
            )
            for _ in range(n)
        ]
        g = _generator(draw(_SEEDS))
        triple: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] = ([], [], [])
        for shape in shapes:
            for role in triple:
                role.append(torch.randn(shape, generator=g, dtype=torch.float64).to(dtype))
        return triple

    return draw_feats()


def contrastive_embeddings(
    batch: IntLike = st.integers(1, 4),  # noqa: B008
    n_negatives: IntLike = st.integers(1, 8),  # noqa: B008
    dim: IntLike = st.integers(1, 16),  # noqa: B008
    *,
    dtype: torch.dtype = torch.float32,
) -> SearchStrategy[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(anchor (B, D), positive (B, D), negatives (B, M, D))`` standard-normal embeddings for InfoNCE (Eq. 4).

    Args:
        batch, n_negatives, dim: ``B``, ``M``, ``D`` (ints or strategies of ints, all ``>= 1``).
        dtype: a floating dtype.

    Example:
        >>> from hypothesis import given
        >>> @given(contrastive_embeddings(batch=2, n_negatives=8, dim=4))
        ... def test_shapes(emb):
        ...     assert [tuple(t.shape) for t in emb] == [(2, 4), (2, 4), (2, 8, 4)]
        >>> test_shapes()
    """
    b_st = _int_strategy("batch", batch, min_value=1)
    m_st = _int_strategy("n_negatives", n_negatives, min_value=1)
    d_st = _int_strategy("dim", dim, min_value=1)
    _check_dtype("dtype", dtype, _FLOAT_DTYPES)

    @st.composite
    def draw_embeddings(draw: Callable[[SearchStrategy[Any]], Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = _drawn_int(draw, "batch", b_st, 1)
        m = _drawn_int(draw, "n_negatives", m_st, 1)
        d = _drawn_int(draw, "dim", d_st, 1)
        g = _generator(draw(_SEEDS))
        a = torch.randn(b, d, generator=g, dtype=torch.float64)
        p = torch.randn(b, d, generator=g, dtype=torch.float64)
        n = torch.randn(b, m, d, generator=g, dtype=torch.float64)
        return a.to(dtype), p.to(dtype), n.to(dtype)

    return draw_embeddings()


# ----------------------------------------------------------------------------------------------------------------------
# property checks
# ----------------------------------------------------------------------------------------------------------------------


def _tensors_in(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a tensor / (nested) sequence / mapping, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensors_in(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors_in(v)]
    return []


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def _not_finite(t: torch.Tensor) -> str:
    bad = ~torch.isfinite(t)
    return f"{int(bad.sum())} of {t.numel()} values are NaN/Inf (e.g. {t[bad].flatten()[:3].tolist()})"


def check_finite_on_degenerate_masks(
    loss_fn: Callable[..., torch.Tensor],
    *shapes: Sequence[int],
    hole_size: tuple[int, int] | None = None,
    dtype: torch.dtype = torch.float32,
    scale: float = 1.0,
    extreme: bool = True,
    seed: int = 0,
) -> None:
    """Check that ``loss_fn(*inputs, hole)`` and its input gradients are finite on degenerate masks.

    Cases: a hole-free mask, an all-hole mask, a single hole pixel, a single known pixel (each as a
    float and as a bool mask), the same with a batch of 1, and (``extreme=True``) inputs of
    ``±EXTREME_LOGIT`` with a half-hole mask. Inputs are standard normal times ``scale``, of ``dtype``,
    with ``requires_grad=True``; the gradient of ``loss.sum()`` with respect to every input must be
    finite too (inputs the loss does not use are skipped).

    Args:
        loss_fn: called as ``loss_fn(*inputs, hole)``; returns a tensor (any shape).
        *shapes: one shape per input, each ``(B, ...)`` with the same ``B`` (e.g. logits ``(B, 1, h, w)``
            or images ``(B, C, H, W)``).
        hole_size: the mask's ``(H, W)``; default the spatial size of the first input.
        dtype: dtype of the inputs.
        scale: standard deviation of the inputs.
        extreme: also try ``±1e4`` inputs.
        seed: seed of the inputs and of the half-hole mask.

    Raises:
        AssertionError: naming the first case whose loss or gradient is not finite.
        ValueError: no shape given, or shapes with different batch sizes.

    Example:
        >>> import scatloss.functional as SF
        >>> check_finite_on_degenerate_masks(
        ...     lambda z, h: SF.scat_generator_loss(z, h, kind="bce"), (2, 1, 7, 11), hole_size=(14, 22))
    """
    if not shapes:
        raise ValueError("shapes: expected at least one input shape (B, ...), got none")
    shapes_t = [tuple(int(s) for s in shape) for shape in shapes]
    if any(len(s) < 1 for s in shapes_t) or len({s[0] for s in shapes_t}) != 1:
        raise ValueError(f"shapes: expected (B, ...) shapes sharing B, got {shapes_t}")
    if hole_size is None:
        if len(shapes_t[0]) < 3:
            raise ValueError(f"hole_size: expected (H, W) when the first shape has no spatial size, got {shapes_t[0]}")
        hole_size = (shapes_t[0][-2], shapes_t[0][-1])
    hh, hw = int(hole_size[0]), int(hole_size[1])
    g = _generator(seed)

    def masks(b: int) -> dict[str, torch.Tensor]:
        out = {
            "hole-free": torch.zeros(b, 1, hh, hw),
            "all-hole": torch.ones(b, 1, hh, hw),
            "one hole pixel": torch.zeros(b, 1, hh, hw),
            "one known pixel": torch.ones(b, 1, hh, hw),
        }
        out["one hole pixel"][:, :, 0, 0] = 1.0
        out["one known pixel"][:, :, -1, -1] = 0.0
        return out

    cases: list[tuple[str, list[torch.Tensor], torch.Tensor]] = []
    for b in sorted({shapes_t[0][0], 1}, reverse=True):
        inputs = [torch.randn((b, *s[1:]), generator=g, dtype=torch.float64) * scale for s in shapes_t]
        for name, m in masks(b).items():
            for mdt in (torch.float32, torch.bool):
                cases.append((f"{name} mask ({mdt}), batch of {b}", inputs, m.to(mdt)))
        if extreme:
            signs = [torch.where(torch.rand(x.shape, generator=g) < 0.5, -1.0, 1.0).double() for x in inputs]
            half = (torch.rand(b, 1, hh, hw, generator=g) < 0.5).float()
            cases.append(
                (f"±{EXTREME_LOGIT:g} inputs, half-hole mask, batch of {b}", [EXTREME_LOGIT * s for s in signs], half)
            )

    for name, inputs, hole in cases:
        xs = [x.to(dtype).requires_grad_(True) for x in inputs]
        loss = loss_fn(*xs, hole)
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"loss_fn: expected it to return a tensor, got {type(loss).__name__}")
        if not torch.isfinite(loss).all():
            raise AssertionError(f"loss not finite for {name}: {_not_finite(loss.detach())}")
        if loss.requires_grad:
            grads = torch.autograd.grad(loss.sum(), xs, allow_unused=True)
            for i, grad in enumerate(grads):
                if grad is not None and not torch.isfinite(grad).all():
                    raise AssertionError(f"gradient w.r.t. input {i} not finite for {name}: {_not_finite(grad)}")


def _permute(obj: Any, perm: torch.Tensor, batch_dim: int, batch: int) -> Any:
    def apply(t: torch.Tensor) -> torch.Tensor:
        if t.dim() <= batch_dim or t.shape[batch_dim] != batch:
            raise ValueError(
                f"batched_tensors: expected every tensor to have size {batch} along batch_dim={batch_dim}, "
                f"got shape {tuple(t.shape)}"
            )
        return t.index_select(batch_dim, perm.to(t.device))

    return _map_tensors(obj, apply)


def check_batch_permutation_invariance(
    fn: Callable[..., Any],
    *batched_tensors: Any,
    batch_dim: int = 0,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    equivariant: bool | None = None,
    seed: int = 0,
) -> None:
    """Check that permuting the batch of every input leaves ``fn``'s result unchanged.

    The inputs are permuted together (the reversal, a cyclic shift and a random permutation). A
    scalar (0-d) result must stay the same; a result with the batch along ``batch_dim`` (e.g.
    ``reduction="none"``) must come out permuted the same way (equivariance). Tensors may be nested in
    lists/tuples (per-layer feature lists) and results may be dicts or sequences of tensors.

    Args:
        fn: called as ``fn(*batched_tensors)``; bind options with :func:`functools.partial` or a lambda.
        *batched_tensors: tensors (or sequences of tensors) sharing the batch size ``B >= 2`` along ``batch_dim``.
        batch_dim: the batch dimension.
        atol, rtol: tolerances for :func:`torch.testing.assert_close`.
        equivariant: ``True``/``False`` forces how non-scalar results are compared; ``None`` (default)
            treats 0-d results as invariant and others as batched along ``batch_dim``.
        seed: seed of the random permutation.

    Raises:
        AssertionError: a permutation changes the result.
        ValueError: no tensors, or fewer than 2 samples (no permutation to test).

    Example:
        >>> import torch, scatloss.functional as SF
        >>> z, hole = torch.randn(4, 1, 7, 11), (torch.rand(4, 1, 14, 22) > 0.5).float()
        >>> check_batch_permutation_invariance(SF.scat_generator_loss, z, hole)
    """
    tensors = _tensors_in(batched_tensors)
    if not tensors:
        raise ValueError("batched_tensors: expected at least one tensor, got none")
    first = tensors[0]
    if first.dim() <= batch_dim:
        raise ValueError(f"batched_tensors: expected a batch dimension {batch_dim}, got shape {tuple(first.shape)}")
    b = first.shape[batch_dim]
    if b < 2:
        raise ValueError(f"batched_tensors: expected a batch of at least 2 to permute, got {b}")
    _permute(batched_tensors, torch.arange(b), batch_dim, b)  # every tensor must carry the batch
    g = _generator(seed)
    perms = {
        "reversed": torch.arange(b - 1, -1, -1),
        "cyclic shift": torch.roll(torch.arange(b), 1),
        "random": torch.randperm(b, generator=g),
    }
    with torch.no_grad():
        expected = fn(*batched_tensors)
        for name, perm in perms.items():
            got = fn(*_permute(batched_tensors, perm, batch_dim, b))
            exp_t, got_t = _tensors_in(expected), _tensors_in(got)
            if len(exp_t) != len(got_t):
                raise AssertionError(f"{name} permutation {perm.tolist()}: fn returned a different structure")
            for k, (e, r) in enumerate(zip(exp_t, got_t, strict=True)):
                batched = e.dim() > batch_dim and e.shape[batch_dim] == b if equivariant is None else equivariant
                want = e.index_select(batch_dim, perm.to(e.device)) if batched and e.dim() > 0 else e
                try:
                    torch.testing.assert_close(r, want, atol=atol, rtol=rtol)
                except AssertionError as err:
                    what = "permuted like the batch" if batched else "unchanged"
                    raise AssertionError(
                        f"result {k} of fn is not {what} under the {name} batch permutation {perm.tolist()}: {err}"
                    ) from None


def check_module_matches_functional(
    module: Callable[..., Any],
    fn: Callable[..., Any],
    *args: Any,
    atol: float = 0.0,
    rtol: float = 0.0,
    **kwargs: Any,
) -> None:
    """Check that ``module(*args)`` equals ``fn(*args, **kwargs)``, values and input gradients.

    The module twin of a functional loss should hold configuration only: with the same options
    passed to the function as ``kwargs`` both must agree (exactly, by default). Gradients are compared
    for every tensor in ``args`` that requires grad. Results may be tensors, dicts or sequences.

    Args:
        module: an ``nn.Module`` or any bound method of one (e.g. ``SCATLoss().segmenter``).
        fn: the functional twin.
        *args: positional inputs for both.
        atol, rtol: tolerances (exact match by default).
        **kwargs: options for ``fn`` only (the module carries its own).

    Raises:
        AssertionError: values or gradients differ.

    Example:
        >>> import torch, scatloss, scatloss.functional as SF
        >>> z, hole = torch.randn(2, 1, 4, 4, requires_grad=True), torch.ones(2, 1, 8, 8)
        >>> check_module_matches_functional(scatloss.SCATLoss(region="all"), SF.scat_generator_loss, z, hole,
        ...                                 region="all")
    """
    leaves = [t for t in _tensors_in(args) if t.requires_grad]
    results = []
    for label, call in (("module", lambda: module(*args)), ("functional", lambda: fn(*args, **kwargs))):
        out = call()
        outs = _tensors_in(out)
        grads: tuple[torch.Tensor | None, ...] = (None,) * len(leaves)
        differentiable = [o.sum() for o in outs if o.requires_grad]
        if leaves and differentiable:
            total = differentiable[0]
            for part in differentiable[1:]:
                total = total + part  # dtypes may differ between outputs: add, don't stack
            grads = torch.autograd.grad(total, leaves, allow_unused=True)
        results.append((label, outs, grads, out))
    (_, m_outs, m_grads, m_raw), (_, f_outs, f_grads, f_raw) = results
    if len(m_outs) != len(f_outs) or type(m_raw) is not type(f_raw):
        raise AssertionError(
            f"module returned {type(m_raw).__name__} with {len(m_outs)} tensors, "
            f"functional returned {type(f_raw).__name__} with {len(f_outs)}"
        )
    if isinstance(m_raw, Mapping) and list(m_raw) != list(f_raw):
        raise AssertionError(f"module returned keys {list(m_raw)}, functional returned keys {list(f_raw)}")
    for k, (m, f) in enumerate(zip(m_outs, f_outs, strict=True)):
        try:
            torch.testing.assert_close(m.detach(), f.detach(), atol=atol, rtol=rtol)
        except AssertionError as err:
            raise AssertionError(f"module and functional differ in result {k}: {err}") from None
    for k, (mg, fg) in enumerate(zip(m_grads, f_grads, strict=True)):
        if (mg is None) != (fg is None):
            raise AssertionError(f"input {k} receives a gradient from only one of module and functional")
        if mg is not None and fg is not None:
            try:
                torch.testing.assert_close(mg, fg, atol=atol, rtol=rtol)
            except AssertionError as err:
                raise AssertionError(f"module and functional gradients differ for input {k}: {err}") from None


Distance = Literal["auto", "cosine", "l1", "l2"] | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _as_list(x: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else list(x)


def _like(a: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``a`` broadcast against ``other``: ``(B, D)`` against ``(B, M, D)`` negatives gets a new axis 1."""
    return a.unsqueeze(1) if other.dim() == a.dim() + 1 else a


def _distances(
    anchor: list[torch.Tensor], other: list[torch.Tensor], distance: Distance, negatives_axis: bool
) -> torch.Tensor:
    """Per-item distances between the anchor and ``other``, flattened and concatenated over layers."""
    out = []
    for a, o in zip(anchor, other, strict=True):
        a_b = _like(a, o)
        if callable(distance):
            d = distance(a_b.expand_as(o), o)
        elif distance == "cosine":
            d = 1.0 - torch.nn.functional.cosine_similarity(a_b, o, dim=-1)
        elif distance == "l2":
            d = (a_b - o).square().sum(dim=-1).sqrt()
        else:  # l1: mean absolute difference per sample (per negative)
            keep = 2 if negatives_axis and o.dim() == a.dim() + 1 else 1
            d = (a_b - o).abs().flatten(keep).mean(-1)
        out.append(d.reshape(-1))
    return torch.cat(out)


def check_contrastive_gradient_direction(
    loss_fn: Callable[[Any, Any, Any], torch.Tensor],
    anchor: torch.Tensor | Sequence[torch.Tensor],
    positive: torch.Tensor | Sequence[torch.Tensor],
    negative: torch.Tensor | Sequence[torch.Tensor],
    *,
    distance: Distance = "auto",
    step: float = 1e-3,
    strict: bool = False,
) -> None:
    """Check that a contrastive loss pulls the anchor towards the positive and pushes it from the negatives.

    ``loss_fn(anchor, positive, negative)`` is a scalar contrastive loss: InfoNCE-style (``anchor``
    ``(B, D)``, ``positive`` ``(B, D)``, ``negative`` ``(B, M, D)``) or ratio-style over feature maps
    (tensors or per-layer lists of equal shapes, as Eq. 3). The check asserts, in this order:

    1. **descent**: the anchor gradient is finite and non-zero, and a small step ``anchor - eta * grad``
       (``eta`` = ``step`` times ``|anchor| / |grad|``) lowers the loss;
    2. **pull**: moving the positive a little towards the anchor lowers the loss;
    3. **push**: moving the negatives a little towards the anchor raises the loss;
    4. **direction**: the gradient step brings some anchor closer to its positive or farther from at
       least one negative (the step never only approaches negatives and leaves positives);
    5. with ``strict=True``: the gradient step brings the anchors closer to the positives (the summed
       distance decreases).

    Why 5 is optional: with arbitrary inputs the push can outweigh the pull (a negative lying between
    the anchor and the positive makes the anchor back away from both), so "closer to the positive"
    is a theorem only when the anchor lies between the positive and the negatives. A loss with its
    sign flipped fails 2 and 3. Use float64 and inputs where the loss is not saturated (``0 < loss``
    and the positive differs from the anchor).

    Args:
        loss_fn: called as ``loss_fn(anchor, positive, negative)``; returns a scalar.
        anchor, positive, negative: tensors or per-layer sequences of tensors (not modified).
        distance: for 4 and 5: ``"cosine"``, ``"l1"`` (mean absolute difference per sample), ``"l2"``
            or a callable ``(anchor, other) -> per-item distances`` (anchor already broadcast to
            ``other``'s shape); ``"auto"`` = cosine for ``(B, D)`` anchors with ``(B, M, D)`` negatives,
            L1 otherwise.
        step: relative size of the moves.
        strict: also require 5.

    Raises:
        AssertionError: naming the first property that fails, with the numbers.

    Example:
        >>> import torch, scatloss.functional as SF
        >>> a, p, n = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8).double(), torch.randn(4, 3, 8).double()
        >>> check_contrastive_gradient_direction(SF.semantic_contrastive_loss, a, p, n)
    """
    is_tensor = isinstance(anchor, torch.Tensor)
    a_l = [t.detach() for t in _as_list(anchor)]
    p_l = [t.detach() for t in _as_list(positive)]
    n_l = [t.detach() for t in _as_list(negative)]
    if not (len(a_l) == len(p_l) == len(n_l)) or not a_l:
        raise ValueError(
            f"anchor, positive, negative: expected the same non-zero number of tensors, got {len(a_l)}, "
            f"{len(p_l)}, {len(n_l)}"
        )
    if distance == "auto":
        infonce = all(a.dim() == 2 and n.dim() == 3 for a, n in zip(a_l, n_l, strict=True))
        distance = "cosine" if infonce else "l1"
    if not callable(distance) and distance not in ("cosine", "l1", "l2"):
        raise ValueError(f"distance: expected 'auto', 'cosine', 'l1', 'l2' or a callable, got {distance!r}")

    def pack(xs: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        return xs[0] if is_tensor else xs

    def loss_at(a: list[torch.Tensor], p: list[torch.Tensor], n: list[torch.Tensor]) -> torch.Tensor:
        out = loss_fn(pack(a), pack(p), pack(n))
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise TypeError(f"loss_fn: expected a scalar tensor, got {type(out).__name__} {getattr(out, 'shape', '')}")
        return out.reshape(())

    a_var = [a.clone().requires_grad_(True) for a in a_l]
    loss0 = loss_at(a_var, p_l, n_l)
    grads = torch.autograd.grad(loss0, a_var, allow_unused=True)
    grads_l = [torch.zeros_like(a) if gr is None else gr for a, gr in zip(a_l, grads, strict=True)]
    loss0_v = float(loss0.detach())
    g_norm = math.sqrt(sum(float(gr.double().square().sum()) for gr in grads_l))
    if not math.isfinite(g_norm) or g_norm == 0.0:
        raise AssertionError(f"descent: the anchor gradient is {'not finite' if g_norm else 'zero'} (loss {loss0_v:g})")
    a_norm = math.sqrt(sum(float(a.double().square().sum()) for a in a_l)) or 1.0
    eta = step * a_norm / g_norm
    with torch.no_grad():
        a_new = [a - eta * gr for a, gr in zip(a_l, grads_l, strict=True)]
        loss_step = float(loss_at(a_new, p_l, n_l))
        if not loss_step < loss0_v:
            raise AssertionError(
                f"descent: a gradient step on the anchor (eta={eta:.3g}) did not lower the loss: "
                f"{loss0_v:.10g} -> {loss_step:.10g}"
            )
        p_near = [p + step * (_like(a, p) - p) for a, p in zip(a_l, p_l, strict=True)]
        loss_pull = float(loss_at(a_l, p_near, n_l))
        if not loss_pull < loss0_v:
            raise AssertionError(
                "pull: moving the positive towards the anchor did not lower the loss: "
                f"{loss0_v:.10g} -> {loss_pull:.10g}"
            )
        n_near = [n + step * (_like(a, n) - n) for a, n in zip(a_l, n_l, strict=True)]
        loss_push = float(loss_at(a_l, p_l, n_near))
        if not loss_push > loss0_v:
            raise AssertionError(
                "push: moving the negatives towards the anchor did not raise the loss: "
                f"{loss0_v:.10g} -> {loss_push:.10g}"
            )
        d_pos0 = _distances(a_l, p_l, distance, False)
        d_pos1 = _distances(a_new, p_l, distance, False)
        d_neg0 = _distances(a_l, n_l, distance, True)
        d_neg1 = _distances(a_new, n_l, distance, True)
        closer = bool((d_pos1 < d_pos0).any())
        farther = bool((d_neg1 > d_neg0).any())
        if not (closer or farther):
            raise AssertionError(
                "direction: the gradient step moved the anchor no closer to any positive "
                f"(distances {d_pos0.tolist()} -> {d_pos1.tolist()}) and no farther from any negative "
                f"(largest change {float((d_neg1 - d_neg0).max()):.3g})"
            )
        if strict and not bool(d_pos1.sum() < d_pos0.sum()):
            raise AssertionError(
                "direction (strict): the gradient step did not bring the anchor closer to the positive: "
                f"total distance {float(d_pos0.sum()):.10g} -> {float(d_pos1.sum()):.10g}"
            )
