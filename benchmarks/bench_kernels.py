"""Benchmark: the fused SCAT / InfoNCE kernels (scatloss.ops) against the PyTorch reference, eager and compiled.

For every case (SCAT on discriminator-sized logit maps with larger masks, InfoNCE over a grid of
``(B, M, D)``) and implementation, in one process:

* ``eager``: the equation-form reference, :mod:`scatloss.reference` (mask resampled with
  :func:`scatloss.masks.resample_hole` first), plain autograd;
* ``compiled``: ``torch.compile`` of that same reference call (Inductor, ``dynamic=False``: one graph per shape);
* ``default``: :mod:`scatloss.functional` with ``backend="auto"``, what a user gets: the Triton kernels on
  CUDA, the memory-lean autograd functions of :mod:`scatloss.ops.torch_fused` elsewhere;
* ``triton``: ``backend="triton"`` (CUDA only; on CPU Triton only runs interpreted, which says nothing
  about speed).

Passes: ``fwd`` (forward with autograd recording, as in training), ``bwd`` (``backward()`` of a fresh
forward, timed alone) and ``fwd+bwd``. Every input that the training step differentiates requires grad
(both logit maps for the segmenter, the fake map for the generator, all three InfoNCE inputs).
Each round times every pass of every implementation as a loop of back-to-back calls, long enough that one
sample takes at least ``--min-sample-ms`` for the eager baseline (the same call count for every implementation
of a case), and reports the time per call; times are medians (CUDA) or the best (CPU) over rounds after
warm-up rounds (compilation happens there), the implementations' order rotated each round; CUDA times come
from ``torch.cuda.Event`` pairs. Hole-value checks are switched
off (``set_value_checks(False)``): they are one host read-back per call, the same for every implementation.

Peak memory is the high-water mark *above* the level before the pass (inputs excluded; the gradients the
pass creates included): on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak of live tensor bytes
from ``torch.profiler`` allocation events (``scatloss.utils.peak_memory_bytes``).

Run ``python benchmarks/bench_kernels.py`` (full grid) or ``--quick`` (a few minutes on a laptop CPU).
Writes ``benchmarks/results/kernels_<device>.csv`` and the ``bench_kernels:<device>`` section of
``benchmarks/RESULTS.md`` (``--quick``: ``kernels_<device>_quick.csv`` and ``bench_kernels:<device>:quick``).
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    write_csv,
    write_section,
)

import scatloss.functional as SF  # noqa: E402
from scatloss import reference as R  # noqa: E402
from scatloss._validation import set_value_checks  # noqa: E402
from scatloss.masks import resample_hole  # noqa: E402
from scatloss.ops import triton_available  # noqa: E402
from scatloss.utils import peak_memory_bytes  # noqa: E402

PASSES = ("fwd", "bwd", "fwd+bwd")


# ----------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    op: str  # "scat_segmenter" | "scat_generator" | "infonce"
    shape: tuple[int, ...]  # SCAT: (B, h, w, H, W); InfoNCE: (B, M, D)
    kind: str = "hinge"

    @property
    def label(self) -> str:
        if self.op == "infonce":
            return "B={} M={} D={}".format(*self.shape)
        B, h, w, H, W = self.shape
        return f"{self.kind} B={B} {h}x{w} / mask {H}x{W}"

    def inputs(self, device: torch.device, dtype: torch.dtype) -> tuple[list[torch.Tensor], list[int]]:
        """The tensors and the indices of those that require grad."""
        g = torch.Generator(device="cpu").manual_seed(0)
        if self.op == "infonce":
            B, M, D = self.shape
            ts = [torch.randn(B, D, generator=g), torch.randn(B, D, generator=g), torch.randn(B, M, D, generator=g)]
            return [t.to(device, dtype) for t in ts], [0, 1, 2]
        B, h, w, H, W = self.shape
        fake = torch.randn(B, 1, h, w, generator=g).to(device, dtype)
        hole = (torch.rand(B, 1, H, W, generator=g) > 0.5).to(device, torch.float32)
        if self.op == "scat_generator":
            return [fake, hole], [0]
        return [fake, torch.randn(B, 1, h, w, generator=g).to(device, dtype), hole], [0, 1]

    def min_bytes(self, pass_: str, dtype: torch.dtype) -> int:
        """DRAM traffic a fused implementation cannot avoid for ``pass_`` (inputs read once, gradients written once;
        a fused SCAT forward saves ``dL/dz`` and its backward scales it: read + write per differentiated map)."""
        e = torch.empty((), dtype=dtype).element_size()
        if self.op == "infonce":
            B, M, D = self.shape
            fwd = (2 * B * D + B * M * D) * e  # anchor, positive, negatives read once
            bwd = (2 * B * D + B * M * D) * e + (2 * B * D + B * M * D) * e  # read again, write every gradient
        else:
            B, h, w, H, W = self.shape
            n, maps = B * h * w, 2 if self.op == "scat_segmenter" else 1  # maps: differentiated logit maps
            fwd = maps * n * e + B * H * W * 4 + maps * n * e  # logits, float32 mask, saved derivatives
            bwd = maps * 2 * n * e
        return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[pass_]

    def loss(self, backend: str) -> Callable[..., torch.Tensor]:
        if backend == "reference":
            return self.reference()
        if self.op == "infonce":
            return lambda a, p, n: SF.semantic_contrastive_loss(a, p, n, backend=backend)
        if self.op == "scat_generator":
            return lambda f, h: SF.scat_generator_loss(f, h, kind=self.kind, backend=backend)
        return lambda f, r, h: SF.scat_segmenter_loss(f, r, h, kind=self.kind, backend=backend)

    def reference(self) -> Callable[..., torch.Tensor]:
        """The equation-form baseline (:mod:`scatloss.reference`), mask resampling included."""
        if self.op == "infonce":
            return lambda a, p, n: R.semantic_contrastive_loss(a, p, n, 0.07, True, "mean")

        def hole_at(h: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return resample_hole(h, like.shape[-2:], "area").to(like.dtype)

        if self.op == "scat_generator":
            return lambda f, h: R.scat_generator_loss(f, hole_at(h, f), self.kind, "mean")
        return lambda f, r, h: R.scat_segmenter_loss(f, r, hole_at(h, f), self.kind, "mean")


def _scat(op: str, sizes: Sequence[tuple[int, int]], kinds: Sequence[str] = ("hinge",)) -> list[Case]:
    return [Case(op, (8, s, s, m, m), kind) for s, m in sizes for kind in kinds]


def cases(quick: bool) -> list[Case]:
    if quick:  # a few minutes on a 2-core CPU, compilation included
        return [
            *_scat("scat_segmenter", [(64, 256), (256, 1024)]),
            *_scat("scat_generator", [(256, 1024)]),
            Case("infonce", (8, 8, 256)),
            Case("infonce", (64, 64, 256)),
        ]
    # discriminator maps of B = 8 images: 64^2 ... 512^2 logits, masks up to 4x larger (1024^2 at most)
    return [
        *_scat("scat_segmenter", [(64, 256), (128, 512), (256, 1024), (512, 1024), (256, 256)]),
        *_scat("scat_segmenter", [(256, 1024)], kinds=("bce", "ls")),
        *_scat("scat_generator", [(64, 256), (256, 1024), (512, 1024)]),
        # (8, 8, 256) is the released code's shape (M = B, 256-d head); the rest spans B, M and D
        *[
            Case("infonce", s)
            for s in [(8, 8, 256), (8, 8, 1024), (64, 64, 256), (256, 256, 256), (512, 512, 1024),
                      (4096, 8, 128), (4096, 64, 256), (8, 4096, 128), (64, 4096, 1024), (1024, 1024, 128)]
        ],
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------


# nominal DRAM bandwidth (GB/s, vendor data sheets) by the name torch reports; the first matching key wins
NOMINAL_GBPS = {
    "H100 NVL": 3900, "H100 PCIe": 2000, "H100": 3350, "H200": 4800, "GH200": 4000, "B200": 8000,
    "A100-SXM4-80GB": 2039, "A100 80GB PCIe": 1935, "A100": 1555, "L40S": 864, "L40": 864, "L4": 300,
    "A10G": 600, "A10": 600, "RTX 4090": 1008, "RTX 3090": 936, "V100": 900, "T4": 320,
}  # fmt: skip


def nominal_bandwidth_gbps(name: str) -> float | None:
    for key, gbps in NOMINAL_GBPS.items():
        if key in name:
            return float(gbps)
    return None


def copy_bandwidth_gbps(device: torch.device, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Achievable DRAM bandwidth: a device-to-device ``copy_`` of ``nbytes`` (read + write counted), median."""
    if device.type != "cuda":
        raise ValueError(f"device: copy bandwidth is measured on CUDA only, got {device}")
    nbytes = min(nbytes, torch.cuda.mem_get_info(device)[0] // 4)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * src.numel() * 4 / median(times) / 1e9


def implementations(case: Case, device: torch.device, compiled: bool) -> dict[str, Callable[..., torch.Tensor]]:
    impls = {"eager": case.loss("reference")}
    if compiled:
        # static shapes: with automatic dynamic shapes Inductor (torch 2.13) fails to lower adaptive_avg_pool2d
        impls["compiled"] = torch.compile(case.loss("reference"), dynamic=False)
    impls["default"] = case.loss("auto")
    if device.type == "cuda" and triton_available():
        impls["triton"] = case.loss("triton")
    return impls


class Runner:
    """Runs one implementation's passes on fresh leaves (grads cleared, graph freed every time)."""

    def __init__(self, fn: Callable[..., torch.Tensor], tensors: list[torch.Tensor], grad_idx: list[int]):
        self.fn = fn
        self.leaves = [t.detach().requires_grad_(i in grad_idx) for i, t in enumerate(tensors)]

    def _clear(self) -> None:
        for t in self.leaves:
            t.grad = None

    def fwd(self) -> torch.Tensor:
        return self.fn(*self.leaves)

    def full(self) -> None:
        self.fn(*self.leaves).backward()
        self._clear()

    def time_pass(self, name: str, device: torch.device, inner: int = 1) -> float:
        """Seconds per call of one pass, timed over ``inner`` back-to-back calls (only ``backward()`` is timed for
        ``bwd``: the ``inner`` losses are built first)."""
        losses = [self.fwd() for _ in range(inner)] if name == "bwd" else []
        synchronize(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        out = None
        for i in range(inner):
            if name == "fwd":
                out = self.fwd()  # the previous call's graph is freed here, as in a training loop
            elif name == "bwd":
                losses[i].backward()
            else:
                self.full()
        if device.type == "cuda":
            end.record()
            torch.cuda.synchronize(device)
            seconds = start.elapsed_time(end) / 1e3
        else:
            seconds = time.perf_counter() - t0
        del out, losses
        self._clear()
        return seconds / inner

    def peak(self, name: str, device: torch.device) -> float | None:
        if name == "bwd":
            return None  # the backward's own peak is not separable from the forward's saved tensors

        def forward() -> None:
            self.fwd()  # graph and saved tensors live until the loss is dropped here

        run = self.full if name == "fwd+bwd" else forward
        gc.collect()
        return float(peak_memory_bytes(run, device))


def calls_per_sample(runner: Runner, device: torch.device, min_sample_s: float) -> int:
    """How many back-to-back fwd+bwd calls of ``runner`` (the eager baseline) take at least ``min_sample_s``:
    sub-millisecond passes are timed as a loop, not one call at the timer's and the cache's mercy."""
    per_call = min(runner.time_pass("fwd+bwd", device) for _ in range(3))
    return max(1, min(1000, math.ceil(min_sample_s / max(per_call, 1e-7))))


def graph_time_ms(runner: Runner, device: torch.device) -> float | None:
    """Device time of one fwd+bwd with the host out of the way: calls unrolled into a CUDA graph and replayed
    (``triton.testing.do_bench_cudagraph``, median). ``None`` off CUDA, without Triton, or if capture fails (the
    error is printed): kernel-level numbers, where a per-call Python overhead of tens of microseconds would
    otherwise hide how fast ~100 MiB of traffic moves."""
    if device.type != "cuda" or not triton_available():
        return None
    import triton.testing

    try:
        return float(triton.testing.do_bench_cudagraph(runner.full, rep=20, return_mode="median"))
    except Exception as err:  # noqa: BLE001  (a benchmark row, not a failure: reported as n/a)
        print(f"  CUDA-graph timing failed: {type(err).__name__}: {err}", flush=True)
        torch.cuda.synchronize(device)
        return None


def bench_case(
    case: Case,
    device: torch.device,
    dtype: torch.dtype,
    warmup: int,
    repeats: int,
    compiled: bool,
    log: Any,
    min_sample_s: float = 0.02,
) -> list[dict]:
    tensors, grad_idx = case.inputs(device, dtype)
    impls = implementations(case, device, compiled)
    runners = {name: Runner(fn, tensors, grad_idx) for name, fn in impls.items()}
    times: dict[tuple[str, str], list[float]] = {(i, p): [] for i in runners for p in PASSES}
    order = list(runners)
    inner = 1
    for r in range(warmup + repeats):
        if r == warmup:  # after warm-up (and compilation): enough calls per sample that a sample is >= min_sample_s
            inner = calls_per_sample(runners["eager"], device, min_sample_s)
        for name in order[r % len(order) :] + order[: r % len(order)]:  # rotate the order every round
            for p in PASSES:
                t = runners[name].time_pass(p, device, inner)
                if r >= warmup:
                    times[(name, p)].append(t)
    rows = []
    dt = str(dtype).replace("torch.", "")
    for name, runner in runners.items():
        peaks = {p: runner.peak(p, device) for p in PASSES}
        graph_ms = graph_time_ms(runner, device)
        for p in PASSES:
            ts = times[(name, p)]
            rows.append(
                {"device": device.type, "op": case.op, "case": f"{case.label} {dt}",
                 "shape": "x".join(map(str, case.shape)), "dtype": dt, "impl": name, "pass": p,
                 "time_ms": 1e3 * median(ts), "time_ms_min": 1e3 * min(ts), "repeats": repeats, "calls": inner,
                 "peak_extra_mib": None if peaks[p] is None else peaks[p] / 2**20,
                 "min_bytes": case.min_bytes(p, dtype), "graph_ms": graph_ms if p == "fwd+bwd" else None}
            )  # fmt: skip
        full = rows[-1]
        log(f"  {full['case']:<48} {name:<9} fwd+bwd {full['time_ms']:9.3f} ms  peak {full['peak_extra_mib']:.2f} MiB")
    del runners
    gc.collect()
    return rows


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------

_FLOAT_FIELDS = ("time_ms", "time_ms_min", "peak_extra_mib", "graph_ms")
_INT_FIELDS = ("repeats", "calls", "min_bytes")
_OP_ORDER = ("scat_segmenter", "scat_generator", "infonce")


def load_rows(path: Path) -> list[dict]:
    """Rows of a CSV written by this script, numbers parsed back (empty cells become ``None``)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in _FLOAT_FIELDS:
            r[k] = float(r[k]) if r.get(k) not in (None, "") else None
        for k in _INT_FIELDS:
            if r.get(k) not in (None, ""):
                r[k] = int(r[k])
    return rows


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with every (op, case) that ``new`` measured replaced by ``new``'s rows, grouped by op."""
    measured = {(r["op"], r["case"]) for r in new}
    kept = [r for r in old if (r["op"], r["case"]) not in measured]
    merged = kept + new
    return sorted(merged, key=lambda r: _OP_ORDER.index(r["op"]) if r["op"] in _OP_ORDER else len(_OP_ORDER))


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _versions() -> str:
    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = "not installed"
    return f"torch {torch.__version__}, Triton {tv}"


def _gpu_targets(rows: list[dict], by: dict, key: str, bandwidth: dict[str, float | None]) -> list[str]:
    """The issue's GPU targets for the Triton kernels, fwd+bwd: >= 3x eager and >= compiled on the per-pixel term,
    >= 60 % of the card's bandwidth on its largest size, InfoNCE >= 2x eager where M * D >= 2**18."""
    peak = bandwidth.get("nominal") or bandwidth.get("copy")
    cases_ = list(dict.fromkeys((r["op"], r["case"]) for r in rows))
    scat = [c for c in cases_ if c[0] != "infonce" and (c, "triton", "fwd+bwd") in by]

    def pixels(case: tuple[str, str]) -> int:
        B, h, w, *_ = map(int, by[(case, "triton", "fwd+bwd")]["shape"].split("x"))
        return B * h * w

    largest = {op: max((c for c in scat if c[0] == op), key=pixels) for op in dict.fromkeys(c[0] for c in scat)}
    table = []
    for case in cases_:
        if (case, "triton", "fwd+bwd") not in by:
            continue
        t, e = by[(case, "triton", "fwd+bwd")], by[(case, "eager", "fwd+bwd")]
        c = by.get((case, "compiled", "fwd+bwd"))
        # kernel time (CUDA-graph replay) where every implementation has one, else the per-call event time
        with_graph = [r for r in (t, e, c) if r is not None]
        graph = all(r.get("graph_ms") for r in with_graph)

        def ms(r: dict, graph: bool = graph) -> float:
            return float(r["graph_ms"] if graph else r[key])

        vs_eager = ms(e) / ms(t)
        vs_comp = ms(c) / ms(t) if c else None
        per_call = e[key] / t[key]
        gbps = t["min_bytes"] / (ms(t) / 1e3) / 1e9
        frac = gbps / peak if peak else None
        if case[0] == "infonce":
            B, M, D = map(int, t["shape"].split("x"))
            if M * D < 2**18:
                continue
            ok = vs_eager >= 2.0
            goal = ">= 2x eager"
        else:
            ok = vs_eager >= 3.0 and (vs_comp is None or vs_comp >= 0.95)
            goal = ">= 3x eager, >= compiled"
            if case == largest.get(case[0]):
                ok = ok and frac is not None and frac >= 0.6
                goal += ", >= 60 % bandwidth"
        table.append([f"{case[0]}: {case[1]}", "graph" if graph else "call", f"{ms(t):.3f}", f"{vs_eager:.2f}x",
                      "n/a" if vs_comp is None else f"{vs_comp:.2f}x", f"{per_call:.2f}x", f"{gbps:,.0f}",
                      "n/a" if frac is None else f"{100 * frac:.0f} %", goal,
                      "met" if ok else "**not met**"])  # fmt: skip
    copy = bandwidth.get("copy")
    nominal = bandwidth.get("nominal")
    return [
        "",
        "Triton kernels on the GPU (fwd+bwd) against the issue's targets. Basis `graph`: device time of the calls "
        "replayed from a CUDA graph (no host overhead), for every implementation of the case; `call`: per-call "
        "event time (a capture failed). `vs eager (call)` is the per-call ratio, Python overhead included. GB/s = "
        "the traffic a fused kernel cannot avoid (inputs read once, gradients written once, the saved derivative "
        "read and rewritten in backward) over the basis time; % of "
        + (f"the card's nominal {nominal:,.0f} GB/s" if nominal else "the measured copy bandwidth")
        + (f" (a device-to-device copy_ of 1 GiB reaches {copy:,.0f} GB/s here)" if copy else "")
        + ":",
        "",
        markdown_table(
            [
                "case",
                "basis",
                "triton ms",
                "vs eager",
                "vs compiled",
                "vs eager (call)",
                "GB/s",
                "% bandwidth",
                "target",
                "",
            ],
            table,
        ),  # fmt: skip
    ]


def report(
    rows: list[dict],
    device: torch.device,
    command: str,
    quick: bool,
    min_sample_ms: float,
    bandwidth: dict[str, float | None] | None = None,
) -> str:
    """The Markdown section: one table per op, and the ratios the issue's targets are stated in."""
    by = {((r["op"], r["case"]), r["impl"], r["pass"]): r for r in rows}
    # a shared CPU is noisy: there the best of the rounds is the robust statistic; on CUDA the median
    key, stat = ("time_ms", "median") if device.type == "cuda" else ("time_ms_min", "best")
    cases_ = list(dict.fromkeys((r["op"], r["case"]) for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    default = "default"
    lines = [
        f"### Fused kernels vs reference on {device.type}{' (--quick)' if quick else ''}",
        "",
        "- Command: " + "; ".join(f"`{c}`" for c in dict.fromkeys(r.get("command") or command for r in rows))
        + (" (rows merged: each case from the last command that measured it, see the CSV)"
           if len({r.get("command") or command for r in rows}) > 1 else ""),
        machine_markdown(machine_info(device)),
        f"- {_versions()}; "
        + ("CUDA-event timing" if device.type == "cuda" else "wall-clock timing on a shared CPU (noisy)")
        + f"; times per call are the {stat} of {rows[0]['repeats']} rounds after warm-up, each round a loop of "
        + "back-to-back calls lasting at least "
        + f"{min_sample_ms:g} ms for eager (calls per case in the CSV), implementations interleaved",
        "- Peak = memory high-water mark above the level before the pass (inputs excluded, new gradients included): "
        + ("`torch.cuda.max_memory_allocated`" if device.type == "cuda" else "live tensor bytes from `torch.profiler` "
           "allocation events"),
    ]  # fmt: skip
    if device.type == "cpu":
        lines.append(
            '- On CPU `backend="auto"` runs the memory-lean autograd functions of `scatloss.ops.torch_fused`; '
            "Triton runs only interpreted on CPU (correctness, not speed), so it is not timed here."
        )
    for op in dict.fromkeys(op for op, _ in cases_):
        lines += ["", f"#### {op}", ""]
        table = []
        for case in cases_:
            if case[0] != op:
                continue
            base_t = by[(case, "eager", "fwd+bwd")][key]
            base_m = by[(case, "eager", "fwd+bwd")]["peak_extra_mib"]
            for impl in impls:
                if (case, impl, "fwd") not in by:
                    continue
                fwd, bwd, full = (by[(case, impl, p)] for p in PASSES)
                table.append(
                    [case[1], impl, _fmt(fwd[key], 3), _fmt(bwd[key], 3), _fmt(full[key], 3),
                     _fmt(fwd["peak_extra_mib"]), _fmt(full["peak_extra_mib"]), f"{base_t / full[key]:.2f}x",
                     _fmt(full["peak_extra_mib"] / base_m if base_m else None)]
                )  # fmt: skip
        header = ["case", "impl", "fwd ms", "bwd ms", "fwd+bwd ms", "fwd peak MiB", "fwd+bwd peak MiB",
                  "speed-up vs eager", "peak / eager"]  # fmt: skip
        lines.append(markdown_table(header, table))
    # the targets, stated for the default path against eager, fwd+bwd
    checks = []
    for case in cases_:
        e, d = by[(case, "eager", "fwd+bwd")], by[(case, default, "fwd+bwd")]
        t_ratio = e[key] / d[key]
        m_ratio = d["peak_extra_mib"] / e["peak_extra_mib"] if e["peak_extra_mib"] else float("nan")
        checks.append([f"{case[0]}: {case[1]}", default, f"{t_ratio:.2f}x", f"{m_ratio:.2f}",
                       "met" if t_ratio >= 0.95 and m_ratio <= 0.5 else "**not met**"])  # fmt: skip
    lines += [
        "",
        "Default path vs eager (fwd+bwd); target: no slower (speed-up >= 1, 5% noise allowed) and at most half of "
        "eager's extra peak memory:",
        "",
        markdown_table(["case", "default path", "speed-up", "peak / eager", "target"], checks),
    ]
    if any(r["impl"] == "triton" for r in rows):
        lines += _gpu_targets(rows, by, key, bandwidth or {})
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default="float32", help="input dtypes, a comma list of float32, float16, bfloat16")
    p.add_argument("--no-compiled", action="store_true", help="skip the torch.compile rows (saves compile time)")
    p.add_argument("--quick", action="store_true", help="a small grid that runs in a few minutes on a CPU")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 20 on CUDA, 11 on CPU)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (compilation happens here)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default on CPU: 1, stable on a shared machine)",
    )
    p.add_argument(
        "--min-sample-ms",
        type=float,
        default=None,
        help="each timed sample loops calls for at least this long for eager (default 20 on CPU, 5 on CUDA)",
    )
    p.add_argument("--only", default=None, help="run only cases whose op contains this text")
    p.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md or results/")
    p.add_argument(
        "--merge",
        action="store_true",
        help="replace only the rows of the cases run now in results/kernels_<device>.csv (e.g. after --only scat) "
        "and report from the merged rows",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # one intra-op thread by default on CPU: a parallel region stalls whenever a core is taken by another process
    threads = args.threads or (1 if device.type == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available")
        return 1
    dtypes = [getattr(torch, d.strip()) for d in args.dtype.split(",") if d.strip()]
    repeats = args.repeats or (20 if device.type == "cuda" else 11)
    min_sample_ms = args.min_sample_ms if args.min_sample_ms is not None else (5.0 if device.type == "cuda" else 20.0)
    set_value_checks(False)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
    command = command_line(["benchmarks/bench_kernels.py", *(sys.argv[1:] if argv is None else argv)])
    rows: list[dict] = []
    start = time.perf_counter()
    for dtype in dtypes:
        for case in cases(args.quick):
            if args.only and args.only not in case.op:
                continue
            print(f"{case.op}: {case.label} {dtype}", flush=True)
            rows += bench_case(
                case,
                device,
                dtype,
                args.warmup,
                repeats,
                not args.no_compiled,
                lambda m: print(m, flush=True),
                min_sample_s=min_sample_ms / 1e3,
            )
    bandwidth: dict[str, float | None] = {}
    if device.type == "cuda":
        bandwidth = {
            "copy": copy_bandwidth_gbps(device),
            "nominal": nominal_bandwidth_gbps(torch.cuda.get_device_name()),
        }
        print(f"bandwidth: copy {bandwidth['copy']:,.0f} GB/s, nominal {bandwidth['nominal']} GB/s", flush=True)
    for r in rows:
        r["command"] = command
    tag = f"{device.type}{'_quick' if args.quick else ''}"  # --quick keeps its own CSV and section
    csv_path = RESULTS_DIR / f"kernels_{tag}.csv"
    if args.merge and csv_path.exists():
        rows = merge_rows(load_rows(csv_path), rows)
    body = report(rows, device, command, args.quick, min_sample_ms, bandwidth)
    print(body)
    print(f"total {time.perf_counter() - start:.0f} s")
    if not args.no_write:
        write_csv(csv_path, rows)
        write_section(f"bench_kernels:{tag.replace('_', ':')}", body, RESULTS_MD)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
