"""Helpers shared by the benchmark scripts: machine description, timing, result files.

Every ``benchmarks/bench_<thing>.py`` writes its own Markdown section into ``benchmarks/RESULTS.md``
between ``<!-- <name> start -->`` and ``<!-- <name> end -->`` markers (:func:`write_section`), so several
scripts share the file without clobbering one another, and a CSV of its raw numbers under
``benchmarks/results/`` (:func:`write_csv`).
"""

from __future__ import annotations

import contextlib
import csv
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from scatloss.utils import atomic_write

__all__ = [
    "BENCH_DIR",
    "RESULTS_DIR",
    "RESULTS_MD",
    "command_line",
    "cpu_model",
    "machine_info",
    "machine_markdown",
    "markdown_table",
    "median",
    "synchronize",
    "timed",
    "write_csv",
    "write_section",
]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_MD = BENCH_DIR / "RESULTS.md"
RESULTS_DIR = BENCH_DIR / "results"

_HEADER = "# Benchmark results\n\nWritten by the scripts in `benchmarks/`; each owns the section between its markers.\n"


# ----------------------------------------------------------------------------------------------
# machine
# ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: str | torch.device = "cpu") -> dict[str, str]:
    """A flat description of where a benchmark ran: CPU, cores, threads, torch, Python, GPU if used."""
    info = {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
        info["cuda"] = str(torch.version.cuda)
    return info


def machine_markdown(info: Mapping[str, str]) -> str:
    """``info`` as one Markdown bullet line."""
    return "- Machine: " + ", ".join(f"{k} {v}" for k, v in info.items())


def command_line(argv: Sequence[str] | None = None) -> str:
    """The exact command that ran, repo-relative where possible, shell-quoted."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        with contextlib.suppress(ValueError):
            argv[0] = str(Path(argv[0]).resolve().relative_to(BENCH_DIR.parent))
    return "python " + " ".join(shlex.quote(a) for a in argv)


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU), so a wall-clock reading covers the work."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], Any], device: str | torch.device) -> tuple[float, Any]:
    """``(seconds, fn())`` with the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


# ----------------------------------------------------------------------------------------------
# result files
# ----------------------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, path: str | Path = RESULTS_MD) -> Path:
    """Replace (or append) the section between ``<!-- name start -->`` and ``<!-- name end -->``.

    The file is created if missing; everything outside this section's markers is preserved. The write
    goes through a temporary file and ``os.replace`` so a concurrent reader never sees half a file.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.:\-]+", name):
        raise ValueError(f"name: expected letters, digits and _ . : - only, got {name!r}")
    path = Path(path)
    start, end = f"<!-- {name} start -->", f"<!-- {name} end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), flags=re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    return atomic_write(path, lambda handle: handle.write(text), binary=False)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV (columns in first-seen order), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
