"""Benchmark: one full training step with SCAT + contrastive losses, fast vs naive vs plain.

Three variants of the same step, on networks shaped like the released ones (AOT generator, two-headed
U-Net discriminator, projection head 1024 -> 256 -> 256):

* ``naive``: :class:`scatloss.SCATCriterion` with ``mode="naive"``, the release's computation (the
  discriminator runs on the composite, the ground truth, the corrupted input and the ``B * M`` negatives,
  every time in full and with autograd);
* ``fast``: :class:`scatloss.SCATCriterion` (default mode), the same gradients (checked once at the
  start, float32, D in eval mode) with one autograd discriminator forward;
* ``plain``: a hinge-GAN step with the same networks, adversarial + L1 only (``terms=("adv", "rec")``),
  the floor that the SCAT/contrastive overhead is measured against.

The *generator step* is G forward + ``criterion.generator_step`` + backward + optimiser step; the
*discriminator step* is ``criterion.discriminator_step`` on the detached prediction + backward +
optimiser step. Times are medians over ``--repeats`` rounds after ``--warmup`` rounds, all in one
process, with the variants' order rotated every round.

Peak memory of a step is the high-water mark *above the level before the step* (models, optimiser
state, inputs and the previous step's leftovers excluded):

* CUDA: ``torch.cuda.max_memory_allocated()`` minus ``torch.cuda.memory_allocated()`` before the step.
* CPU, "tensors": the peak of live tensor bytes allocated through PyTorch's CPU allocator during one
  step, from the allocation events of ``torch.profiler.profile(profile_memory=True)`` (deterministic,
  blind to allocator caching and to memory that does not go through c10, e.g. oneDNN's own buffers).
* CPU, "RSS": each variant in a fresh subprocess: build, one warm-up step, ``malloc_trim``, then the
  resident set size ``VmRSS`` as the baseline, reset the kernel's high-water mark (``/proc/self/clear_refs``
  = 5), one step, ``VmHWM - baseline`` (everything the process really touched; noisier).

Run ``python benchmarks/bench_step.py`` for the issue's configuration (128x128, batch 8, M = 8) and
``--quick`` for a smoke run on tiny networks. Results go to ``benchmarks/RESULTS.md`` (section
``bench_step:<device>``) and ``benchmarks/results/bench_step_<device>.csv``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import dataclasses
import gc
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _common import (  # noqa: E402
    RESULTS_DIR,
    RESULTS_MD,
    command_line,
    machine_info,
    machine_markdown,
    markdown_table,
    median,
    synchronize,
    timed,
    write_csv,
    write_section,
)

from examples.aotgan.networks import AOTGenerator  # noqa: E402
from scatloss import functional as SF  # noqa: E402
from scatloss.criterion import SCATCriterion  # noqa: E402
from scatloss.losses import InpaintingObjective  # noqa: E402
from scatloss.masks import MaskGenerator  # noqa: E402
from scatloss.nets import UNetDiscriminator  # noqa: E402
from scatloss.utils import peak_memory_bytes  # noqa: E402

VARIANTS: tuple[str, ...] = ("plain", "fast", "naive")
TARGETS = {
    "speedup": 1.7,  # naive / fast generator-step time, at least
    "memory": 0.65,  # fast / naive generator-step peak memory, at most
    "overhead": 0.10,  # (fast - plain) / plain generator-step time, at most
}


@dataclass
class Config:
    """One benchmark configuration (the defaults are the issue's: released network shapes, 128x128, B = M = 8)."""

    size: int = 128
    batch: int = 8
    negatives: str | int = "batch"
    base_channels: int = 64  # generator width (AOT-GAN: 64)
    num_blocks: int = 8  # AOT blocks (AOT-GAN: 8)
    d_base_channels: int = 64
    d_depth: int = 5
    chunk_size: int = 32
    repeats: int = 5
    warmup: int = 1
    device: str = "cpu"
    seed: int = 0
    check_grads: bool = True
    memory: tuple[str, ...] = ("tensors", "rss")
    variants: tuple[str, ...] = VARIANTS
    breakdown: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def m(self) -> int:
        return self.batch if self.negatives == "batch" else int(self.negatives)


QUICK = {
    "size": 32,
    "batch": 2,
    "base_channels": 8,
    "num_blocks": 1,
    "d_base_channels": 8,
    "d_depth": 3,
    "repeats": 2,
    "warmup": 1,
}


# ----------------------------------------------------------------------------------------------
# setup
# ----------------------------------------------------------------------------------------------


@dataclass
class Setup:
    G: torch.nn.Module
    D: torch.nn.Module
    criteria: dict[str, SCATCriterion]
    opt_g: dict[str, torch.optim.Optimizer]
    opt_d: dict[str, torch.optim.Optimizer]
    image: torch.Tensor
    hole: torch.Tensor


def build(cfg: Config, variants: Sequence[str] | None = None) -> Setup:
    """Networks, one criterion and one pair of optimisers per variant, and a fixed batch."""
    variants = tuple(cfg.variants if variants is None else variants)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    G = AOTGenerator(in_channels=4, base_channels=cfg.base_channels, num_blocks=cfg.num_blocks).to(device)
    D = UNetDiscriminator(base_channels=cfg.d_base_channels, depth=cfg.d_depth).to(device)
    head = InpaintingObjective(in_features=D.feature_dim).to(device)  # released head: 1024 -> 256 -> 256
    criteria: dict[str, SCATCriterion] = {}
    for v in variants:
        if v == "plain":
            criteria[v] = SCATCriterion(D, terms=("adv", "rec"), chunk_size=cfg.chunk_size)
        else:
            criteria[v] = SCATCriterion(
                D,
                textural_layers=D.textural_layers,
                semantic_layer=D.semantic_layer,
                objective=copy.deepcopy(head),
                negatives=cfg.negatives,  # type: ignore[arg-type]
                seed=cfg.seed,
                chunk_size=cfg.chunk_size,
                mode=v,  # type: ignore[arg-type]
            )
    opt_g = {
        v: torch.optim.Adam([*G.parameters(), *c.parameters()], lr=1e-4, betas=(0.5, 0.999))
        for v, c in criteria.items()
    }
    opt_d = {v: torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.999)) for v in criteria}
    gen = torch.Generator().manual_seed(cfg.seed)
    image = (torch.rand(cfg.batch, 3, cfg.size, cfg.size, generator=gen) * 2 - 1).to(device)
    hole = MaskGenerator(cfg.size, cfg.size, seed=cfg.seed).sample(cfg.batch).to(device)
    return Setup(G, D, criteria, opt_g, opt_d, image, hole)


def generator_step(s: Setup, variant: str) -> torch.Tensor:
    """G forward + criterion.generator_step + backward + optimiser step; returns the detached prediction."""
    prediction = s.G(SF.corrupt(s.image, s.hole, fill=1.0), s.hole)
    terms = s.criteria[variant].generator_step(prediction, s.image, s.hole)
    opt = s.opt_g[variant]
    opt.zero_grad(set_to_none=True)
    terms["total"].backward()
    opt.step()
    return prediction.detach()


def discriminator_step(s: Setup, variant: str, prediction: torch.Tensor) -> None:
    """criterion.discriminator_step + backward + optimiser step."""
    terms = s.criteria[variant].discriminator_step(prediction, s.image, s.hole)
    opt = s.opt_d[variant]
    opt.zero_grad(set_to_none=True)
    terms["total"].backward()
    opt.step()


# ----------------------------------------------------------------------------------------------
# gradient check
# ----------------------------------------------------------------------------------------------


def check_gradients(s: Setup) -> dict[str, float]:
    """Fast vs naive generator-step gradients (prediction and projection head), D in eval mode.

    Returns the largest relative difference ``|g_fast - g_naive| / |g_naive|`` (2-norms) over the
    prediction's gradient and every head parameter's, and the largest absolute difference.
    """
    fast, naive = s.criteria["fast"], s.criteria["naive"]
    naive_head = copy.deepcopy(fast.objective)
    saved_objective = naive.objective
    naive.objective = naive_head  # identical head weights in both
    was_training = s.D.training
    s.D.eval()
    try:
        with torch.no_grad():
            prediction = s.G(SF.corrupt(s.image, s.hole, fill=1.0), s.hole)
        grads: dict[str, list[torch.Tensor]] = {}
        for name, crit in (("fast", fast), ("naive", naive)):
            p = prediction.clone().requires_grad_(True)
            for q in crit.parameters():
                q.grad = None
            crit.generator_step(p, s.image, s.hole)["total"].backward()
            grads[name] = [p.grad, *(q.grad for q in crit.parameters())]  # type: ignore[list-item]
            for q in crit.parameters():
                q.grad = None
        pairs = list(zip(grads["fast"], grads["naive"], strict=True))
        rel = max(float((a - b).norm() / b.norm().clamp_min(1e-30)) for a, b in pairs)
        absd = max(float((a - b).abs().max()) for a, b in pairs)
        head_nonzero = all(float(g.abs().sum()) > 0 for g in grads["fast"][1:])
    finally:
        naive.objective = saved_objective
        s.D.train(was_training)
        s.D.zero_grad(set_to_none=True)
    return {"grad_rel_diff": rel, "grad_abs_diff": absd, "head_grad_nonzero": float(head_nonzero)}


# ----------------------------------------------------------------------------------------------
# memory
# ----------------------------------------------------------------------------------------------


def _status_kib(key: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _peak_rss_bytes(fn: Any) -> float:
    """``VmHWM - VmRSS`` around ``fn()``, with freed heap returned to the OS and the high-water mark reset first."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    fn()
    return float(_status_kib("VmHWM") - base) * 1024


def rss_probe(cfg: Config, variant: str) -> dict[str, float]:
    """In this (fresh) process: build one variant, one warm-up G step, then the RSS peak of one G step."""
    s = build(cfg, variants=(variant,))
    generator_step(s, variant)  # allocates gradients and optimiser state
    return {"g_rss": _peak_rss_bytes(lambda: generator_step(s, variant))}


def _rss_in_subprocess(cfg: Config, variant: str) -> dict[str, float]:
    payload = json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if k != "extra"})
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_rss-probe",
        variant,
        "--_config",
        payload,
        "--threads",
        str(torch.get_num_threads()),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=str(ROOT))
    if done.returncode != 0:
        raise RuntimeError(f"RSS probe for {variant!r} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rss_supported() -> bool:
    return sys.platform.startswith("linux") and Path("/proc/self/clear_refs").exists()


# ----------------------------------------------------------------------------------------------
# where the time goes
# ----------------------------------------------------------------------------------------------

PHASES: tuple[str, ...] = (
    "G forward",
    "D on the composite (autograd) + glue",
    "feature passes: x, x~, negatives",
    "loss terms",
    "backward",
    "optimiser step",
)


def breakdown(s: Setup, variant: str) -> dict[str, float]:
    """Seconds per phase of one generator step (criterion methods wrapped with timers for this one call)."""
    device = s.image.device
    crit = s.criteria[variant]
    acc = dict.fromkeys(PHASES, 0.0)

    def wrap(fn: Any, phase: str) -> Any:
        def inner(*args: Any, **kwargs: Any) -> Any:
            t, out = timed(lambda: fn(*args, **kwargs), device)
            acc[phase] += t
            return out

        return inner

    patched = {
        "_extract_fast": (crit, wrap(crit._extract_fast, PHASES[2])),
        "_extract_naive": (crit, wrap(crit._extract_naive, PHASES[2])),
        "forward": (crit.objective, wrap(crit.objective.forward, PHASES[3])),
    }
    for name, (obj, fn) in patched.items():
        object.__setattr__(obj, name, fn)
    try:
        t, prediction = timed(lambda: s.G(SF.corrupt(s.image, s.hole, fill=1.0), s.hole), device)
        acc[PHASES[0]] = t
        t, terms = timed(lambda: crit.generator_step(prediction, s.image, s.hole), device)
        acc[PHASES[1]] = t - acc[PHASES[2]] - acc[PHASES[3]]
        s.opt_g[variant].zero_grad(set_to_none=True)
        acc[PHASES[4]], _ = timed(lambda: terms["total"].backward(), device)
        acc[PHASES[5]], _ = timed(lambda: s.opt_g[variant].step(), device)
    finally:
        for name, (obj, _) in patched.items():
            object.__delattr__(obj, name)
    acc["total"] = sum(acc[p] for p in PHASES)
    return acc


# ----------------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------------


def run(cfg: Config, log: Any = print) -> dict[str, Any]:
    """Run one configuration; returns per-variant medians and peaks, the ratios and the gradient check."""
    device = torch.device(cfg.device)
    s = build(cfg)
    result: dict[str, Any] = {"config": cfg, "variants": {}}
    if cfg.check_grads and {"fast", "naive"} <= set(cfg.variants):
        result["grad_check"] = check_gradients(s)
        log(f"gradient check (float32, D eval): {result['grad_check']}")

    times: dict[str, dict[str, list[float]]] = {v: {"g": [], "d": []} for v in cfg.variants}
    variants = list(cfg.variants)
    for r in range(cfg.warmup + cfg.repeats):
        k = r % len(variants)
        done = []
        for v in variants[k:] + variants[:k]:
            tg, pred = timed(lambda v=v: generator_step(s, v), device)
            td, _ = timed(lambda v=v, pred=pred: discriminator_step(s, v, pred), device)
            done.append(f"{v} G {tg:.3f} s D {td:.3f} s")
            if r >= cfg.warmup:
                times[v]["g"].append(tg)
                times[v]["d"].append(td)
        tag = " (warm-up)" if r < cfg.warmup else ""
        log(f"round {r + 1}/{cfg.warmup + cfg.repeats}{tag}: " + "; ".join(done))

    for v in variants:
        row: dict[str, Any] = {
            "g_time": median(times[v]["g"]),
            "d_time": median(times[v]["d"]),
            "g_times": times[v]["g"],
            "d_times": times[v]["d"],
        }
        row["step_time"] = median(g + d for g, d in zip(times[v]["g"], times[v]["d"], strict=True))
        result["variants"][v] = row

    if cfg.breakdown:
        result["breakdown"] = {v: breakdown(s, v) for v in variants}
        log(f"breakdown: {result['breakdown']}")

    # Peak memory, one measured step per variant after everything above (optimiser state exists).
    for v in variants:
        holder: dict[str, torch.Tensor] = {}

        def g(v: str = v, holder: dict[str, torch.Tensor] = holder) -> None:
            holder["pred"] = generator_step(s, v)

        def d(v: str = v, holder: dict[str, torch.Tensor] = holder) -> None:
            discriminator_step(s, v, holder["pred"])

        row = result["variants"][v]
        log(f"peak memory: {v}")
        if device.type == "cuda" or "tensors" in cfg.memory:
            row["g_mem"], row["d_mem"] = float(peak_memory_bytes(g, device)), float(peak_memory_bytes(d, device))
        synchronize(device)
    if device.type == "cpu" and "rss" in cfg.memory and _rss_supported():
        del s
        gc.collect()
        for v in variants:
            log(f"RSS probe (fresh process): {v}")
            result["variants"][v].update(_rss_in_subprocess(cfg, v))
    result["ratios"] = ratios(result["variants"])
    return result


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    """fast/naive time and memory, and each variant's overhead over plain."""
    out: dict[str, float] = {}

    def ratio(a: str, b: str, key: str) -> float:
        if a in rows and b in rows and key in rows[a] and key in rows[b] and rows[b][key] > 0:
            return rows[a][key] / rows[b][key]
        return float("nan")

    for key in ("g_time", "step_time", "g_mem", "g_rss"):
        out[f"fast/naive {key}"] = ratio("fast", "naive", key)
        out[f"fast/plain {key}"] = ratio("fast", "plain", key)
        out[f"naive/plain {key}"] = ratio("naive", "plain", key)
    return out


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def _mib(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 2**20:,.0f}"


def _pct(r: float) -> str:
    return "n/a" if r != r else f"{(r - 1) * 100:+.0f}%"


def _x(r: float) -> str:
    return "n/a" if r != r else f"{r:.2f}"


def report(result: dict[str, Any], command: str) -> tuple[str, list[dict[str, Any]]]:
    """The Markdown section and the CSV rows of one run."""
    cfg: Config = result["config"]
    rows, csv_rows = [], []
    for v, r in result["variants"].items():
        rows.append(
            [
                v,
                f"{r['g_time']:.3f}",
                f"{r['d_time']:.3f}",
                f"{r['step_time']:.3f}",
                _mib(r.get("g_mem")),
                _mib(r.get("g_rss")),
                _mib(r.get("d_mem")),
            ]
        )
        csv_rows.append(
            {
                "variant": v,
                **{k: val for k, val in r.items() if not k.endswith("_times")},
                "g_times": " ".join(f"{t:.4f}" for t in r["g_times"]),
                "d_times": " ".join(f"{t:.4f}" for t in r["d_times"]),
                **{k: val for k, val in dataclasses.asdict(cfg).items() if k not in ("memory", "variants", "extra")},
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    q = result["ratios"]
    speed = 1 / q["fast/naive g_time"] if q["fast/naive g_time"] == q["fast/naive g_time"] else float("nan")
    mem_key = "g_mem" if q["fast/naive g_mem"] == q["fast/naive g_mem"] else "g_rss"
    checks = [
        [
            "generator step speed-up, naive/fast",
            f"{speed:.2f}x",
            f">= {TARGETS['speedup']}x",
            _met(speed >= TARGETS["speedup"]),
        ],
        [
            f"generator step peak memory, fast/naive ({'tensors' if mem_key == 'g_mem' else 'RSS'})",
            _x(q[f"fast/naive {mem_key}"]),
            f"<= {TARGETS['memory']}",
            _met(q[f"fast/naive {mem_key}"] <= TARGETS["memory"]),
        ],
        [
            "generator step overhead over plain, fast",
            _pct(q["fast/plain g_time"]),
            f"<= +{TARGETS['overhead']:.0%}",
            _met(q["fast/plain g_time"] - 1 <= TARGETS["overhead"]),
        ],
        ["generator step overhead over plain, naive", _pct(q["naive/plain g_time"]), "(about +80% in the issue)", ""],
        ["full step (G + D) speed-up, naive/fast", _x(1 / q["fast/naive step_time"]), "", ""],
        [
            "full step (G + D) overhead over plain, fast / naive",
            f"{_pct(q['fast/plain step_time'])} / {_pct(q['naive/plain step_time'])}",
            "",
            "",
        ],
        ["generator step peak memory (RSS), fast/naive", _x(q["fast/naive g_rss"]), "", ""],
    ]
    lines = [
        f"### bench_step on {cfg.device}: {cfg.size}x{cfg.size}, batch {cfg.batch}, M = {cfg.m} "
        f"(negatives={cfg.negatives!r})",
        "",
        f"- Command: `{command}`",
        machine_markdown(machine_info(cfg.device)),
        f"- Networks: AOTGenerator(base {cfg.base_channels}, {cfg.num_blocks} blocks), "
        f"UNetDiscriminator(base {cfg.d_base_channels}, depth {cfg.d_depth}), projection head "
        f"{min(cfg.d_base_channels * 2 ** (cfg.d_depth - 1), 1024)} -> 256 -> 256; float32; "
        f"chunk_size {cfg.chunk_size}",
        f"- Timing: median of {cfg.repeats} rounds after {cfg.warmup} warm-up round(s), one process, "
        "variants interleaved (order rotated each round)",
    ]
    if "grad_check" in result:
        gc_ = result["grad_check"]
        lines.append(
            f"- Gradient check (float32, D in eval mode, prediction + projection head): fast vs naive max relative "
            f"difference {gc_['grad_rel_diff']:.2e} (max abs {gc_['grad_abs_diff']:.2e}); head gradients non-zero: "
            f"{bool(gc_['head_grad_nonzero'])}"
        )
    lines += [
        "",
        markdown_table(
            [
                "variant",
                "G step s",
                "D step s",
                "G + D s",
                "G peak MiB (tensors)",
                "G peak MiB (RSS)",
                "D peak MiB (tensors)",
            ],
            rows,
        ),
        "",
        markdown_table(["ratio", "measured", "target", ""], checks),
        "",
        "Peak memory = high-water mark above the level before the step. *tensors*: live CPU tensor bytes from "
        "`torch.profiler` allocation events (CUDA: `max_memory_allocated`); *RSS*: each variant in a fresh "
        "process, `VmHWM - VmRSS` around one generator step after a warm-up step and `malloc_trim` (includes allocator "
        "slack and oneDNN buffers).",
    ]
    if "breakdown" in result:
        bd = result["breakdown"]
        names = list(bd)
        lines += [
            "",
            "Where one generator step's time goes (seconds, a single extra step per variant, `--breakdown`):",
            "",
            markdown_table(["phase", *names], [[p, *(f"{bd[v][p]:.2f}" for v in names)] for p in (*PHASES, "total")]),
        ]
    return "\n".join(lines), csv_rows


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def _negatives(text: str) -> str | int:
    return "batch" if text == "batch" else int(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=None, help="image height = width (default 128; quick 32)")
    p.add_argument("--batch", type=int, default=None, help="batch size B (default 8; quick 2)")
    p.add_argument("--negatives", type=_negatives, default="batch", help="'batch' (M = B, the release) or an int M")
    p.add_argument("--base-channels", type=int, default=None, help="generator width (default 64)")
    p.add_argument("--num-blocks", type=int, default=None, help="AOT blocks (default 8)")
    p.add_argument("--d-base-channels", type=int, default=None, help="discriminator width (default 64)")
    p.add_argument("--d-depth", type=int, default=None, help="discriminator depth (default 5)")
    p.add_argument("--chunk-size", type=int, default=32, help="images per no-grad feature pass")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 1)")
    p.add_argument("--device", default="cpu", help="'cpu', 'cuda', or a comma list such as 'cpu,cuda'")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--memory", default="tensors,rss", help="CPU memory methods: tensors, rss (comma list) or none")
    p.add_argument("--no-grad-check", action="store_true", help="skip the fast-vs-naive gradient check")
    p.add_argument("--quick", action="store_true", help="tiny networks and sizes: a smoke run")
    p.add_argument("--breakdown", action="store_true", help="also time the phases of one generator step")
    p.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md or results/")
    p.add_argument("--_rss-probe", dest="rss_probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_config", dest="config_json", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace, device: str) -> Config:
    base = dict(QUICK) if args.quick else {}
    for key in ("size", "batch", "base_channels", "num_blocks", "d_base_channels", "d_depth", "repeats", "warmup"):
        value = getattr(args, key)
        if value is not None:
            base[key] = value
    memory = tuple(m for m in args.memory.split(",") if m and m != "none")
    return Config(
        negatives=args.negatives,
        chunk_size=args.chunk_size,
        device=device,
        check_grads=not args.no_grad_check,
        memory=memory,
        breakdown=args.breakdown,
        **base,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.rss_probe is not None:  # internal: one variant in a fresh process
        cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args.config_json).items()})
        print(json.dumps(rss_probe(cfg, args.rss_probe)))
        return 0
    command = command_line(["benchmarks/bench_step.py", *(sys.argv[1:] if argv is None else argv)])
    for device in [d.strip() for d in args.device.split(",") if d.strip()]:
        if device.startswith("cuda") and not torch.cuda.is_available():
            print(f"skipping {device}: CUDA is not available")
            continue
        cfg = config_from_args(args, device)
        result = run(cfg)
        body, csv_rows = report(result, command)
        print(body)
        if not args.no_write:
            name = f"bench_step:{torch.device(device).type}" + (":quick" if args.quick else "")
            write_section(name, body, RESULTS_MD)
            write_csv(
                RESULTS_DIR / f"bench_step_{torch.device(device).type}{'_quick' if args.quick else ''}.csv", csv_rows
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
