"""Labelled sample grids and training-curve plots of the reference trainer and its demo.

Pillow draws the captions (its default font, scalable where FreeType is available); matplotlib (the
``examples`` extra) draws the curves. Nothing here changes a network or a run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CURVE_PANELS", "GRID_ROWS", "label_grid", "plot_curves", "read_log", "save_run_curves", "tile"]

GRID_ROWS: tuple[str, ...] = ("input", "output", "ground truth", "P(generated)")
"""Row captions of the trainer's ``samples/step_*.png``: corrupted input (holes white), composite output, ground
truth, and the discriminator's per-pixel belief that a pixel was generated (white = generated)."""

CURVE_PANELS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("s_auroc", ("s_auroc",), "segmenter finds the holes: AUROC\n(1 = every hole found, 0.5 = fooled)"),
    ("d_scat", ("d_scat",), "S: SCAT loss (segmenter side, Eq. 1)"),
    ("g_scat", ("g_scat",), "G: SCAT loss (generator side, Eq. 2)"),
    ("g_rec", ("g_rec",), "G: L1 reconstruction (Eq. 7)"),
    ("g_adv", ("g_adv",), "G: global adversarial (Eq. 6)"),
    ("d_adv", ("d_adv",), "D: global adversarial (hinge)"),
    ("g_text", ("g_text",), "G: textural contrastive (Eq. 3)"),
    ("g_sem", ("g_sem",), "G: semantic contrastive (Eq. 4)"),
)
"""``(panel key, log keys, title)`` of :func:`plot_curves`; panels whose keys no log has are left out."""


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def label_grid(
    grid: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str] | None = None,
    *,
    title: str | None = None,
    scale: int = 2,
) -> np.ndarray:
    """Add row captions (left), optional column captions (top) and a title to a ``(H, W, 3)`` uint8 grid.

    The grid is enlarged ``scale`` times (nearest neighbour, so pixels stay pixels) and its rows are assumed to
    split ``H`` evenly (``len(rows)`` rows); columns likewise split ``W``. Returns a new uint8 array.
    """
    from PIL import Image, ImageDraw

    if grid.ndim != 3 or grid.shape[2] != 3 or grid.dtype != np.uint8:
        raise ValueError(f"grid: expected an (H, W, 3) uint8 array, got {grid.shape} {grid.dtype}")
    if not rows or grid.shape[0] % len(rows):
        raise ValueError(f"rows: expected a caption per grid row ({grid.shape[0]} px tall), got {len(rows)}")
    big = np.kron(grid, np.ones((scale, scale, 1), dtype=np.uint8)) if scale > 1 else grid
    h, w = big.shape[:2]
    font = _font(13)
    left = 8 + max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(r, font=font)) for r in rows)
    top = (22 if title else 4) + (18 if columns else 0)
    canvas = Image.new("RGB", (left + w + 4, top + h + 4), "white")
    canvas.paste(Image.fromarray(big), (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), title, fill="black", font=_font(15))
    row_h = h / len(rows)
    for i, caption in enumerate(rows):
        draw.text((4, top + row_h * (i + 0.5)), caption, fill="black", font=font, anchor="lm")
    if columns:
        col_w = w / len(columns)
        for j, caption in enumerate(columns):
            draw.text((left + col_w * (j + 0.5), top - 3), caption, fill="black", font=font, anchor="mb")
    return np.asarray(canvas)


def tile(rows: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Rows of ``(n, S, S, 3)`` uint8 images -> one ``(len(rows) * (S + pad), n * (S + pad), 3)`` white-padded grid."""
    n, s = rows[0].shape[:2]
    out = np.full((len(rows) * (s + pad), n * (s + pad), 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c in range(n):
            y, x = r * (s + pad) + pad // 2, c * (s + pad) + pad // 2
            out[y : y + s, x : x + s] = row[c]
    return out


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``train_log.jsonl`` (NaN allowed, unreadable lines skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def plot_curves(
    logs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    marks: Mapping[str, int] | None = None,
) -> Path:
    """One panel per :data:`CURVE_PANELS` entry present in ``logs`` (``{arm label: records}``), one line per arm.

    ``marks`` draws labelled vertical lines (e.g. ``{"samples": 120}``). Values are the unweighted terms as
    logged; NaN points (e.g. AUROC of a batch without holes) are gaps.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in CURVE_PANELS if any(k in rec for recs in logs.values() for rec in recs for k in p[1])]
    ncols = min(4, max(1, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows), squeeze=False)
    for ax, (key, keys, caption) in zip(axes.flat, panels, strict=False):
        for label, records in logs.items():
            points = [(r["step"], float(r[keys[0]])) for r in records if keys[0] in r and r[keys[0]] is not None]
            if points:
                x, y = zip(*points, strict=True)
                ax.plot(x, y, lw=1.3, label=label, marker="." if len(points) < 40 else None)
        if key == "s_auroc":
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
            ax.set_ylim(0.3, 1.02)
        for name, step in (marks or {}).items():
            ax.axvline(step, color="black", lw=0.6, ls=":")
            ax.text(step, ax.get_ylim()[1], f" {name}", fontsize=6, va="top")
        ax.set_title(caption, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if panels:
        axes.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def save_run_curves(run_dir: str | os.PathLike[str], label: str) -> Path | None:
    """``<run_dir>/curves.png`` from its ``train_log.jsonl``; None (nothing written) without matplotlib or a log."""
    import importlib.util

    log = Path(run_dir) / "train_log.jsonl"
    if importlib.util.find_spec("matplotlib") is None or not log.exists():
        return None
    records = read_log(log)
    if not records:
        return None
    return plot_curves({label: records}, Path(run_dir) / "curves.png", title=f"{Path(run_dir).name}: {label}")
