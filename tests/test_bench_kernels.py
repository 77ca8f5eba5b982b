"""benchmarks/bench_kernels.py: traffic accounting, the GPU target table (from synthetic CUDA rows, since CI has no
GPU) and a real CPU run of the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_kernels as BK  # noqa: E402


def test_min_bytes_counts_each_input_and_gradient_once() -> None:
    seg = BK.Case("scat_segmenter", (8, 256, 256, 1024, 1024))
    n, mask = 8 * 256 * 256, 8 * 1024 * 1024 * 4
    # forward: two logit maps read, the float32 mask read, two derivative maps written; backward: read + write each
    assert seg.min_bytes("fwd", torch.float32) == 2 * n * 4 + mask + 2 * n * 4
    assert seg.min_bytes("bwd", torch.bfloat16) == 2 * 2 * n * 2
    gen = BK.Case("scat_generator", (8, 256, 256, 1024, 1024))
    assert gen.min_bytes("fwd+bwd", torch.float32) == (n * 4 + mask + n * 4) + 2 * n * 4
    nce = BK.Case("infonce", (64, 4096, 1024))
    assert nce.min_bytes("fwd", torch.float32) == (2 * 64 * 1024 + 64 * 4096 * 1024) * 4


def test_nominal_bandwidth_by_card_name() -> None:
    assert BK.nominal_bandwidth_gbps("NVIDIA H100 80GB HBM3") == 3350
    assert BK.nominal_bandwidth_gbps("NVIDIA H100 PCIe") == 2000
    assert BK.nominal_bandwidth_gbps("NVIDIA H200") == 4800
    assert BK.nominal_bandwidth_gbps("Some Future Card") is None
    with pytest.raises(ValueError, match="device"):
        BK.copy_bandwidth_gbps(torch.device("cpu"))


def _rows(case: BK.Case, times: dict[str, float]) -> list[dict]:
    dt = "float32"
    rows = []
    for impl, ms in times.items():
        for p in BK.PASSES:
            rows.append(
                {"device": "cuda", "op": case.op, "case": f"{case.label} {dt}", "shape": "x".join(map(str, case.shape)),
                 "dtype": dt, "impl": impl, "pass": p, "time_ms": ms, "time_ms_min": ms, "repeats": 20, "calls": 1,
                 "peak_extra_mib": 1.0 if impl != "eager" else 4.0, "min_bytes": case.min_bytes(p, torch.float32)}
            )  # fmt: skip
    return rows


def test_gpu_target_table_from_synthetic_cuda_rows() -> None:
    small = BK.Case("scat_segmenter", (8, 64, 64, 256, 256))
    large = BK.Case("scat_segmenter", (8, 512, 512, 1024, 1024))
    nce_big, nce_small = BK.Case("infonce", (64, 4096, 1024)), BK.Case("infonce", (8, 8, 256))
    large_bytes = large.min_bytes("fwd+bwd", torch.float32)
    fast_ms = large_bytes / (0.8 * 3350e9) * 1e3  # 80 % of an H100's nominal bandwidth
    rows = (
        _rows(small, {"eager": 1.0, "compiled": 0.5, "default": 0.25, "triton": 0.25})  # 4x eager, 2x compiled
        + _rows(large, {"eager": 10 * fast_ms, "compiled": 2 * fast_ms, "default": fast_ms, "triton": fast_ms})
        + _rows(nce_big, {"eager": 3.0, "compiled": 2.0, "default": 1.0, "triton": 1.0})
        + _rows(nce_small, {"eager": 0.1, "compiled": 0.1, "default": 0.1, "triton": 0.1})
    )
    body = BK.report(rows, torch.device("cuda"), "cmd", False, 5.0, {"copy": 3000.0, "nominal": 3350.0})
    table = body.split("Triton kernels on the GPU")[1]
    lines = [line for line in table.splitlines() if line.startswith("| scat") or line.startswith("| infonce")]
    assert len(lines) == 3  # the small InfoNCE case (M * D < 2**18) has no GPU target
    small_line, large_line, nce_line = lines
    assert "4.00x" in small_line and "2.00x" in small_line and "| met |" in small_line
    assert "60 % bandwidth" not in small_line  # only the largest per-pixel size carries the bandwidth target
    assert "60 % bandwidth" in large_line and "80 %" in large_line and "| met |" in large_line
    assert "3.00x" in nce_line and "| met |" in nce_line
    assert "nominal 3,350 GB/s" in table and "3,000 GB/s" in table
    # a kernel at 50 % of the bandwidth misses the bandwidth target even though it is still 6x eager
    slow = [
        dict(r, time_ms=r["time_ms"] * 1.6) if r["impl"] == "triton" and "512x512" in r["case"] else r for r in rows
    ]
    body = BK.report(slow, torch.device("cuda"), "cmd", False, 5.0, {"copy": 3000.0, "nominal": 3350.0})
    large_line = [line for line in body.split("Triton kernels on the GPU")[1].splitlines() if "512x512" in line][0]
    assert "50 %" in large_line and "**not met**" in large_line


def test_cpu_run_of_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--quick", "--only", "infonce", "--no-compiled", "--repeats", "1", "--warmup", "0", "--no-write",
            "--device", "cpu", "--min-sample-ms", "1"]  # fmt: skip
    from scatloss._validation import set_value_checks, value_checks_enabled

    threads, checks = torch.get_num_threads(), value_checks_enabled()
    try:
        assert BK.main(argv) == 0
    finally:  # main() switches hole-value checks off and sets the thread count: restore for the next tests
        torch.set_num_threads(threads)
        set_value_checks(checks)
    out = capsys.readouterr().out
    assert "#### infonce" in out and "Default path vs eager" in out and "Triton kernels on the GPU" not in out


def test_csv_round_trip_and_merge_replace_only_the_cases_measured_again(tmp_path: Path) -> None:
    from _common import write_csv

    seg = BK.Case("scat_segmenter", (8, 64, 64, 256, 256))
    nce = BK.Case("infonce", (8, 8, 256))
    old = _rows(nce, {"eager": 1.0, "default": 0.5}) + _rows(seg, {"eager": 2.0, "default": 1.0})
    for r in old:
        r["command"] = "python benchmarks/bench_kernels.py"
    old[0]["peak_extra_mib"] = None  # e.g. the bwd pass, whose peak is not measured
    path = write_csv(tmp_path / "k.csv", old)
    loaded = BK.load_rows(path)
    assert loaded[0]["peak_extra_mib"] is None and loaded[1]["time_ms"] == 1.0 and loaded[1]["min_bytes"] > 0
    new = _rows(seg, {"eager": 2.0, "default": 0.25})
    for r in new:
        r["command"] = "python benchmarks/bench_kernels.py --only scat --merge"
    merged = BK.merge_rows(loaded, new)
    assert [r["op"] for r in merged][: len(new)] == ["scat_segmenter"] * len(new)  # grouped in the usual op order
    assert {r["time_ms"] for r in merged if r["op"] == "scat_segmenter" and r["impl"] == "default"} == {0.25}
    assert len([r for r in merged if r["op"] == "infonce"]) == len(_rows(nce, {"eager": 1.0, "default": 0.5}))
    body = BK.report(merged, torch.device("cpu"), "cmd", False, 20.0)
    assert "--only scat --merge" in body and "rows merged" in body and "8.00x" in body


def test_gpu_targets_use_cuda_graph_time_when_every_implementation_has_one() -> None:
    case = BK.Case("scat_generator", (8, 256, 256, 1024, 1024))
    rows = _rows(case, {"eager": 1.0, "compiled": 1.0, "default": 1.0, "triton": 1.0})  # host-bound per call
    fast = case.min_bytes("fwd+bwd", torch.float32) / (0.8 * 3350e9) * 1e3  # 80 % of an H100's bandwidth, in ms
    graph = {"eager": 5 * fast, "compiled": 1.2 * fast, "triton": fast, "default": fast}
    for r in rows:
        if r["pass"] == "fwd+bwd":
            r["graph_ms"] = graph[r["impl"]]
    body = BK.report(rows, torch.device("cuda"), "cmd", False, 5.0, {"copy": 3000.0, "nominal": 3350.0})
    line = [ln for ln in body.split("Triton kernels on the GPU")[1].splitlines() if ln.startswith("| scat")][0]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:6] == ["graph", f"{fast:.3f}", "5.00x", "1.20x", "1.00x"]
    assert cells[6] == f"{0.8 * 3350:,.0f}" and cells[7] == "80 %" and cells[-1] == "met"
    # one implementation without a graph time (its capture failed): the whole case falls back to per-call times
    rows = [dict(r, graph_ms=None) if r["impl"] == "compiled" else r for r in rows]
    body = BK.report(rows, torch.device("cuda"), "cmd", False, 5.0, {"copy": 3000.0, "nominal": 3350.0})
    line = [ln for ln in body.split("Triton kernels on the GPU")[1].splitlines() if ln.startswith("| scat")][0]
    assert "| call |" in line and "**not met**" in line
