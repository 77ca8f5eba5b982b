"""Inpainting metrics per hole-ratio bucket, as in the paper's Table 2 (mean L1, PSNR, SSIM, FID).

:func:`evaluate` runs any generator ``G(corrupted, hole) -> prediction`` on held-out images with fixed,
seeded free-form masks in each hole-ratio bucket (0-20 %, 20-40 %, 40-60 % by default), builds the
composite (prediction in the holes, ground truth elsewhere) and scores it against the ground truth.
:func:`image_metrics` is the per-image scoring step on its own, for masks of your choice.

Segmentation confusion (how well a segmenter finds the generated pixels of a composite, the game SCAT plays):
:func:`hole_detection_metrics` scores a ``P(generated)`` map against the holes (AUROC, average precision, IoU at
a threshold), :func:`segmentation_confusion` runs a segmenter on a generator's composites per hole-ratio bucket,
and :func:`detectability` trains a fresh probe segmenter on a finished generator's composites and scores it on
held-out ones (lower = more seamless fills). AUROC and AP are computed here from ranks in plain torch
(:func:`binary_auroc`, :func:`binary_average_precision`: tied scores count half / form one threshold, exactly as
torchmetrics' ``binary_auroc`` / ``binary_average_precision`` with ``thresholds=None``, which the tests check), so
these functions need neither torchmetrics nor scikit-learn and never return NaN.

torchmetrics is an optional extra (``pip install 'scatloss[examples]'``) used by :func:`evaluate` and
:func:`image_metrics`; it is imported only when one of them is called. FID is computed only from Inception
weights that exist on disk (nothing is ever downloaded); without them the report says
``fid_status = "unavailable: <reason>"``.

Example:
    >>> import torch
    >>> from scatloss.evaluate import evaluate
    >>> images = torch.rand(4, 3, 32, 32) * 2 - 1          # held-out images in [-1, 1]
    >>> report = evaluate(lambda corrupted, hole: corrupted, images, seed=0)
    >>> [b.count for b in report.buckets]
    [4, 4, 4]
    >>> report.fid_status.startswith("unavailable")
    True
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ._validation import check_choice, check_float_tensor, check_hole, describe
from .functional import composite, corrupt
from .masks import BUCKETS, _check_buckets, bucket_name, bucket_of, free_form_mask, hole_ratio
from .utils import atomic_write

__all__ = [
    "PSNR_CAP",
    "SSIM_MIN_SIZE",
    "BucketMetrics",
    "ConfusionBucket",
    "ConfusionReport",
    "EvaluationReport",
    "binary_auroc",
    "binary_average_precision",
    "binary_iou",
    "detectability",
    "evaluate",
    "hole_detection_metrics",
    "image_metrics",
    "segmentation_confusion",
    "segmenter_p_generated",
]

PSNR_CAP: float = 100.0
"""PSNR (dB) reported for a sample whose PSNR is infinite (MSE = 0) or above this value.

A perfect reconstruction has MSE = 0 and an infinite PSNR, which would turn every mean into ``inf``. Such
samples are reported at ``PSNR_CAP`` and counted in :attr:`BucketMetrics.psnr_capped`, so a mean that
contains capped samples is recognisable. 100 dB is an MSE of 1e-10 on a [0, 1] scale: far below 8-bit
quantisation (about 58.9 dB for one grey level of error on every pixel), so no real result is capped.
"""

SSIM_MIN_SIZE: int = 11
"""Smallest image side for SSIM (torchmetrics' 11x11 Gaussian window, sigma 1.5)."""

_TORCHMETRICS_MISSING = "scatloss.evaluate needs torchmetrics: pip install 'scatloss[examples]'"
_RANGE_TOLERANCE = 1e-3  # images may exceed [-1, 1] by this much (rounding) before they are rejected
_FID_OK = "ok"


def _require_torchmetrics() -> Any:
    """Import ``torchmetrics.functional.image`` lazily; raise a helpful ImportError when it is missing."""
    try:
        return importlib.import_module("torchmetrics.functional.image")
    except ImportError as error:
        raise ImportError(_TORCHMETRICS_MISSING) from error


# ----------------------------------------------------------------------------------------------------------------------
# Per-image metrics
# ----------------------------------------------------------------------------------------------------------------------


def image_metrics(output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean L1, PSNR and SSIM of each image of ``output`` against ``target``.

    Both are mapped from ``[-1, 1]`` to ``[0, 1]`` (``(x + 1) / 2``) and clipped to ``[0, 1]`` (as writing an
    image file would), then scored with ``data_range = 1`` (L1 and PSNR in float64, or float32 on devices
    without float64; SSIM in float32, about ten times faster on CPUs and within about 1e-4 of float64):

    - ``l1``: ``mean |output - target|`` over channels and pixels (the paper's "mean l1 error");
    - ``psnr``: ``torchmetrics.functional.image.peak_signal_noise_ratio(..., data_range=1.0, reduction="none",
      dim=(1, 2, 3))``, i.e. ``10 log10(1 / MSE)`` per image, capped at :data:`PSNR_CAP`;
    - ``ssim``: ``torchmetrics.functional.image.structural_similarity_index_measure(..., data_range=1.0,
      reduction="none")``: Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, reflect padding, mean over
      channels and all pixels;
    - ``psnr_capped``: bool, True where the PSNR was infinite or above the cap and was replaced by the cap.

    Args:
        output: ``(B, C, H, W)`` floating images in ``[-1, 1]`` (typically the composite).
        target: ``(B, C, H, W)`` ground truth in ``[-1, 1]``; ``H, W >= SSIM_MIN_SIZE``.

    Returns:
        A dict of ``(B,)`` tensors on ``output``'s device: ``l1``, ``psnr``, ``ssim`` (float64, or float32 on MPS)
        and ``psnr_capped`` (bool).

    Raises:
        ImportError: torchmetrics is not installed.
        TypeError: an input is not a floating-point tensor.
        ValueError: shapes differ or are not 4-D, images are smaller than ``SSIM_MIN_SIZE``, or a value is not
            finite.
    """
    tm = _require_torchmetrics()
    check_float_tensor("output", output, ndim=4)
    check_float_tensor("target", target, ndim=4)
    if output.shape != target.shape:
        raise ValueError(f"output: expected the shape of target {tuple(target.shape)}, got {tuple(output.shape)}")
    if min(output.shape[-2:]) < SSIM_MIN_SIZE:
        raise ValueError(
            f"output: expected images of at least {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} pixels (SSIM window), "
            f"got spatial size {tuple(output.shape[-2:])}"
        )
    for name, x in (("output", output), ("target", target)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: expected finite values, got NaN or inf in {_count_nonfinite(x)} image(s)")
    dtype = _metric_dtype(output.device)
    pred = ((output.detach().to(dtype) + 1.0) / 2.0).clamp(0.0, 1.0)
    true = ((target.detach().to(device=output.device, dtype=dtype) + 1.0) / 2.0).clamp(0.0, 1.0)
    l1 = (pred - true).abs().mean(dim=(1, 2, 3))
    psnr = tm.peak_signal_noise_ratio(pred, true, data_range=1.0, reduction="none", dim=(1, 2, 3)).to(dtype)
    capped = ~torch.isfinite(psnr) | (psnr > PSNR_CAP)  # +inf exactly when MSE == 0
    psnr = torch.where(capped, torch.full_like(psnr, PSNR_CAP), psnr)
    # SSIM in float32: CPU convolutions are ~10x slower in float64; float32 is within ~1e-4 of it (often 1e-6).
    ssim = tm.structural_similarity_index_measure(pred.float(), true.float(), data_range=1.0, reduction="none").to(
        dtype
    )
    return {"l1": l1, "psnr": psnr, "ssim": ssim.reshape(-1), "psnr_capped": capped}


def _metric_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _count_nonfinite(x: torch.Tensor) -> int:
    return int((~torch.isfinite(x)).flatten(1).any(dim=1).sum())


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BucketMetrics:
    """Metrics of one hole-ratio bucket (one column of the paper's Table 2).

    Attributes:
        name: display name, e.g. ``"20-40%"``.
        bounds: ``(lo, hi)`` hole-ratio bounds; a sample belongs here when ``bucket_of`` of its measured ratio
            points at this bucket.
        count: number of (image, mask) samples scored in this bucket.
        l1: mean over samples of the per-image mean L1 error on ``[0, 1]`` (lower is better); None when empty.
        psnr: mean PSNR in dB, capped samples counted at :data:`PSNR_CAP` (higher is better); None when empty.
        ssim: mean SSIM (higher is better); None when empty.
        psnr_capped: how many samples had an infinite PSNR (MSE = 0) or one above the cap.
        fid: FID between the composites and their ground truths of this bucket (lower is better); None when
            unavailable (see :attr:`EvaluationReport.fid_status`) or when the bucket has fewer than 2 samples.
    """

    name: str
    bounds: tuple[float, float]
    count: int
    l1: float | None
    psnr: float | None
    ssim: float | None
    psnr_capped: int = 0
    fid: float | None = None


@dataclass(frozen=True)
class EvaluationReport:
    """Result of :func:`evaluate`: one :class:`BucketMetrics` per bucket plus the run's configuration.

    Attributes:
        buckets: per-bucket metrics, in the order of the ``buckets`` argument.
        n_images: number of ground-truth images.
        masks_per_image: masks drawn per image and bucket.
        seed: the mask seed.
        fill: value written into the holes of the generator's input.
        psnr_cap: the PSNR cap in dB (:data:`PSNR_CAP`).
        out_of_bucket: samples whose measured hole ratio fell in no bucket (not scored).
        fid_status: ``"ok"``, or ``"unavailable: <reason>"`` (then every ``fid`` is None).
        scatloss_version: version of scatloss that produced the report.
    """

    buckets: tuple[BucketMetrics, ...]
    n_images: int
    masks_per_image: int
    seed: int
    fill: float = 1.0
    psnr_cap: float = PSNR_CAP
    out_of_bucket: int = 0
    fid_status: str = "unavailable: not computed"
    scatloss_version: str = field(default_factory=lambda: _version())

    def __getitem__(self, name: str) -> BucketMetrics:
        """The bucket called ``name`` (e.g. ``report["20-40%"]``)."""
        for bucket in self.buckets:
            if bucket.name == name:
                return bucket
        raise KeyError(f"name: expected one of {[b.name for b in self.buckets]}, got {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (no inf or NaN: empty metrics are None, infinite PSNRs are capped)."""
        out = asdict(self)
        out["buckets"] = [{**asdict(b), "bounds": list(b.bounds)} for b in self.buckets]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        """Inverse of :meth:`to_dict`.

        Raises:
            TypeError: ``data`` is not a dict.
            ValueError: a required key is missing.
        """
        if not isinstance(data, dict):
            raise TypeError(f"data: expected a dict from EvaluationReport.to_dict(), got {describe(data)}")
        missing = [k for k in ("buckets", "n_images", "masks_per_image", "seed") if k not in data]
        if missing:
            raise ValueError(f"data: expected keys buckets, n_images, masks_per_image, seed, got no {missing}")
        buckets = tuple(BucketMetrics(**{**b, "bounds": tuple(b["bounds"])}) for b in data["buckets"])
        return cls(**{**data, "buckets": buckets})

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text (strict JSON: ``allow_nan=False``)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as JSON to ``path`` atomically (temporary file in the same folder, then rename).

        A reader never sees a half-written file, and an interrupted write leaves any previous file intact.
        Missing parent folders are created. Returns the path written.
        """
        text = self.to_json() + "\n"
        return atomic_write(path, lambda handle: handle.write(text), binary=False)

    @classmethod
    def load_json(cls, path: str | os.PathLike[str]) -> EvaluationReport:
        """Read a report written by :meth:`save_json`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_markdown(self) -> str:
        """A Markdown table laid out like the paper's Table 2: rows are metrics, columns are buckets.

        Mean L1 has 4 decimals, PSNR 2, SSIM 3, FID 2; an empty bucket shows "–". Footnotes give the
        number of capped PSNR values and the FID status.
        """
        names = [b.name for b in self.buckets]
        lines = [
            "| Metric | " + " | ".join(names) + " |",
            "|:--|" + "--:|" * len(names),
        ]
        any_capped = any(b.psnr_capped for b in self.buckets)

        def row(label: str, values: Iterable[str]) -> str:
            return f"| {label} | " + " | ".join(values) + " |"

        lines.append(row("Mean L1 ↓", (_fmt(b.l1, 4) for b in self.buckets)))
        lines.append(
            row(
                "PSNR (dB) ↑",
                (_fmt(b.psnr, 2) + ("*" if b.psnr_capped else "") for b in self.buckets),
            )
        )
        lines.append(row("SSIM ↑", (_fmt(b.ssim, 3) for b in self.buckets)))
        lines.append(row("FID ↓", (_fmt(b.fid, 2) for b in self.buckets)))
        lines.append(row("Samples", (str(b.count) for b in self.buckets)))
        notes = [
            f"{self.n_images} images x {self.masks_per_image} mask(s) per bucket, seed {self.seed}, "
            f"holes filled with {self.fill:g}; metrics on the composite vs the ground truth in [0, 1]."
        ]
        if any_capped:
            capped = ", ".join(f"{b.name}: {b.psnr_capped}" for b in self.buckets if b.psnr_capped)
            notes.append(
                f"\\* includes samples with infinite PSNR (MSE = 0) or above the cap, capped at "
                f"{self.psnr_cap:g} dB ({capped})."
            )
        if self.out_of_bucket:
            notes.append(f"{self.out_of_bucket} sample(s) had a hole ratio outside every bucket and were not scored.")
        notes.append(f"FID: {self.fid_status}.")
        return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"

    def __str__(self) -> str:
        return self.to_markdown()


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _version() -> str:
    from . import __version__

    return __version__


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------------


def evaluate(
    generator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor | Iterable[Any],
    *,
    buckets: Sequence[tuple[float, float]] = BUCKETS,
    masks_per_image: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    fid_weights: str | os.PathLike[str] | None = None,
    fill: float = 1.0,
) -> EvaluationReport:
    """Score a generator per hole-ratio bucket with fixed, seeded masks (the paper's Table 2 protocol).

    For every image ``i`` (in iteration order), every bucket ``b`` and every ``k < masks_per_image``, one
    free-form mask is drawn with :func:`scatloss.masks.free_form_mask` from a private generator seeded by
    ``(seed, i, bucket bounds, k)``. The masks therefore do not depend on the global RNG, on ``batch_size``
    or on how ``images`` is batched, and two runs with the same seed score the same (image, mask) pairs.
    Each sample runs ``prediction = generator(corrupt(image, hole, fill), hole)``; the composite
    ``hole * prediction + (1 - hole) * image`` is scored with :func:`image_metrics`. A sample is filed under
    the bucket of its **measured** hole ratio, ``bucket_of(hole_ratio(hole), buckets)`` (free-form masks
    always land in the requested bucket; the measured ratio is what counts); samples in no bucket are counted
    in ``out_of_bucket`` and not scored.

    An ``nn.Module`` generator is put in eval mode for the run and every submodule's previous train/eval
    flag is restored afterwards (also on error); the run is under ``torch.no_grad()``. Pass the module
    itself (not a lambda around it) to get this.

    FID (per bucket, 2048-d Inception pool features of composites vs their ground truths, via torchmetrics'
    ``FrechetInceptionDistance``) is computed only when ``fid_weights`` names an existing file of
    torch-fidelity's Inception weights (``weights-inception-2015-12-05-6726825d.pth``) and torch-fidelity is
    installed. Otherwise every ``fid`` is None and ``fid_status`` says why; nothing is downloaded.

    Args:
        generator: any callable ``G(corrupted, hole) -> prediction`` with ``corrupted`` ``(B, C, H, W)``,
            ``hole`` ``(B, 1, H, W)`` float32 (1 = missing) and a ``(B, C, H, W)`` prediction.
        images: ground truth in ``[-1, 1]``: a ``(N, C, H, W)`` tensor, a map-style dataset / sequence of
            ``(C, H, W)`` or ``(B, C, H, W)`` tensors, or an iterable of them (e.g. a DataLoader). Items
            that are tuples or lists (``(image, label)``) contribute their first element. Sizes may differ
            between items; ``H, W >= SSIM_MIN_SIZE``.
        buckets: ``(lo, hi)`` hole-ratio buckets; default :data:`scatloss.masks.BUCKETS` (0-20-40-60 %).
        masks_per_image: masks per image and bucket (``>= 1``).
        seed: mask seed (a non-negative int).
        batch_size: images per generator call (``>= 1``).
        device: where to run; default: the generator's parameters' device, else the device of an ``images``
            tensor, else the CPU.
        fid_weights: path to local Inception weights for FID, or None (FID unavailable).
        fill: value written into the holes of the generator's input (1.0 as in the released code).

    Returns:
        An :class:`EvaluationReport`.

    Raises:
        ImportError: torchmetrics is not installed.
        TypeError: ``generator`` is not callable, ``images`` is not a tensor or iterable of tensors, or an
            argument has the wrong type.
        ValueError: bad option values, images not 4-D / 3-D, outside ``[-1, 1]`` or smaller than
            ``SSIM_MIN_SIZE``, no images at all, or a generator output of the wrong shape or with NaN/inf;
            ``device`` names a device this machine cannot use (e.g. ``"cuda"`` without CUDA).
    """
    _require_torchmetrics()
    if not callable(generator):
        raise TypeError(f"generator: expected a callable G(corrupted, hole) -> prediction, got {describe(generator)}")
    pairs = _check_buckets("buckets", buckets)
    _check_positive_int("masks_per_image", masks_per_image)
    _check_positive_int("batch_size", batch_size)
    _check_seed_and_fill(seed, fill)
    run_device = _resolve_device(device, generator, images)

    fid_metrics, fid_status = _build_fid(fid_weights, len(pairs), run_device)
    sums = [_Sums() for _ in pairs]
    out_of_bucket = 0
    samples = _Composites(generator, images, pairs, masks_per_image, seed, fill, batch_size, run_device)
    modes = _enter_eval(generator)
    try:
        with torch.no_grad():
            for batch, _, assigned, result in samples:
                metrics = image_metrics(result, batch)
                for index in sorted(set(assigned)):
                    if index < 0:
                        out_of_bucket += assigned.count(index)
                        continue
                    rows = torch.tensor([a == index for a in assigned], device=result.device)
                    sums[index].add(metrics, rows)
                    if fid_metrics is not None:
                        fid_status = _fid_update(fid_metrics[index], batch[rows], result[rows])
                        if fid_status != _FID_OK:
                            fid_metrics = None
    finally:
        _restore_modes(modes)
    n_images = samples.n_images

    fids: list[float | None] = [None] * len(pairs)
    if fid_metrics is not None:
        fids = [_fid_compute(metric) for metric in fid_metrics]
    report_buckets = tuple(
        s.result(bucket_name(pair), pair, fid) for s, pair, fid in zip(sums, pairs, fids, strict=True)
    )
    return EvaluationReport(
        buckets=report_buckets,
        n_images=n_images,
        masks_per_image=masks_per_image,
        seed=seed,
        fill=float(fill),
        psnr_cap=PSNR_CAP,
        out_of_bucket=out_of_bucket,
        fid_status=fid_status,
    )


def _check_seed_and_fill(seed: Any, fill: Any) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"seed: expected a non-negative int, got {describe(seed)}")
    if isinstance(fill, bool) or not isinstance(fill, (int, float)):
        raise TypeError(f"fill: expected a float, got {describe(fill)}")


class _Composites:
    """The samples :func:`evaluate` and :func:`segmentation_confusion` score, in one fixed order.

    Iterating yields ``(batch, hole, assigned, composite)`` for every image batch, bucket and mask draw:
    ``assigned`` is the bucket index of each row (-1 outside every bucket). Image ``i`` of the stream gets the
    masks seeded by ``(seed, i, bucket, k)``, so both functions see the same masks for the same ``seed``.
    After a full pass ``n_images`` is the number of images; a stream without images is a ``ValueError``.
    """

    def __init__(
        self,
        generator: Any,
        images: Any,
        pairs: Sequence[tuple[float, float]],
        masks_per_image: int,
        seed: int,
        fill: float,
        batch_size: int,
        device: torch.device,
    ) -> None:
        self.generator, self.images, self.pairs = generator, images, pairs
        self.masks_per_image, self.seed, self.fill = masks_per_image, seed, float(fill)
        self.batch_size, self.device = batch_size, device
        self.n_images = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor]]:
        self.n_images = 0
        for batch in _batches(self.images, self.batch_size):
            batch = batch.to(self.device)
            n, _, h, w = batch.shape
            indices = range(self.n_images, self.n_images + n)
            for requested in self.pairs:
                for k in range(self.masks_per_image):
                    hole = _fixed_masks(h, w, requested, self.seed, indices, k).to(self.device)
                    assigned = [bucket_of(r, self.pairs) for r in hole_ratio(hole).cpu()]
                    prediction = self.generator(corrupt(batch, hole, self.fill), hole)
                    _check_prediction(prediction, batch)
                    yield batch, hole, assigned, composite(prediction.to(batch.dtype), batch, hole)
            self.n_images += n
        if self.n_images == 0:
            raise ValueError("images: expected at least one image, got none")


class _Sums:
    """Running sums of one bucket (float64 on the host)."""

    def __init__(self) -> None:
        self.count = 0
        self.l1 = 0.0
        self.psnr = 0.0
        self.ssim = 0.0
        self.capped = 0

    def add(self, metrics: dict[str, torch.Tensor], rows: torch.Tensor) -> None:
        self.count += int(rows.sum())
        self.l1 += float(metrics["l1"][rows].double().sum())
        self.psnr += float(metrics["psnr"][rows].double().sum())
        self.ssim += float(metrics["ssim"][rows].double().sum())
        self.capped += int(metrics["psnr_capped"][rows].sum())

    def result(self, name: str, bounds: tuple[float, float], fid: float | None) -> BucketMetrics:
        if self.count == 0:
            return BucketMetrics(name, bounds, 0, None, None, None, 0, fid)
        n = self.count
        return BucketMetrics(name, bounds, n, self.l1 / n, self.psnr / n, self.ssim / n, self.capped, fid)


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name}: expected a positive int, got {describe(value)}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")


def _resolve_device(device: torch.device | str | None, generator: Any, images: Any) -> torch.device:
    if device is not None:
        if not isinstance(device, (torch.device, str)):
            raise TypeError(f"device: expected a torch.device, a string or None, got {describe(device)}")
        try:
            resolved = torch.device(device)
            torch.empty(0, device=resolved)  # torch raises AssertionError for CUDA without a CUDA build
        except (AssertionError, RuntimeError) as error:
            raise ValueError(
                f"device: expected an available device, got {str(device)!r}, which this machine cannot use "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'unavailable'}); "
                "pass device='cpu' or leave device=None"
            ) from None
        return resolved
    if isinstance(generator, nn.Module):
        for tensor in [*generator.parameters(), *generator.buffers()]:
            return tensor.device
    if isinstance(images, torch.Tensor):
        return images.device
    return torch.device("cpu")


def _mask_seed(seed: int, index: int, bucket: tuple[float, float], k: int) -> int:
    """A seed for one (image, bucket, mask) triple: stable across platforms and torch versions.

    The value has 63 bits, but torch's CPU generator (mt19937) seeds from its low 32 bits only, so there are
    2**32 distinct mask streams: two triples can share masks by chance (harmless for the scores; kept as is so
    that reports stay comparable across versions).
    """
    words = [seed, index, round(bucket[0] * 1_000_000), round(bucket[1] * 1_000_000), k]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _fixed_mask(h: int, w: int, bucket: tuple[float, float], seed: int, index: int, k: int) -> torch.Tensor:
    """``(1, h, w)`` mask of image ``index`` in ``bucket``; a local generator, never the global RNG."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(_mask_seed(seed, index, bucket, k))
    return free_form_mask(h, w, bucket=bucket, generator=gen)


def _fixed_masks(h: int, w: int, bucket: tuple[float, float], seed: int, indices: range, k: int) -> torch.Tensor:
    """``(len(indices), 1, h, w)`` masks of the images ``indices`` in ``bucket`` (mask number ``k``)."""
    return torch.stack([_fixed_mask(h, w, bucket, seed, index, k) for index in indices])


def _enter_eval(generator: Any) -> list[tuple[nn.Module, bool]]:
    if not isinstance(generator, nn.Module):
        return []
    modes = [(module, module.training) for module in generator.modules()]
    generator.eval()
    return modes


def _restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training


def _check_prediction(prediction: Any, batch: torch.Tensor) -> None:
    if not isinstance(prediction, torch.Tensor) or not prediction.is_floating_point():
        raise TypeError(f"generator: expected a floating-point tensor as output, got {describe(prediction)}")
    if prediction.shape != batch.shape:
        raise ValueError(
            f"generator: expected an output of the input's shape {tuple(batch.shape)}, got {tuple(prediction.shape)}"
        )
    if not bool(torch.isfinite(prediction).all()):
        raise ValueError(
            f"generator: expected finite outputs, got NaN or inf in {_count_nonfinite(prediction)} image(s)"
        )


def _check_batch(name: str, x: Any) -> torch.Tensor:
    check_float_tensor(name, x, ndim=(3, 4))
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if min(x.shape[-2:]) < SSIM_MIN_SIZE:
        raise ValueError(
            f"{name}: expected images of at least {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} pixels (SSIM window), "
            f"got shape {tuple(x.shape)}"
        )
    if x.numel() > 0:
        lo, hi = float(x.min()), float(x.max())
        if not (lo >= -1.0 - _RANGE_TOLERANCE and hi <= 1.0 + _RANGE_TOLERANCE):  # also catches NaN
            raise ValueError(f"{name}: expected images in [-1, 1], got values in [{lo:g}, {hi:g}]")
    return x


def _items(images: Any) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, tensor-like)`` for each element of ``images``, unpacking ``(image, ...)`` tuples."""
    if isinstance(images, torch.Tensor):
        yield "images", images
        return
    if hasattr(images, "__len__") and hasattr(images, "__getitem__") and not isinstance(images, (str, bytes, dict)):
        source: Iterable[Any] = (images[i] for i in range(len(images)))
    elif isinstance(images, Iterable) and not isinstance(images, (str, bytes, dict)):
        source = images
    else:
        raise TypeError(
            f"images: expected a (N, C, H, W) tensor, a dataset or an iterable of image tensors, got {describe(images)}"
        )
    for i, item in enumerate(source):
        if isinstance(item, (tuple, list)) and item:
            item = item[0]
        yield f"images[{i}]", item


def _batches(images: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Re-batch ``images`` into ``(b, C, H, W)`` tensors with ``b <= batch_size`` and one size per batch."""
    pending: list[torch.Tensor] = []
    count = 0
    for name, item in _items(images):
        x = _check_batch(name, item)
        if pending and pending[0].shape[1:] != x.shape[1:]:
            yield torch.cat(pending)
            pending, count = [], 0
        pending.append(x)
        count += x.shape[0]
        if count >= batch_size:
            stacked = torch.cat(pending)
            for start in range(0, count - count % batch_size, batch_size):
                yield stacked[start : start + batch_size]
            rest = stacked[count - count % batch_size :]
            pending, count = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)
    if count:
        yield torch.cat(pending)


# ---- FID -------------------------------------------------------------------------------------------------------------


def _torch_fidelity_available() -> bool:
    return importlib.util.find_spec("torch_fidelity") is not None


def _load_inception(path: Path) -> nn.Module:
    """torchmetrics' Inception-v3 feature extractor (2048-d pool features) from a local weights file."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
    )


def _build_fid(weights: Any, n_buckets: int, device: torch.device) -> tuple[list[Any] | None, str]:
    """One ``FrechetInceptionDistance`` per bucket sharing one extractor, or ``(None, "unavailable: ...")``."""
    if weights is None:
        return None, (
            "unavailable: no Inception weights given (fid_weights=None); scatloss never downloads weights, "
            "pass the path of a local copy"
        )
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"fid_weights: expected a path (str or os.PathLike) or None, got {describe(weights)}")
    path = Path(weights)
    if not path.is_file():
        return None, f"unavailable: Inception weights file not found: {path}"
    if not _torch_fidelity_available():
        return None, (
            "unavailable: torchmetrics' FrechetInceptionDistance needs torch-fidelity, which is not installed "
            "(pip install torch-fidelity)"
        )
    try:
        extractor = _load_inception(path)
    except Exception as error:  # a wrong or damaged file: report, never fake a number
        return None, f"unavailable: could not load Inception weights from {path}: {type(error).__name__}: {error}"
    return _fid_metrics(extractor, n_buckets, device), _FID_OK


def _fid_metrics(extractor: nn.Module, n_buckets: int, device: torch.device) -> list[Any]:
    from torchmetrics.image.fid import FrechetInceptionDistance

    extractor = extractor.to(device).eval()
    return [FrechetInceptionDistance(feature=extractor, normalize=False).to(device) for _ in range(n_buckets)]


def _fid_update(metric: Any, real: torch.Tensor, fake: torch.Tensor) -> str:
    """Feed one bucket's ground truths and composites as uint8 RGB; returns the FID status."""
    channels = real.shape[1]
    if channels not in (1, 3):
        return f"unavailable: FID needs 1- or 3-channel images, got {channels} channels"
    for images, is_real in ((real, True), (fake, False)):
        x = ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        metric.update(x.expand(-1, 3, -1, -1) if channels == 1 else x, real=is_real)
    return _FID_OK


def _fid_compute(metric: Any) -> float | None:
    if int(metric.real_features_num_samples) < 2 or int(metric.fake_features_num_samples) < 2:
        return None
    value = float(metric.compute())
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------------------------------------------------------
# Segmentation confusion: how well a segmenter finds the generated pixels of a composite
# ----------------------------------------------------------------------------------------------------------------------

SegmenterOutput = Literal["logit_real", "prob_generated"]
"""What a segmenter returns per pixel: a logit of *real* (SCAT's convention: target 1 on known pixels, so
``P(generated) = sigmoid(-logit)``), or a probability of *generated* in ``[0, 1]`` (e.g. AOT-GAN's soft-mask
PatchGAN map)."""


def binary_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Area under the ROC curve of ``scores`` for the positives ``labels == True``, ties counted half.

    Rank-based (Mann-Whitney U with mid-ranks), in float64, torch only:
    ``AUROC = (sum of the positives' mid-ranks - P (P + 1) / 2) / (P N)`` for ``P`` positives and ``N``
    negatives. It equals the probability that a random positive scores above a random negative, a tie counting
    1/2, which is also the trapezoidal area under the ROC curve with tied scores taken as one threshold
    (what torchmetrics' ``binary_auroc`` computes with ``thresholds=None``). A perfect ranking gives 1.0, a
    constant score 0.5, an inverted ranking 0.0.

    Args:
        scores: any shape, floating point, finite (higher = more likely positive).
        labels: the same number of elements, bool (or 0/1 of any dtype).

    Returns:
        The AUROC, or None when there is no positive or no negative (undefined, never NaN).

    Raises:
        TypeError: ``scores`` is not a floating-point tensor.
        ValueError: element counts differ, labels are not 0/1, or a score is NaN or infinite.
    """
    s, y = _check_scores_labels(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = torch.argsort(s)
    sorted_scores = s[order]
    _, counts = torch.unique_consecutive(sorted_scores, return_counts=True)
    ends = torch.cumsum(counts, 0).double()  # 1-based rank of the last element of each tie group
    mid = ends - (counts.double() - 1.0) / 2.0  # mean rank of each tie group
    ranks = torch.repeat_interleave(mid, counts)
    pos_rank_sum = float(ranks[y[order]].sum())
    value = (pos_rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return min(1.0, max(0.0, value))


def binary_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Average precision: ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds, highest first.

    ``P_k`` and ``R_k`` are precision and recall when every element scoring ``>= t_k`` is called positive;
    tied scores form one threshold (as in scikit-learn's ``average_precision_score`` and torchmetrics'
    ``binary_average_precision``). A perfect ranking gives 1.0, a constant score the positive rate
    ``P / (P + N)``.

    Returns:
        The AP in ``[0, 1]``, or None when there is no positive (undefined, never NaN).

    Raises:
        TypeError, ValueError: as :func:`binary_auroc`.
    """
    s, y = _check_scores_labels(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return None
    order = torch.argsort(s, descending=True)
    sorted_scores, sorted_labels = s[order], y[order].double()
    _, counts = torch.unique_consecutive(sorted_scores, return_counts=True)
    last = torch.cumsum(counts, 0) - 1  # index of the last element of each tie group
    tp = torch.cumsum(sorted_labels, 0)[last]
    predicted = (last + 1).double()
    precision = tp / predicted
    recall = tp / n_pos
    previous = torch.cat([recall.new_zeros(1), recall[:-1]])
    return float(((recall - previous) * precision).sum())


def binary_iou(predicted: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Intersection over union of two binary sets: ``|predicted & labels| / |predicted | labels|``.

    Returns None when both are empty (undefined, never NaN).
    """
    p = predicted.reshape(-1).bool()
    y = labels.reshape(-1).bool()
    if p.numel() != y.numel():
        raise ValueError(f"predicted: expected {y.numel()} elements like labels, got {p.numel()}")
    union = int((p | y).sum())
    if union == 0:
        return None
    return int((p & y).sum()) / union


def _check_scores_labels(scores: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    check_float_tensor("scores", scores)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: expected a bool or 0/1 torch.Tensor, got {describe(labels)}")
    if scores.numel() != labels.numel():
        raise ValueError(
            f"labels: expected as many elements as scores ({scores.numel()}, shape {tuple(scores.shape)}), "
            f"got {labels.numel()} (shape {tuple(labels.shape)})"
        )
    s = scores.detach().reshape(-1).double()
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"scores: expected finite values, got {int((~torch.isfinite(s)).sum())} NaN or inf")
    if labels.dtype == torch.bool:
        y = labels.detach().reshape(-1)
    else:
        flat = labels.detach().reshape(-1)
        if flat.numel() and not bool(((flat == 0) | (flat == 1)).all()):
            raise ValueError("labels: expected 0/1 (or bool) labels, got other values")
        y = flat == 1
    return s, y.to(s.device)


def hole_detection_metrics(
    p_generated: torch.Tensor, hole: torch.Tensor, *, threshold: float = 0.5
) -> dict[str, float | int | None]:
    """How well a per-pixel map of ``P(generated)`` finds the holes: AUROC, AP and IoU, pooled over all pixels.

    The positives are the hole pixels (``hole == 1``), the scores ``p_generated``; IoU compares
    ``p_generated >= threshold`` with the holes. Pixels of every image are pooled (micro average), so
    images without holes simply contribute negatives.

    Args:
        p_generated: ``(B, 1, H, W)`` probabilities in ``[0, 1]`` that each pixel was generated.
        hole: ``(B, 1, H, W)`` binary hole mask (1 = missing), float or bool, **the same size** as the map
            (nothing is resampled: resample the map or the mask yourself, as your loss does).
        threshold: decision threshold for the IoU, in ``(0, 1)``.

    Returns:
        ``{"auroc", "ap", "iou", "hole_pixels", "known_pixels"}``; ``auroc`` is None when there is no hole or no
        known pixel, ``ap`` None without holes, ``iou`` None when there is no hole and nothing is called generated.

    Raises:
        TypeError: wrong types.
        ValueError: shapes differ or are not ``(B, 1, H, W)``, the hole mask is not binary, a probability lies
            outside ``[0, 1]`` or is NaN, or ``threshold`` is outside ``(0, 1)``.
    """
    check_float_tensor("p_generated", p_generated, ndim=4)
    check_hole(hole)
    if p_generated.shape != hole.shape:
        raise ValueError(
            f"p_generated: expected the shape of hole {tuple(hole.shape)} (B, 1, H, W; nothing is resampled), "
            f"got {tuple(p_generated.shape)}"
        )
    _check_threshold(threshold)
    p = p_generated.detach()
    if p.numel() and not bool(((p >= 0) & (p <= 1)).all()):  # also catches NaN
        raise ValueError(
            f"p_generated: expected probabilities in [0, 1], got values in [{float(p.min()):g}, {float(p.max()):g}]"
        )
    labels = _binary_hole(hole)
    n_hole = int(labels.sum())
    return {
        "auroc": binary_auroc(p, labels),
        "ap": binary_average_precision(p, labels),
        "iou": binary_iou(p >= threshold, labels),
        "hole_pixels": n_hole,
        "known_pixels": labels.numel() - n_hole,
    }


def _binary_hole(hole: torch.Tensor) -> torch.Tensor:
    h = hole.detach()
    if h.dtype == torch.bool:
        return h
    if h.numel() and not bool(((h == 0) | (h == 1)).all()):
        raise ValueError(
            "hole: expected a binary mask (0 or 1) to label pixels generated or known, got fractional values; "
            "threshold it (e.g. hole > 0.5) first"
        )
    return h == 1


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold: expected a float in (0, 1), got {describe(threshold)}")
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold: expected a float in (0, 1), got {threshold}")
    return float(threshold)


def segmenter_p_generated(
    segmenter: Callable[[torch.Tensor], Any], images: torch.Tensor, *, output: SegmenterOutput = "logit_real"
) -> torch.Tensor:
    """Run ``segmenter`` on ``images`` ``(B, C, H, W)`` and return ``P(generated)`` ``(B, 1, H, W)`` in float32.

    Raises:
        TypeError: the segmenter returned something else than a floating-point tensor (e.g. the
            ``(global, pixel)`` tuple of :class:`scatloss.nets.UNetDiscriminator`: pass ``lambda x: D(x)[1]``).
        ValueError: the map is not ``(B, 1, H, W)`` at the images' size, holds NaN/inf, or (``prob_generated``)
            leaves ``[0, 1]``.
    """
    check_choice("output", output, ("logit_real", "prob_generated"))
    out = segmenter(images)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        hint = (
            " (a two-headed discriminator returns (global, pixel): pass lambda x: D(x)[1])"
            if isinstance(out, (tuple, list))
            else ""
        )
        raise TypeError(f"segmenter: expected a floating-point (B, 1, H, W) tensor, got {describe(out)}{hint}")
    b, _, h, w = images.shape
    if tuple(out.shape) != (b, 1, h, w):
        raise ValueError(
            f"segmenter: expected a per-pixel map of shape {(b, 1, h, w)} (one channel at the images' size), "
            f"got {tuple(out.shape)}"
        )
    out = out.detach().float()
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"segmenter: expected finite outputs, got NaN or inf in {_count_nonfinite(out)} image(s)")
    if output == "logit_real":
        return torch.sigmoid(-out)
    if not bool(((out >= 0) & (out <= 1)).all()):
        raise ValueError(
            f"segmenter: output='prob_generated' expects values in [0, 1], got [{float(out.min()):g}, "
            f"{float(out.max()):g}]; use output='logit_real' for logits"
        )
    return out


@dataclass(frozen=True)
class ConfusionBucket:
    """Hole-detection scores of one hole-ratio bucket (pixels of all its samples pooled).

    Attributes:
        name: e.g. ``"20-40%"`` or ``"all"``.
        bounds: ``(lo, hi)`` hole-ratio bounds.
        count: samples (image, mask) scored.
        auroc: ROC area of ``P(generated)`` for hole vs known pixels (1 = every hole found, 0.5 = chance,
            lower = holes look *more* real than the known pixels); None when the bucket is empty.
        ap: average precision for hole pixels (chance = the hole fraction); None when empty.
        iou: IoU of ``P(generated) >= threshold`` with the holes; None when empty or undefined.
        hole_pixels: hole pixels pooled.
        known_pixels: known pixels pooled.
    """

    name: str
    bounds: tuple[float, float]
    count: int
    auroc: float | None
    ap: float | None
    iou: float | None
    hole_pixels: int = 0
    known_pixels: int = 0


@dataclass(frozen=True)
class ConfusionReport:
    """Result of :func:`segmentation_confusion` or :func:`detectability`.

    Attributes:
        buckets: one :class:`ConfusionBucket` per hole-ratio bucket.
        overall: every scored sample pooled (``name = "all"``).
        threshold: IoU threshold on ``P(generated)``.
        n_images, masks_per_image, seed, fill, out_of_bucket: as in :class:`EvaluationReport`.
        probe: for :func:`detectability`, the probe's training settings (steps, lr, ...); None otherwise.
    """

    buckets: tuple[ConfusionBucket, ...]
    overall: ConfusionBucket
    threshold: float
    n_images: int
    masks_per_image: int
    seed: int
    fill: float = 1.0
    out_of_bucket: int = 0
    probe: dict[str, Any] | None = None

    def __getitem__(self, name: str) -> ConfusionBucket:
        """The bucket called ``name`` (``"all"`` for :attr:`overall`)."""
        for bucket in (*self.buckets, self.overall):
            if bucket.name == name:
                return bucket
        raise KeyError(f"name: expected one of {[b.name for b in self.buckets] + ['all']}, got {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (undefined scores are None, never NaN)."""
        out = asdict(self)
        out["buckets"] = [{**asdict(b), "bounds": list(b.bounds)} for b in self.buckets]
        out["overall"] = {**asdict(self.overall), "bounds": list(self.overall.bounds)}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfusionReport:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, dict) or "buckets" not in data or "overall" not in data:
            raise ValueError("data: expected a dict from ConfusionReport.to_dict() with buckets and overall")

        def bucket(b: dict[str, Any]) -> ConfusionBucket:
            return ConfusionBucket(**{**b, "bounds": tuple(b["bounds"])})

        return cls(**{**data, "buckets": tuple(bucket(b) for b in data["buckets"]), "overall": bucket(data["overall"])})

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (``allow_nan=False``)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` atomically; returns the path."""
        text = self.to_json() + "\n"
        return atomic_write(path, lambda handle: handle.write(text), binary=False)

    def to_markdown(self) -> str:
        """Rows AUROC / AP / IoU, columns the buckets and ``all``; "–" where undefined."""
        cols = (*self.buckets, self.overall)
        lines = [
            "| Hole detection | " + " | ".join(b.name for b in cols) + " |",
            "|:--|" + "--:|" * len(cols),
            "| AUROC | " + " | ".join(_fmt(b.auroc, 3) for b in cols) + " |",
            "| AP | " + " | ".join(_fmt(b.ap, 3) for b in cols) + " |",
            f"| IoU @ {self.threshold:g} | " + " | ".join(_fmt(b.iou, 3) for b in cols) + " |",
            "| Samples | " + " | ".join(str(b.count) for b in cols) + " |",
        ]
        note = (
            f"{self.n_images} images x {self.masks_per_image} mask(s) per bucket, seed {self.seed}; the segmenter "
            "sees the composite (prediction in the holes, ground truth elsewhere); positives = hole pixels. "
            "AUROC 0.5 = the holes cannot be told from the known pixels."
        )
        if self.probe:
            settings = ", ".join(f"{k} {v}" for k, v in self.probe.items())
            note += f" Probe segmenter trained from scratch on the generator's composites ({settings})."
        if self.out_of_bucket:
            note += f" {self.out_of_bucket} sample(s) fell in no bucket."
        return "\n".join(lines) + "\n\n" + note + "\n"

    def __str__(self) -> str:
        return self.to_markdown()


class _Pool:
    """Scores and labels of one bucket, kept on the host (float32 scores, bool labels)."""

    def __init__(self) -> None:
        self.count = 0
        self.scores: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def add(self, p: torch.Tensor, labels: torch.Tensor) -> None:
        self.count += p.shape[0]
        self.scores.append(p.reshape(-1).float().cpu())
        self.labels.append(labels.reshape(-1).cpu())

    def result(self, name: str, bounds: tuple[float, float], threshold: float) -> ConfusionBucket:
        if self.count == 0:
            return ConfusionBucket(name, bounds, 0, None, None, None)
        s, y = torch.cat(self.scores), torch.cat(self.labels)
        n_hole = int(y.sum())
        return ConfusionBucket(
            name, bounds, self.count, binary_auroc(s, y), binary_average_precision(s, y),
            binary_iou(s >= threshold, y), n_hole, y.numel() - n_hole,
        )  # fmt: skip


def segmentation_confusion(
    segmenter: Callable[[torch.Tensor], Any],
    generator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor | Iterable[Any],
    *,
    buckets: Sequence[tuple[float, float]] = BUCKETS,
    masks_per_image: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    fill: float = 1.0,
    threshold: float = 0.5,
    output: SegmenterOutput = "logit_real",
) -> ConfusionReport:
    """How well ``segmenter`` localises ``generator``'s fills in composites, per hole-ratio bucket.

    Same samples as :func:`evaluate` (the same ``seed`` draws the same masks): for each image and bucket,
    ``composite = hole * G(corrupt(image, hole, fill), hole) + (1 - hole) * image`` is given to the segmenter
    (never the raw prediction: a generator must not be caught by what the composite overwrites), the map is
    turned into ``P(generated)`` (see ``output``) and scored against the hole mask with
    :func:`hole_detection_metrics`; pixels are pooled per bucket (micro average) and over all buckets
    (``overall``). ``nn.Module`` arguments run in eval mode (spectral norm's power iteration does not advance)
    without autograd, and their train/eval flags are restored afterwards.

    Use it as a training monitor (the adversarial game SCAT plays: the segmenter learning to find the holes,
    the generator learning to hide them), or with a freshly trained probe segmenter (:func:`detectability`).

    Memory: the pooled scores of every pixel are kept (5 bytes per pixel and bucket), e.g. 330 MB for 1000
    images of 256x256 per bucket.

    Args:
        segmenter: ``S(x) -> (B, 1, H, W)`` per-pixel map at the images' size (for a two-headed
            :class:`~scatloss.nets.UNetDiscriminator`, ``lambda x: D(x)[1]``).
        generator, images, buckets, masks_per_image, seed, batch_size, device, fill: as :func:`evaluate`.
        threshold: IoU threshold on ``P(generated)``.
        output: ``"logit_real"`` (default; SCAT's per-pixel logits, positive = real) or ``"prob_generated"``.

    Returns:
        A :class:`ConfusionReport`; a bucket without samples has None scores (never NaN).

    Raises:
        TypeError, ValueError: bad arguments, a segmenter map of the wrong shape, type or values, a generator
            output of the wrong shape or with NaN/inf, images outside ``[-1, 1]``; ``device`` not available.
    """
    if not callable(segmenter):
        raise TypeError(f"segmenter: expected a callable S(images) -> (B, 1, H, W) map, got {describe(segmenter)}")
    if not callable(generator):
        raise TypeError(f"generator: expected a callable G(corrupted, hole) -> prediction, got {describe(generator)}")
    pairs = _check_buckets("buckets", buckets)
    _check_positive_int("masks_per_image", masks_per_image)
    _check_positive_int("batch_size", batch_size)
    _check_seed_and_fill(seed, fill)
    threshold = _check_threshold(threshold)
    check_choice("output", output, ("logit_real", "prob_generated"))
    run_device = _resolve_device(device, generator, images)

    pools = [_Pool() for _ in pairs]
    total = _Pool()
    out_of_bucket = 0
    samples = _Composites(generator, images, pairs, masks_per_image, seed, fill, batch_size, run_device)
    modes = _enter_eval(generator) + _enter_eval(segmenter)
    try:
        with torch.no_grad():
            for _, hole, assigned, result in samples:
                p = segmenter_p_generated(segmenter, result, output=output)
                labels = hole > 0.5
                for index in sorted(set(assigned)):
                    rows = torch.tensor([a == index for a in assigned], device=p.device)
                    if index < 0:
                        out_of_bucket += int(rows.sum())
                        continue
                    pools[index].add(p[rows], labels[rows])
                    total.add(p[rows], labels[rows])
    finally:
        _restore_modes(modes)
    n_images = samples.n_images
    overall_bounds = (min(lo for lo, _ in pairs), max(hi for _, hi in pairs))
    return ConfusionReport(
        buckets=tuple(pool.result(bucket_name(pair), pair, threshold) for pool, pair in zip(pools, pairs, strict=True)),
        overall=total.result("all", overall_bounds, threshold),
        threshold=threshold,
        n_images=n_images,
        masks_per_image=masks_per_image,
        seed=seed,
        fill=float(fill),
        out_of_bucket=out_of_bucket,
    )


def _stack_images(images: Any, what: str) -> torch.Tensor:
    parts = list(_batches(images, 64))
    if not parts:
        raise ValueError(f"{what}: expected at least one image, got none")
    shapes = {tuple(p.shape[1:]) for p in parts}
    if len(shapes) > 1:
        raise ValueError(f"{what}: expected images of one size for the probe, got sizes {sorted(shapes)}")
    return torch.cat(parts)


def _default_probe(channels: int, height: int, width: int) -> nn.Module:
    from .nets import UNetSegmenter

    depth = 0
    while depth < 4 and height % 2 ** (depth + 1) == 0 and width % 2 ** (depth + 1) == 0:
        depth += 1
    if depth == 0:
        raise ValueError(f"train_images: the default probe needs even image sides, got {height}x{width}")
    return UNetSegmenter(in_channels=channels, base_channels=16, depth=depth, spectral_norm=False)


def detectability(
    generator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_images: torch.Tensor | Iterable[Any],
    test_images: torch.Tensor | Iterable[Any],
    *,
    steps: int = 300,
    batch_size: int = 8,
    lr: float = 4e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    kind: Literal["bce", "hinge", "ls"] = "bce",
    segmenter: Callable[[], nn.Module] | None = None,
    seed: int = 0,
    buckets: Sequence[tuple[float, float]] = BUCKETS,
    masks_per_image: int = 1,
    fill: float = 1.0,
    threshold: float = 0.5,
    device: torch.device | str | None = None,
) -> ConfusionReport:
    """Detectability of a finished generator's fills: train a fresh probe segmenter, score it on held-out composites.

    A new segmenter (``segmenter()``; default :class:`~scatloss.nets.UNetSegmenter` with 16 base channels,
    depth up to 4, no spectral norm) is trained for ``steps`` Adam steps (``lr``, ``betas``) with the SCAT
    segmenter loss (Eq. 1, ``kind``; BCE by default, a plain per-pixel classifier) on composites of the frozen
    generator: each step draws ``batch_size`` images of ``train_images`` and free-form masks from private
    generators seeded by ``seed``. It is then scored with :func:`segmentation_confusion` on ``test_images``
    (fixed masks, the same ``seed``). Lower AUROC / AP / IoU = fills harder to find = more seamless; a
    generator that copies the ground truth scores 0.5 AUROC.

    Deterministic for a seed on one device and thread count: the probe's initial weights come from torch's CPU
    generator (and, for a CUDA run, the run device's generator) seeded with ``seed`` inside
    ``torch.random.fork_rng``, so the caller's RNG state is left as it was on every device; image order and
    masks come from private generators. The generator is run in eval mode without autograd and its
    modes are restored.

    Args:
        generator: ``G(corrupted, hole) -> prediction``, images in ``[-1, 1]``.
        train_images: images the probe trains on (one size), any form :func:`evaluate` accepts.
        test_images: held-out images it is scored on.
        steps: probe optimisation steps (``>= 1``).
        batch_size: images per probe step.
        lr, betas: Adam settings of the probe.
        kind: SCAT segmenter loss form for the probe.
        segmenter: factory of the probe ``() -> nn.Module`` returning per-pixel logits of *real*
            (``(B, 1, H, W)``); default as above.
        seed, buckets, masks_per_image, fill, threshold, device: as :func:`segmentation_confusion`.

    Returns:
        A :class:`ConfusionReport` whose ``probe`` records the probe's settings and its last training loss.
    """
    from .functional import scat_segmenter_loss
    from .masks import MaskGenerator

    if not callable(generator):
        raise TypeError(f"generator: expected a callable G(corrupted, hole) -> prediction, got {describe(generator)}")
    _check_positive_int("steps", steps)
    _check_positive_int("batch_size", batch_size)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"seed: expected a non-negative int, got {describe(seed)}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr: expected a positive float, got {lr!r}")
    check_choice("kind", kind, ("bce", "hinge", "ls"))
    if segmenter is not None and not callable(segmenter):
        raise TypeError(f"segmenter: expected a factory () -> nn.Module or None, got {describe(segmenter)}")
    run_device = _resolve_device(device, generator, train_images)
    train = _stack_images(train_images, "train_images")
    n, c, h, w = train.shape
    on_cuda = run_device.type == "cuda"
    with torch.random.fork_rng(devices=[run_device] if on_cuda else []):
        # Seed only the generators fork_rng restores: torch.manual_seed would also (re)seed every CUDA device's
        # generator, which fork_rng does not give back (the caller's CUDA RNG state would change).
        torch.random.default_generator.manual_seed(seed)
        if on_cuda:
            with torch.cuda.device(run_device):
                torch.cuda.manual_seed(seed)
        probe = segmenter() if segmenter is not None else _default_probe(c, h, w)
    if not isinstance(probe, nn.Module):
        raise TypeError(f"segmenter: expected the factory to return an nn.Module, got {describe(probe)}")
    probe = probe.to(run_device).train()
    opt = torch.optim.Adam(probe.parameters(), lr=float(lr), betas=betas)
    order = torch.Generator().manual_seed(_mask_seed(seed, 1, (0.0, 1.0), 0))
    masks = MaskGenerator(h, w, buckets=buckets, seed=_mask_seed(seed, 2, (0.0, 1.0), 0) % 2**62)
    modes = _enter_eval(generator)
    last = float("nan")
    try:
        for _ in range(steps):
            index = torch.randint(n, (batch_size,), generator=order)
            image = train[index].to(run_device)
            hole = masks.sample(batch_size).to(run_device)
            with torch.no_grad():
                prediction = generator(corrupt(image, hole, float(fill)), hole)
                _check_prediction(prediction, image)
                comp = composite(prediction.to(image.dtype), image, hole)
            fake, real = probe(comp), probe(image)
            if not isinstance(fake, torch.Tensor) or tuple(fake.shape) != (batch_size, 1, h, w):
                raise ValueError(
                    f"segmenter: expected the probe to return a (B, 1, H, W) map = {(batch_size, 1, h, w)}, "
                    f"got {describe(fake)}"
                )
            loss = scat_segmenter_loss(fake, real, hole, kind=kind)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last = float(loss.detach())
    finally:
        _restore_modes(modes)
    report = segmentation_confusion(
        probe, generator, test_images, buckets=buckets, masks_per_image=masks_per_image, seed=seed,
        batch_size=max(batch_size, 8), device=run_device, fill=fill, threshold=threshold,
    )  # fmt: skip
    settings = {"steps": steps, "batch_size": batch_size, "lr": float(lr), "kind": kind, "train_images": n,
                "last_loss": round(last, 6) if math.isfinite(last) else None}  # fmt: skip
    return dataclasses.replace(report, probe=settings)
