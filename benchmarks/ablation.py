"""Ablation of the paper's Table 3 with the reference trainer: Baseline, +SCAT, +textural, +semantic.

Zuo et al. (AAAI 2023), Table 3, trains four models that differ only by loss terms:

==========================  ==================  ===============================================
row                         trainer objective   generator loss (Eq. 8)
==========================  ==================  ===============================================
Baseline                    ``baseline``        global hinge adversarial + L1
Baseline-1 (+SCAT)          ``scat``            + SCAT (per-pixel head of the U-Net discriminator)
Baseline-2 (+textural)      ``scat+text``       + textural contrastive
Full (+semantic)            ``full``            + semantic contrastive (the paper's model)
==========================  ==================  ===============================================

and reports that every added term improves mean L1, PSNR and SSIM on CelebA (40-60 % holes). This script
trains the same four rows with :mod:`examples.aotgan.train` under identical data, masks, initial weights,
seeds and step counts (seed ``s`` gives every row the same initial G and D, batches and masks), for several
seeds, and scores every final generator on **one common held-out set** (the same crops and the same seeded
masks for every row and seed, so the seed spread measures training variation only, not a different test
set). Within a seed the rows are paired, so it also reports paired differences (row minus the previous
row, row minus Baseline) and how many seeds improve.

Run from the repository root::

    python benchmarks/ablation.py --quick                  # smoke run, seconds (tiny nets, 1 seed, 2 steps)
    python benchmarks/ablation.py --config small --jobs 2  # CPU: 32x32, small nets, 5 seeds, ~20 min on 2 cores
    python benchmarks/ablation.py --config cpu --objectives baseline full  # 6 paired seeds + probe, ~45 min
    python benchmarks/ablation.py --config gpu             # GPU: 256x256, paper-like widths, 3 seeds
    python benchmarks/ablation.py --config gpu --data /path/to/celeba --steps 50000   # closer to the paper

Each training run goes to ``--work-dir`` (default ``runs/ablation/<config>/<objective>/seed<k>/``: the
trainer's samples, logs, metrics; checkpoints are deleted once the generator is scored unless
``--keep-checkpoints``). Only summaries go to ``--results-dir`` (default ``benchmarks/results/ablation/<config>/``):

- ``table.md`` / ``table.csv`` / ``summary.json``: mean, sample std (ddof = 1) and min-max over seeds, per
  hole-ratio bucket, for L1 (lower is better), PSNR and SSIM (higher is better) and the detectability probe's
  AUROC and AP (lower is better: a fresh segmenter trained for ``--probe-steps`` on the run's composites finds
  fewer of the held-out holes; :func:`scatloss.evaluate.detectability`); paired differences with a paired
  t-test and an exact sign-flip test over seeds; the ordering check; the exact command, wall time and machine;
- ``runs.csv``: every run's numbers;
- ``curves.png``: loss terms vs step, one line per row (mean over seeds, band = min-max over seeds);
- ``metrics.png``: final metrics per row, one panel per metric and bucket (bar = mean, error bar = std, dots = seeds);
- ``samples.png``: the same held-out images and masks, corrupted | Baseline | +SCAT | +text | Full | GT.

The ``ablation`` section of ``benchmarks/RESULTS.md`` is rebuilt from every ``*/summary.json`` under the
results root (``--quick`` writes neither there nor to RESULTS.md unless ``--results-dir`` is given).
A ``notes.md`` next to a ``summary.json`` (hand-written reading of the numbers) is included verbatim.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import math
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    RESULTS_DIR,
    RESULTS_MD,
    command_line,
    machine_info,
    machine_markdown,
    markdown_table,
    write_csv,
    write_section,
)

__all__ = [
    "METRICS",
    "PRESETS",
    "ROWS",
    "Preset",
    "aggregate",
    "main",
    "ordering_check",
    "paired_differences",
    "summarize",
]

ROWS: tuple[tuple[str, str], ...] = (
    ("baseline", "Baseline"),
    ("scat", "Baseline-1 (+SCAT)"),
    ("scat+text", "Baseline-2 (+text)"),
    ("full", "Full (+sem)"),
)
"""``(trainer objective, Table 3 row name)`` in the paper's order; each row adds one term to the previous."""

LABELS: dict[str, str] = dict(ROWS)
SHORT: dict[str, str] = {"baseline": "Baseline", "scat": "+SCAT", "scat+text": "+text", "full": "Full"}

METRICS: tuple[tuple[str, str, bool], ...] = (
    ("l1", "Mean L1 ↓", False),
    ("psnr", "PSNR (dB) ↑", True),
    ("ssim", "SSIM ↑", True),
    ("probe_auroc", "Probe AUROC ↓", False),
    ("probe_ap", "Probe AP ↓", False),
)
"""``(key, display name, higher_is_better)``. ``probe_*``: detectability of the generator's fills, i.e. how well a
fresh probe segmenter trained on its composites finds the holes of held-out ones
(:func:`scatloss.evaluate.detectability`; lower = more seamless). Metrics that no run reports (e.g. summaries
written before the probe existed) are left out of every table."""

DIGITS = {"l1": 4, "psnr": 2, "ssim": 3, "probe_auroc": 3, "probe_ap": 3}
EVAL_SEED = 0
"""Seed of the common held-out set (crops and masks) every run is scored on, whatever its training seed."""
CURVE_TERMS: tuple[tuple[str, str], ...] = (
    ("g_rec", "G: L1 (rec)"),
    ("g_adv", "G: global adversarial"),
    ("d_adv", "D: global adversarial (hinge)"),
    ("g_scat", "G: SCAT"),
    ("d_scat", "S: SCAT (segmenter)"),
    ("g_text", "G: textural contrastive"),
    ("g_sem", "G: semantic contrastive"),
    ("g_total", "G: total (weighted)"),
)


@dataclass(frozen=True)
class Preset:
    """A training configuration shared by every row and seed (fields of the trainer's ``TrainConfig``)."""

    size: int
    batch_size: int
    steps: int
    g_channels: int
    g_blocks: int
    d_channels: int
    d_depth: int
    eval_images: int
    seeds: tuple[int, ...]
    log_every: int
    grid_images: int
    description: str
    threads: int | None = None
    """Default torch threads per job (None: cores // jobs). Tiny nets run fastest on one thread per process:
    intra-op threads only add synchronisation, which costs seconds per step on an oversubscribed machine."""
    probe_steps: int = 200
    """Training steps of the detectability probe (a fresh segmenter per run; 0: no probe)."""
    probe_images: int = 256
    """Training crops of the probe (the training split of the evaluation seed; scored on the held-out set)."""


PRESETS: dict[str, Preset] = {
    "small": Preset(
        size=32, batch_size=8, steps=300, g_channels=16, g_blocks=2, d_channels=16, d_depth=4,
        eval_images=64, seeds=(0, 1, 2, 3, 4), log_every=10, grid_images=6,
        description="CPU: 32x32 crops, G 16 ch x 2 AOT blocks, D 16 ch depth 4, batch 8", threads=1,
    ),
    "cpu": Preset(
        size=32, batch_size=8, steps=300, g_channels=16, g_blocks=2, d_channels=16, d_depth=4,
        eval_images=64, seeds=(0, 1, 2, 3, 4, 5), log_every=10, grid_images=6,
        description="CPU: 32x32 crops, G 16 ch x 2 AOT blocks, D 16 ch depth 4, batch 8, 6 paired seeds, "
        "detectability probe 200 steps", threads=1, probe_steps=200,
    ),
    "gpu": Preset(
        size=256, batch_size=8, steps=20000, g_channels=64, g_blocks=8, d_channels=64, d_depth=5,
        eval_images=128, seeds=(0, 1, 2), log_every=50, grid_images=6,
        description="GPU: 256x256 crops, paper-like widths (G 64 ch x 8 AOT blocks, D 64 ch depth 5, 1024-d), "
        "batch 8, M = 8 negatives (every mask of the batch)", probe_steps=1000, probe_images=512,
    ),
    "quick": Preset(
        size=32, batch_size=4, steps=2, g_channels=4, g_blocks=1, d_channels=4, d_depth=4,
        eval_images=4, seeds=(0,), log_every=1, grid_images=3,
        description="smoke run: 32x32, tiny nets, 2 steps, 1 seed", threads=1, probe_steps=2, probe_images=8,
    ),
}  # fmt: skip
"""Named configurations (``--config``; ``--quick`` = ``quick``). Learning rates, betas and loss weights are the
trainer's defaults (the paper's: lr 1e-4, lambda_adv 1, lambda_text 10, lambda_sem 1, lambda_rec 10)."""


# ----------------------------------------------------------------------------------------------------------------------
# Aggregation (pure functions, unit-tested)
# ----------------------------------------------------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``n``, ``mean``, sample ``std`` (ddof = 1; None when ``n < 2``), ``min`` and ``max`` of ``values``."""
    vals = [float(v) for v in values]
    if not vals:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {
        "n": len(vals),
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else None,
        "min": min(vals),
        "max": max(vals),
    }


def _bucket_values(report: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """``{bucket name: {metric: value}}`` of one ``EvaluationReport.to_dict()``."""
    return {b["name"]: {m: b.get(m) for m, _, _ in METRICS} for b in report["buckets"]}


def _metrics_of(results: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> list[tuple[str, str, bool]]:
    """The entries of :data:`METRICS` that at least one report has a value for."""
    found = {
        m for per_seed in results.values() for report in per_seed.values() for b in report["buckets"]
        for m, _, _ in METRICS if b.get(m) is not None
    }  # fmt: skip
    return [entry for entry in METRICS if entry[0] in found]


_EXACT_SIGN_FLIPS = 16
_RANDOM_SIGN_FLIPS = 16384


def paired_test(diffs: Sequence[float]) -> dict[str, float | None]:
    """Two-sided tests of "mean paired difference = 0" over seeds (numpy only).

    - ``p_t``: paired t-test, ``t = mean / (std / sqrt(n))`` with ``n - 1`` degrees of freedom (Student's t
      distribution via the regularised incomplete beta function); None when ``n < 2``; 1.0 when every difference
      is 0; 0.0 when they are all equal and non-zero (std 0).
    - ``p_signflip``: exact sign-flip permutation test: the share of the ``2**n`` sign patterns whose
      ``|mean|`` is at least the observed one (no normality assumed; its smallest value is ``2 / 2**n``, e.g.
      0.0625 for 5 seeds, so few seeds can never reach p < 0.05 on it); None when ``n == 0``. Above 16 seeds,
      16384 random sign patterns (fixed seed) estimate it.
    """
    d = np.asarray([float(x) for x in diffs], dtype=np.float64)
    n = len(d)
    out: dict[str, float | None] = {"t": None, "p_t": None, "p_signflip": None}
    if n == 0:
        return out
    observed = abs(d.mean())
    if n <= _EXACT_SIGN_FLIPS:
        signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1)  # (2**n, n) of +-1
        means = np.abs((signs * d).mean(axis=1))
        out["p_signflip"] = float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))
    else:  # Monte Carlo with a fixed seed, the observed pattern counted once (never p = 0)
        rng = np.random.default_rng(0)
        signs = rng.choice([-1.0, 1.0], size=(_RANDOM_SIGN_FLIPS, n))
        means = np.abs((signs * d).mean(axis=1))
        hits = int(np.sum(means >= observed - 1e-12 * max(1.0, observed)))
        out["p_signflip"] = (hits + 1) / (_RANDOM_SIGN_FLIPS + 1)
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        out["t"], out["p_t"] = (0.0, 1.0) if observed == 0.0 else (math.copysign(math.inf, d.mean()), 0.0)
        return out
    t = float(d.mean() / (sd / math.sqrt(n)))
    df = n - 1
    out["t"] = t
    out["p_t"] = _betainc(df / 2.0, 0.5, df / (df + t * t))  # two-sided p of Student's t
    return out


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)`` by its continued fraction (modified Lentz), ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on this side
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-14:
            break
    return min(1.0, max(0.0, front * (f - 1.0)))


def _buckets_of(results: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> list[str]:
    names: list[str] = []
    for per_seed in results.values():
        for report in per_seed.values():
            names += [b["name"] for b in report["buckets"] if b["name"] not in names]
    return names


def aggregate(results: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Mean / std / min / max over seeds of every (objective, bucket, metric).

    Args:
        results: ``{objective: {seed: EvaluationReport.to_dict()}}`` (only ``buckets[*].name`` and the metric
            keys ``l1``, ``psnr``, ``ssim`` are read; a None metric, i.e. an empty bucket, is skipped).

    Returns:
        One dict per (objective, bucket, metric), objectives in the given order, buckets in report order,
        metrics in :data:`METRICS` order: ``objective``, ``label``, ``bucket``, ``metric``, ``seeds``,
        ``values`` (per seed, same order) and the keys of :func:`summarize`.
    """
    rows = []
    metrics = _metrics_of(results)
    for bucket in _buckets_of(results):
        for objective, per_seed in results.items():
            for metric, _, _ in metrics:
                seeds, values = [], []
                for seed in sorted(per_seed):
                    value = _bucket_values(per_seed[seed]).get(bucket, {}).get(metric)
                    if value is not None:
                        seeds.append(seed)
                        values.append(float(value))
                rows.append(
                    {
                        "objective": objective,
                        "label": LABELS.get(objective, objective),
                        "bucket": bucket,
                        "metric": metric,
                        "seeds": seeds,
                        "values": values,
                        **summarize(values),
                    }
                )
    return rows


def paired_differences(
    results: Mapping[str, Mapping[int, Mapping[str, Any]]], against: str = "previous"
) -> list[dict[str, Any]]:
    """Per-seed differences ``row - reference`` summarised over the seeds both have.

    Args:
        results: as for :func:`aggregate`, objectives in Table 3's order.
        against: ``"previous"`` (the row above: the effect of the one term a row adds) or an objective name
            (e.g. ``"baseline"``).

    Returns:
        One dict per (objective other than the first / the reference, bucket, metric): ``objective``,
        ``reference``, ``bucket``, ``metric``, ``diffs`` (per common seed), ``improved`` (seeds where the row
        is better, in the metric's direction), the keys of :func:`summarize` of ``diffs`` and of
        :func:`paired_test` (``t``, ``p_t``, ``p_signflip``).
    """
    order = list(results)
    metrics = _metrics_of(results)
    rows = []
    for bucket in _buckets_of(results):
        for i, objective in enumerate(order):
            reference = (order[i - 1] if i > 0 else None) if against == "previous" else against
            if reference is None or reference == objective or reference not in results:
                continue
            for metric, _, higher in metrics:
                diffs = []
                for seed in sorted(set(results[objective]) & set(results[reference])):
                    a = _bucket_values(results[objective][seed]).get(bucket, {}).get(metric)
                    b = _bucket_values(results[reference][seed]).get(bucket, {}).get(metric)
                    if a is not None and b is not None:
                        diffs.append(float(a) - float(b))
                improved = sum(1 for d in diffs if (d > 0 if higher else d < 0))
                rows.append(
                    {
                        "objective": objective,
                        "reference": reference,
                        "bucket": bucket,
                        "metric": metric,
                        "diffs": diffs,
                        "improved": improved,
                        **summarize(diffs),
                        **paired_test(diffs),
                    }
                )
    return rows


def ordering_check(results: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Does Table 3's ordering (each row better than the one above) hold, per bucket and metric?

    Returns one dict per (bucket, metric): ``holds_on_means`` (the means are strictly monotone in the better
    direction), ``ranking`` (objectives best first by mean), ``seeds_holding`` / ``n_seeds`` (seeds on which the
    whole chain holds), ``range_of_means`` (best mean minus worst, absolute), ``mean_seed_std`` (average over rows
    of the seed std; None with one seed) and ``ratio`` = ``range_of_means / mean_seed_std``.
    """
    order = list(results)
    agg = {(r["objective"], r["bucket"], r["metric"]): r for r in aggregate(results)}
    out = []
    for bucket in _buckets_of(results):
        for metric, _, higher in _metrics_of(results):
            cells = [agg.get((o, bucket, metric)) for o in order]
            means = [c["mean"] if c else None for c in cells]
            if any(m is None for m in means):
                continue
            sign = 1.0 if higher else -1.0
            holds = all(sign * (b - a) > 0 for a, b in zip(means, means[1:], strict=False))
            ranking = [o for _, o in sorted(zip(means, order, strict=True), key=lambda t: -sign * t[0])]
            common = sorted(set.intersection(*(set(results[o]) for o in order))) if order else []
            seeds_holding = 0
            for seed in common:
                vals = [_bucket_values(results[o][seed]).get(bucket, {}).get(metric) for o in order]
                if all(v is not None for v in vals) and all(
                    sign * (b - a) > 0 for a, b in zip(vals, vals[1:], strict=False)
                ):
                    seeds_holding += 1
            stds = [c["std"] for c in cells if c and c["std"] is not None]
            mean_std = statistics.fmean(stds) if stds else None
            spread = max(means) - min(means)
            out.append(
                {
                    "bucket": bucket,
                    "metric": metric,
                    "means": dict(zip(order, means, strict=True)),
                    "holds_on_means": holds,
                    "ranking": ranking,
                    "seeds_holding": seeds_holding,
                    "n_seeds": len(common),
                    "range_of_means": spread,
                    "mean_seed_std": mean_std,
                    "ratio": spread / mean_std if mean_std else None,
                }
            )
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------------


def _dirname(objective: str) -> str:
    return objective.replace("+", "-")


def train_config_dict(
    preset: Preset, objective: str, seed: int, out: Path, args: argparse.Namespace, threads: int = 0
) -> dict[str, Any]:
    """Keyword arguments of the trainer's ``TrainConfig`` for one run (identical for all rows but ``objective``)."""
    from examples.aotgan.train import TrainConfig

    values = TrainConfig().to_dict()
    values.update(
        out=str(out), objective=objective, seed=seed, data=args.data, size=preset.size,
        batch_size=preset.batch_size, steps=args.steps or preset.steps, g_channels=preset.g_channels,
        g_blocks=preset.g_blocks, d_channels=preset.d_channels, d_depth=preset.d_depth,
        eval_images=preset.eval_images, eval_masks=1, log_every=preset.log_every, grid_images=preset.grid_images,
        sample_every=0, ckpt_every=0, keep_checkpoints=1, progress=False, overwrite=True, resume=None,
        device=args.device, precision=args.precision,
    )  # fmt: skip
    if "threads" in values:  # newer trainers set torch's intra-op threads themselves (0: leave as is)
        values["threads"] = threads
    return values


def _load_generator(run_dir: Path, cfg: Any) -> torch.nn.Module:
    from examples.aotgan.checkpoint import load_checkpoint
    from examples.aotgan.networks import AOTGenerator

    found = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    if not found:
        raise RuntimeError(f"{run_dir}: the trainer left no checkpoints/step_*.pt to score")
    state = load_checkpoint(found[-1])
    netG = AOTGenerator(base_channels=cfg.g_channels, num_blocks=cfg.g_blocks)
    netG.load_state_dict(state["generator"])
    return netG.eval()


def common_heldout(cfg: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """``(held-out dataset, grid images, grid holes)`` of :data:`EVAL_SEED`, whatever ``cfg.seed`` is."""
    from examples.aotgan.train import build_datasets
    from scatloss.masks import BUCKETS, free_form_mask

    eval_cfg = dataclasses.replace(cfg, seed=EVAL_SEED)
    _, heldout = build_datasets(eval_cfg)
    n = min(cfg.grid_images, len(heldout))
    images = torch.stack([heldout[i] for i in range(n)])
    s = images.shape[-1]
    holes = torch.stack([free_form_mask(s, s, bucket=i % len(BUCKETS), seed=EVAL_SEED * 1000 + i) for i in range(n)])
    return heldout, images, holes


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one (objective, seed), score it on the common held-out set, save its grid row; return the summary."""
    from examples.aotgan.train import FILL, TrainConfig, run
    from scatloss import functional as SF
    from scatloss.evaluate import detectability, evaluate

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    cfg = TrainConfig(**spec["train"])
    run_dir = Path(cfg.out)
    summary_path = run_dir / "ablation_run.json"
    if spec.get("reuse") and summary_path.exists():
        old = json.loads(summary_path.read_text(encoding="utf-8"))
        if old.get("train") == spec["train"] and (run_dir / "grid.npy").exists():
            old["reused"] = True
            return old
    started = time.perf_counter()
    trainer_metrics = run(cfg)
    train_s = time.perf_counter() - started
    netG = _load_generator(run_dir, cfg)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if cfg.device == "auto" else cfg.device)
    netG.to(device)
    heldout, images, holes = common_heldout(cfg)
    report = evaluate(
        netG, heldout, masks_per_image=cfg.eval_masks, seed=EVAL_SEED, batch_size=max(8, cfg.batch_size),
        device=device, fill=FILL,
    )  # fmt: skip
    metrics = report.to_dict()
    probe = None
    if spec.get("probe_steps"):
        probe_train = _probe_train_images(cfg, int(spec.get("probe_images") or 256))
        probe_report = detectability(
            netG, probe_train, heldout, steps=int(spec["probe_steps"]), batch_size=cfg.batch_size, seed=EVAL_SEED,
            masks_per_image=cfg.eval_masks, fill=FILL, device=device,
        )  # fmt: skip
        probe = probe_report.to_dict()
        for bucket in metrics["buckets"]:
            found = {b["name"]: b for b in probe["buckets"]}.get(bucket["name"], {})
            bucket.update(probe_auroc=found.get("auroc"), probe_ap=found.get("ap"), probe_iou=found.get("iou"))
    with torch.no_grad():
        images, holes = images.to(device), holes.to(device)
        comp = SF.composite(netG(SF.corrupt(images, holes, fill=FILL), holes).float(), images, holes)
    grid = ((comp.clamp(-1, 1).permute(0, 2, 3, 1).cpu().numpy() + 1.0) * 127.5).round().astype(np.uint8)
    np.save(run_dir / "grid.npy", grid)
    if not spec.get("keep_checkpoints"):
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines() if line]
    summary = {
        "objective": cfg.objective,
        "seed": cfg.seed,
        "train": spec["train"],
        "train_s": round(train_s, 2),
        "wall_s": round(time.perf_counter() - started, 2),
        "metrics": metrics,
        "probe": probe,  # detectability of the fills: a fresh segmenter trained on this generator's composites
        "trainer_metrics": trainer_metrics,  # the trainer's own held-out set (crops of seed `seed`)
        "log": log,
    }
    text = json.dumps(summary, indent=1, allow_nan=True) + "\n"
    summary_path.write_text(text, encoding="utf-8")
    return summary


def _probe_train_images(cfg: Any, n: int) -> torch.Tensor:
    """``n`` training crops of the evaluation seed (the same for every row and seed) for the probe to learn on."""
    from examples.aotgan.train import build_datasets

    train, _ = build_datasets(dataclasses.replace(cfg, seed=EVAL_SEED, train_length=n))
    return torch.stack([train[i] for i in range(min(n, len(train)))])


def _grid_inputs(cfg_dict: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Uint8 ``(n, S, S, 3)`` corrupted inputs and ground truths of the common grid."""
    from examples.aotgan.train import FILL, TrainConfig
    from scatloss import functional as SF

    _, images, holes = common_heldout(TrainConfig(**cfg_dict))
    corrupted = SF.corrupt(images, holes, fill=FILL)

    def to_u8(x: torch.Tensor) -> np.ndarray:
        return ((x.clamp(-1, 1).permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).round().astype(np.uint8)

    return to_u8(corrupted), to_u8(images)


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _cell(row: Mapping[str, Any]) -> str:
    d = DIGITS[row["metric"]]
    if row["n"] == 0:
        return "–"
    text = _fmt(row["mean"], d)
    if row["std"] is not None:
        text += f" ± {_fmt(row['std'], d)} ({_fmt(row['min'], d)}–{_fmt(row['max'], d)})"
    return text


def _diff_cell(row: Mapping[str, Any]) -> str:
    d = DIGITS[row["metric"]] + (1 if row["metric"] != "psnr" else 0)
    if row["n"] == 0:
        return "–"
    text = f"{row['mean']:+.{d}f}"
    if row["std"] is not None:
        text += f" ± {row['std']:.{d}f}"
    text += f" [{row['improved']}/{row['n']}]"
    if row.get("p_t") is not None or row.get("p_signflip") is not None:
        text += f" p {_fmt(row.get('p_t'), 2)} / {_fmt(row.get('p_signflip'), 2)}"
    return text


def table_markdown(summary: Mapping[str, Any]) -> str:
    """The results table (one per bucket, Table 3's bucket first), paired differences and the ordering check."""
    agg = summary["aggregate"]
    found = list(dict.fromkeys(r["bucket"] for r in agg))
    buckets = sorted(found, key=lambda b: (b != "40-60%", found.index(b)))
    seeds = summary["seeds"]
    present = {r["metric"] for r in agg}
    metrics = [entry for entry in METRICS if entry[0] in present]
    parts = [
        f"Mean ± sample std over {len(seeds)} seed(s) {seeds} (min–max in brackets); every run scored on the same "
        f"{summary['eval_images']} held-out crops × 1 mask per bucket (seed {EVAL_SEED})."
    ]
    index = {(r["objective"], r["bucket"], r["metric"]): r for r in agg}
    for bucket in buckets:
        note = " (Table 3's setting)" if bucket == "40-60%" else ""
        rows = [
            [
                LABELS.get(o, o),
                *[_cell(index[(o, bucket, m)]) if (o, bucket, m) in index else "–" for m, _, _ in metrics],
            ]  # fmt: skip
            for o in summary["objectives"]
            if (o, bucket, "l1") in index
        ]
        parts.append(f"**Holes {bucket}**{note}\n\n" + markdown_table(["Row", *[n for _, n, _ in metrics]], rows))
    prev = summary["paired_previous"]
    if prev:
        pindex = {(r["objective"], r["bucket"], r["metric"]): r for r in prev}
        rows = []
        for bucket in buckets:
            for o in summary["objectives"][1:]:
                if (o, bucket, "l1") in pindex:
                    rows.append([bucket, f"{SHORT.get(o, o)} − {SHORT.get(pindex[(o, bucket, 'l1')]['reference'])}"]
                                + [_diff_cell(pindex[(o, bucket, m)]) if (o, bucket, m) in pindex else "–"
                                   for m, _, _ in metrics])  # fmt: skip
        parts.append(
            "**Paired differences, each row minus the row above** (same seed: same init, data, masks), mean ± std "
            "over seeds, [seeds improved / seeds], two-sided p of the paired t-test / of the exact sign-flip test "
            "(its smallest possible value is 2 / 2^seeds):\n\n"
            + markdown_table(["Holes", "Step", *[f"Δ {n.rstrip(' ↑↓')}" for _, n, _ in metrics]], rows)
        )
    checks = summary["ordering"]
    if checks:
        rows = [
            [
                c["bucket"], dict((m, n) for m, n, _ in metrics)[c["metric"]],
                "yes" if c["holds_on_means"] else "no", " > ".join(SHORT.get(o, o) for o in c["ranking"]),
                f"{c['seeds_holding']}/{c['n_seeds']}", _fmt(c["range_of_means"], DIGITS[c["metric"]] + 1),
                _fmt(c["mean_seed_std"], DIGITS[c["metric"]] + 1), _fmt(c["ratio"], 2),
            ]
            for c in checks
        ]  # fmt: skip
        parts.append(
            "**Table 3's ordering** (Baseline < +SCAT < +text < Full): on the means, ranking best first, seeds on "
            "which the whole chain holds, range of the four means vs the average seed std:\n\n"
            + markdown_table(
                [
                    "Holes",
                    "Metric",
                    "Holds (means)",
                    "Ranking (best first)",
                    "Seeds holding",
                    "Range of means",
                    "Mean seed std",
                    "Range / std",
                ],
                rows,
            )  # fmt: skip
        )
    return "\n\n".join(parts) + "\n"


def write_tables(summary: dict[str, Any], results_dir: Path) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "config": summary["config"], "objective": r["objective"], "label": r["label"], "bucket": r["bucket"],
            "metric": r["metric"], "n": r["n"], "mean": r["mean"], "std": r["std"], "min": r["min"], "max": r["max"],
            "seeds": ";".join(map(str, r["seeds"])), "values": ";".join(f"{v:.6g}" for v in r["values"]),
        }
        for r in summary["aggregate"]
    ]  # fmt: skip
    write_csv(results_dir / "table.csv", rows)
    runs = []
    for run in summary["runs"]:
        for b in run["metrics"]["buckets"]:
            runs.append({"objective": run["objective"], "seed": run["seed"], "bucket": b["name"], "count": b["count"],
                         "l1": b["l1"], "psnr": b["psnr"], "ssim": b["ssim"], "train_s": run["train_s"],
                         "wall_s": run["wall_s"]})  # fmt: skip
    write_csv(results_dir / "runs.csv", runs)
    header = f"# Ablation (Table 3), config `{summary['config']}`\n\n{_run_facts(summary, link_root=None)}\n\n"
    (results_dir / "table.md").write_text(header + table_markdown(summary), encoding="utf-8")
    slim = {**summary, "runs": [{k: v for k, v in r.items() if k != "log"} for r in summary["runs"]]}
    (results_dir / "summary.json").write_text(json.dumps(slim, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < window:
        return y
    kernel = np.ones(window) / window
    head = np.cumsum(y[: window - 1]) / np.arange(1, window)  # growing window at the start
    return np.concatenate([head, np.convolve(y, kernel, mode="valid")])


def plot_curves(runs: Sequence[Mapping[str, Any]], objectives: Sequence[str], path: Path) -> Path:
    """Loss terms vs step: one line per row (mean over seeds, smoothed), band = min-max over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(k, t) for k, t in CURVE_TERMS if any(k in rec for r in runs for rec in r["log"])]
    ncols = 4 if len(present) > 4 else max(1, len(present))
    nrows = math.ceil(len(present) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 3.0 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    n_points = max((len(r["log"]) for r in runs), default=1)
    window = max(1, n_points // 10)
    for ax, (key, title) in zip(axes.flat, present, strict=False):
        for i, objective in enumerate(objectives):
            series = [
                {rec["step"]: rec[key] for rec in r["log"] if key in rec} for r in runs if r["objective"] == objective
            ]
            series = [s for s in series if s]
            if not series:
                continue
            steps = sorted(set.intersection(*(set(s) for s in series)))
            ys = np.array([[s[t] for t in steps] for s in series], dtype=float)
            ys = np.stack([_smooth(y, window) for y in ys])
            x = np.array(steps)
            color = colors[i % len(colors)]
            ax.plot(x, ys.mean(axis=0), color=color, label=SHORT.get(objective, objective), lw=1.4)
            if len(ys) > 1:
                ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.18, lw=0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present) :]:
        ax.axis("off")
    if present:
        axes.flat[0].legend(fontsize=7)
    n_seeds = len({r["seed"] for r in runs})
    fig.suptitle(
        f"Training curves (unweighted terms; mean over {n_seeds} seed(s), band = min–max over seeds; "
        f"moving average over {window} logged point(s))",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_metrics(summary: Mapping[str, Any], path: Path) -> Path:
    """Final metrics: one panel per (metric, bucket) with its own zoomed y-axis; bar = mean, error bar = std,
    dots = seeds (the rows' differences are far smaller than the buckets', so panels do not share an axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = summary["aggregate"]
    objectives = summary["objectives"]
    buckets = list(dict.fromkeys(r["bucket"] for r in agg))
    index = {(r["objective"], r["bucket"], r["metric"]): r for r in agg}
    present = {r["metric"] for r in agg}
    metrics = [entry for entry in METRICS if entry[0] in present]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(
        len(metrics), len(buckets), figsize=(3.2 * len(buckets) + 0.6, 2.4 * len(metrics)), squeeze=False
    )
    for r, (metric, name, _) in enumerate(metrics):
        for c, bucket in enumerate(buckets):
            ax = axes[r, c]
            lows, highs = [], []
            for i, objective in enumerate(objectives):
                row = index.get((objective, bucket, metric))
                if not row or row["n"] == 0:
                    continue
                std = row["std"] or 0.0
                ax.bar([i], [row["mean"]], 0.75, yerr=[std], capsize=3, color=colors[i % len(colors)],
                       error_kw={"lw": 0.9})  # fmt: skip
                ax.scatter([i] * len(row["values"]), row["values"], s=9, color="black", zorder=3, lw=0)
                lows.append(min(row["min"], row["mean"] - std))
                highs.append(max(row["max"], row["mean"] + std))
            if lows:
                pad = 0.15 * (max(highs) - min(lows)) or 0.01 * abs(max(highs)) or 0.01
                ax.set_ylim(min(lows) - pad, max(highs) + pad)
            ax.set_xticks(range(len(objectives)), [SHORT.get(o, o) for o in objectives], fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(axis="y", alpha=0.3)
            ax.set_title(f"{name}, holes {bucket}", fontsize=9)
    fig.suptitle(
        f"Held-out metrics, config {summary['config']}: bar = mean over seeds, error bar = std, dots = seeds "
        "(y-axes zoomed, not from 0)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_samples(columns: Sequence[tuple[str, np.ndarray]], path: Path, seed: int) -> Path:
    """Rows = held-out images; columns = ``(title, (n, S, S, 3) uint8)`` side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, s = columns[0][1].shape[:2]
    pad = max(1, s // 16)
    canvas = np.full((n * (s + pad) + pad, len(columns) * (s + pad) + pad, 3), 255, dtype=np.uint8)
    for c, (_, tiles) in enumerate(columns):
        for r in range(n):
            y, x = pad + r * (s + pad), pad + c * (s + pad)
            canvas[y : y + s, x : x + s] = tiles[r]
    scale = max(1.0, 96.0 / s)  # at least ~96 display pixels per tile
    fig_w = canvas.shape[1] * scale / 90 + 0.4
    fig_h = canvas.shape[0] * scale / 90 + 0.7
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([pad + c * (s + pad) + s / 2 for c in range(len(columns))], [t for t, _ in columns], fontsize=8)
    ax.set_yticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"Held-out crops, fixed masks (rows alternate 0-20/20-40/40-60 % holes); models of seed {seed}",
                 fontsize=8)  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# RESULTS.md
# ----------------------------------------------------------------------------------------------------------------------


def _run_facts(summary: Mapping[str, Any], link_root: Path | None) -> str:
    t = summary["train_config"]
    reused = sum(1 for r in summary["runs"] if r.get("reused"))
    trained = len(summary["runs"]) - reused
    lines = [
        f"- Command: `{summary['command']}`",
        f"- Wall time: {summary['wall_s'] / 60:.1f} min for the {trained} run(s) this command trained"
        + (f" ({reused} more reused from an earlier invocation, `--reuse`)" if reused else "")
        + f", {summary['jobs']} parallel job(s) × {summary['threads']} torch thread(s); sum of per-run times over "
        f"all {len(summary['runs'])} runs {sum(r['wall_s'] for r in summary['runs']) / 60:.1f} min",
        f"- Setup: {summary['description']}; {t['steps']} steps, data `{t['data']}`, "
        f"lr G/D {t['lr_g']:g}/{t['lr_d']:g}, "
        f"λ adv/text/sem/rec = {t['lambda_adv']:g}/{t['lambda_text']:g}/{t['lambda_sem']:g}/{t['lambda_rec']:g}, "
        f"temperature {t['temperature']:g}, {t['precision']}, device {summary['device']}",
        machine_markdown(summary["machine"]),
    ]
    if link_root is not None:
        rel = os.path.relpath(summary["results_dir_abs"], link_root)
        lines.append(
            f"- Files: [`table.csv`]({rel}/table.csv), [`summary.json`]({rel}/summary.json), "
            f"[`runs.csv`]({rel}/runs.csv); plots below"
        )
    return "\n".join(lines)


def results_section(results_root: Path, results_md: Path) -> str:
    """The ``ablation`` section of RESULTS.md, rebuilt from every ``<results_root>/*/summary.json``."""
    order = {"small": 0, "cpu": 1, "gpu": 2}
    summaries = []
    for path in sorted(results_root.glob("*/summary.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("config") == "quick":
            continue
        data["results_dir_abs"] = str(path.parent)
        summaries.append((order.get(data.get("config"), 9), data["config"], data, path.parent))
    parts = [
        "## Ablation (paper Table 3): Baseline → +SCAT → +textural → +semantic\n\n"
        "`benchmarks/ablation.py` trains the four rows with `examples/aotgan/train.py` (identical data, masks, "
        "initial weights, seeds and steps; the rows differ only by loss terms) and scores every final generator "
        "on one common held-out set (skimage photos `chelsea`/`rocket`, never seen in training). The paper "
        "reports, on CelebA at 256×256 with 40–60 % holes: mean L1 0.0593 → 0.0576 → 0.0561 → 0.0548, PSNR "
        "23.86 → 24.11 → 24.27 → 24.49, SSIM 0.822 → 0.825 → 0.832 → 0.836 (one run each, no spread given)."
    ]
    for _, config, data, folder in sorted(summaries, key=lambda t: (t[0], t[1])):
        rel = os.path.relpath(folder, results_md.parent)
        body = [f"### Config `{config}`", _run_facts(data, results_md.parent), table_markdown(data)]
        notes = folder / "notes.md"
        if notes.exists():
            body.append(notes.read_text(encoding="utf-8").strip())
        body.append(
            f"![training curves]({rel}/curves.png)\n\n![metrics per row]({rel}/metrics.png)\n\n"
            f"![samples]({rel}/samples.png)"
        )
        parts.append("\n\n".join(body))
    if not summaries:
        parts.append("No ablation results yet: run `python benchmarks/ablation.py --config small`.")
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/ablation.py",
        description="Table 3 ablation (Baseline, +SCAT, +textural, +semantic) with the reference trainer.",
    )
    p.add_argument("--config", choices=("small", "cpu", "gpu"), default="small", help="preset (default small)")
    p.add_argument("--probe-steps", type=int, default=None,
                   help="detectability probe steps per run (default: the preset's; 0: no probe)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="smoke run: 32x32, tiny nets, 2 steps, 1 seed")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: the preset's)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: the preset's)")
    p.add_argument("--objectives", nargs="+", default=[o for o, _ in ROWS], choices=[o for o, _ in ROWS],
                   help="rows to train, in Table 3's order (default: all four)")  # fmt: skip
    p.add_argument("--data", default="skimage", help="'skimage' (bundled photos) or a folder of images")
    p.add_argument("--device", default="auto", help="trainer device: auto | cpu | cuda")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="trainer precision")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default 1)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per job (default: 1 for small/quick, else cores // jobs)",
    )
    p.add_argument("--work-dir", default=None, help="training runs (default runs/ablation/<config>)")
    p.add_argument(
        "--results-dir",
        default=None,
        help="summaries, plots (default results/ablation/<config>; quick: <work-dir>/results)",
    )
    p.add_argument(
        "--results-md",
        default=None,
        help="RESULTS.md to update (default benchmarks/RESULTS.md; --quick: only if given)",
    )
    p.add_argument("--no-write-md", action="store_true", help="do not touch RESULTS.md")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's final checkpoint in the work dir")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs of the same configuration in the work dir")
    p.add_argument("--replot", action="store_true", help="re-render outputs of a finished sweep (no training)")
    p.add_argument("--dry-run", action="store_true", help="print and validate the planned runs, train nothing")
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> tuple[str, Preset, Path, Path, Path | None, list[dict[str, Any]]]:
    """``(config name, preset, work dir, results dir, RESULTS.md or None, run specs)``."""
    from examples.aotgan.train import TrainConfig

    name = "quick" if args.quick else args.config
    preset = PRESETS[name]
    work = Path(args.work_dir) if args.work_dir else ROOT / "runs" / "ablation" / name
    if args.results_dir:
        results = Path(args.results_dir)
    else:
        results = work / "results" if args.quick else RESULTS_DIR / "ablation" / name
    results_md: Path | None = Path(args.results_md) if args.results_md else (None if args.quick else RESULTS_MD)
    if args.no_write_md:
        results_md = None
    if args.jobs < 1:
        raise SystemExit("--jobs: expected a positive int")
    threads = args.threads or preset.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    seeds = tuple(args.seeds) if args.seeds else preset.seeds
    objectives = [o for o, _ in ROWS if o in args.objectives]
    specs = []
    for seed in seeds:  # seed-major: a partial sweep has complete rows for its first seeds
        for objective in objectives:
            out = work / _dirname(objective) / f"seed{seed}"
            train = train_config_dict(preset, objective, seed, out, args, threads)
            TrainConfig(**train).validate()
            specs.append({"train": train, "threads": threads, "reuse": args.reuse,
                          "keep_checkpoints": args.keep_checkpoints,
                          "probe_steps": preset.probe_steps if args.probe_steps is None else args.probe_steps,
                          "probe_images": preset.probe_images})  # fmt: skip
    return name, preset, work, results, results_md, specs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = command_line(None if argv is None else [str(HERE / "ablation.py"), *argv])
    name, preset, work, results_dir, results_md, specs = plan(args)
    threads = specs[0]["threads"]
    print(f"ablation {name}: {len(specs)} runs ({len({s['train']['seed'] for s in specs})} seeds x "
          f"{len({s['train']['objective'] for s in specs})} rows), {specs[0]['train']['steps']} steps each, "
          f"{args.jobs} job(s) x {threads} thread(s); work dir {work}, results {results_dir}", flush=True)  # fmt: skip
    if args.replot:
        return replot(work, results_dir, results_md)
    if args.dry_run:
        for spec in specs:
            print(json.dumps({k: spec["train"][k] for k in ("objective", "seed", "out", "size", "steps")}))
        return 0
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []

    def done(summary: dict[str, Any]) -> None:
        runs.append(summary)
        m = {b["name"]: b for b in summary["metrics"]["buckets"]}.get("40-60%") or summary["metrics"]["buckets"][-1]
        print(f"  [{len(runs)}/{len(specs)}] {summary['objective']:<9} seed {summary['seed']}: "
              f"{summary['wall_s']:.0f} s{' (reused)' if summary.get('reused') else ''}, holes {m['name']}: "
              f"L1 {m['l1']:.4f} PSNR {m['psnr']:.2f} SSIM {m['ssim']:.3f} probe AUROC {_fmt(m.get('probe_auroc'), 3)}"
              f"  [{time.perf_counter() - started:.0f} s]",
              flush=True)  # fmt: skip

    torch.set_num_threads(threads)  # the training processes' setting (recorded in the machine description)
    if args.jobs == 1:
        for spec in specs:
            done(run_one(spec))
    else:
        with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
            for future in cf.as_completed([pool.submit(run_one, spec) for spec in specs]):
                done(future.result())
    wall = time.perf_counter() - started

    first = specs[0]["train"]
    meta = {
        "config": name,
        "description": preset.description,
        "command": command,
        "wall_s": round(wall, 1),
        "jobs": args.jobs,
        "threads": threads,
        "device": args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
        "machine": machine_info("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"),
        "objectives": [o for o, _ in ROWS if o in args.objectives],
        "eval_images": preset.eval_images,
        "eval_seed": EVAL_SEED,
        "train_config": {k: v for k, v in first.items() if k not in ("out", "objective", "seed")},
    }
    summary = build_summary(meta, runs)
    render(summary, work, results_dir, results_md)
    print(f"\n{table_markdown(summary)}\nwall time {wall / 60:.1f} min; wrote {results_dir}"
          + (f" and {results_md}" if results_md else ""))  # fmt: skip
    return 0


def build_summary(meta: Mapping[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``meta`` (config, command, wall time, machine, ...) plus the runs and everything computed from them."""
    objectives = list(meta["objectives"])
    results: dict[str, dict[int, Any]] = {o: {} for o in objectives}
    for r in runs:
        results[r["objective"]][r["seed"]] = r["metrics"]
    runs = sorted(runs, key=lambda r: (objectives.index(r["objective"]), r["seed"]))
    return {
        **meta,
        "reused": any(r.get("reused") for r in runs),
        "seeds": sorted({r["seed"] for r in runs}),
        "aggregate": aggregate(results),
        "paired_previous": paired_differences(results, "previous"),
        "paired_baseline": paired_differences(results, "baseline") if "baseline" in results else [],
        "ordering": ordering_check(results),
        "runs": runs,
    }


def render(summary: dict[str, Any], work: Path, results_dir: Path, results_md: Path | None) -> None:
    """Write the tables, plots, sample grid and (unless ``results_md`` is None) the RESULTS.md section."""
    objectives = summary["objectives"]
    write_tables(summary, results_dir)
    plot_curves(summary["runs"], objectives, results_dir / "curves.png")
    plot_metrics(summary, results_dir / "metrics.png")
    grid_seed = summary["seeds"][0]
    corrupted, truth = _grid_inputs({**summary["runs"][0]["train"]})
    columns = [("corrupted", corrupted)]
    for o in objectives:
        columns.append((SHORT.get(o, o), np.load(work / _dirname(o) / f"seed{grid_seed}" / "grid.npy")))
    columns.append(("ground truth", truth))
    plot_samples(columns, results_dir / "samples.png", grid_seed)
    if results_md is not None:
        write_section("ablation", results_section(results_dir.parent, results_md), results_md)


def replot(work: Path, results_dir: Path, results_md: Path | None) -> int:
    """Rebuild every output from ``results_dir/summary.json`` and the runs' ``ablation_run.json`` (no training);
    the recorded command, wall time and machine are kept."""
    old = json.loads((results_dir / "summary.json").read_text(encoding="utf-8"))
    runs = []
    for r in old["runs"]:
        path = work / _dirname(r["objective"]) / f"seed{r['seed']}" / "ablation_run.json"
        runs.append({**json.loads(path.read_text(encoding="utf-8")), "reused": r.get("reused", False)})
    derived = ("reused", "seeds", "aggregate", "paired_previous", "paired_baseline", "ordering", "runs")
    summary = build_summary({k: v for k, v in old.items() if k not in derived}, runs)
    render(summary, work, results_dir, results_md)
    print(f"{table_markdown(summary)}\nre-rendered {results_dir}" + (f" and {results_md}" if results_md else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
