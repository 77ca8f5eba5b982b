"""benchmarks/ablation.py: the aggregation over seeds (known inputs) and the --quick path end to end."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import ablation  # noqa: E402


def report(**buckets: tuple[float, float, float] | None) -> dict:
    """A minimal ``EvaluationReport.to_dict()``: ``bucket name -> (l1, psnr, ssim)`` (None: empty bucket)."""
    out = []
    for name, values in buckets.items():
        l1, psnr, ssim = values if values is not None else (None, None, None)
        out.append({"name": name, "count": 0 if values is None else 4, "l1": l1, "psnr": psnr, "ssim": ssim})
    return {"buckets": out}


def cell(rows: list[dict], objective: str, bucket: str, metric: str) -> dict:
    (row,) = [r for r in rows if (r["objective"], r["bucket"], r["metric"]) == (objective, bucket, metric)]
    return row


# ---- summarize / aggregate ---------------------------------------------------------------------------------------


def test_summarize_gives_mean_sample_std_min_max():
    s = ablation.summarize([1.0, 2.0, 3.0, 6.0])
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(3.0)
    assert s["std"] == pytest.approx(math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3))  # ddof = 1
    assert (s["min"], s["max"]) == (1.0, 6.0)


def test_summarize_of_one_value_has_no_std_and_of_none_has_nothing():
    assert ablation.summarize([0.5]) == {"n": 1, "mean": 0.5, "std": None, "min": 0.5, "max": 0.5}
    assert ablation.summarize([]) == {"n": 0, "mean": None, "std": None, "min": None, "max": None}


def test_aggregate_matches_hand_computed_mean_and_std_per_bucket_and_metric():
    results = {
        "baseline": {
            0: report(**{"0-20%": (0.10, 20.0, 0.70), "40-60%": (0.30, 15.0, 0.40)}),
            1: report(**{"0-20%": (0.20, 22.0, 0.80), "40-60%": (0.50, 17.0, 0.50)}),
            2: report(**{"0-20%": (0.30, 24.0, 0.90), "40-60%": (0.40, 16.0, 0.60)}),
        },
        "full": {
            0: report(**{"0-20%": (0.05, 21.0, 0.75), "40-60%": (0.25, 15.5, 0.45)}),
            1: report(**{"0-20%": (0.15, 23.0, 0.85), "40-60%": None}),  # empty bucket: skipped
        },
    }
    rows = ablation.aggregate(results)
    assert len(rows) == 2 * 2 * 3  # buckets x objectives x metrics
    c = cell(rows, "baseline", "0-20%", "l1")
    assert c["mean"] == pytest.approx(0.2) and c["std"] == pytest.approx(0.1)
    assert (c["min"], c["max"], c["seeds"], c["n"]) == (0.1, 0.3, [0, 1, 2], 3)
    c = cell(rows, "baseline", "40-60%", "psnr")
    assert c["mean"] == pytest.approx(16.0) and c["std"] == pytest.approx(1.0)
    c = cell(rows, "full", "0-20%", "ssim")
    assert c["mean"] == pytest.approx(0.8) and c["std"] == pytest.approx(math.sqrt(0.005))
    c = cell(rows, "full", "40-60%", "l1")
    assert (c["n"], c["seeds"], c["mean"], c["std"]) == (1, [0], 0.25, None)
    assert cell(rows, "full", "40-60%", "l1")["label"] == "Full (+sem)"


def test_paired_differences_are_per_seed_and_count_improvements_in_the_metrics_direction():
    results = {
        "baseline": {0: report(b=(0.30, 20.0, 0.50)), 1: report(b=(0.40, 19.0, 0.60))},
        "scat": {0: report(b=(0.20, 21.0, 0.40)), 1: report(b=(0.45, 21.0, 0.70)), 2: report(b=(0.1, 30.0, 0.9))},
    }
    (l1, psnr, ssim) = ablation.paired_differences(results, "previous")
    assert l1["metric"] == "l1" and l1["reference"] == "baseline"
    assert l1["diffs"] == pytest.approx([-0.10, 0.05])  # seed 2 has no baseline: not paired
    assert l1["improved"] == 1  # lower L1 is better
    assert l1["mean"] == pytest.approx(-0.025) and l1["std"] == pytest.approx(math.sqrt(2 * 0.075**2))
    assert psnr["diffs"] == pytest.approx([1.0, 2.0]) and psnr["improved"] == 2  # higher PSNR is better
    assert ssim["improved"] == 1
    assert [r["objective"] for r in ablation.paired_differences(results, "baseline")] == ["scat"] * 3


def test_ordering_check_detects_table3_order_on_means_and_per_seed():
    # L1 falls row by row on the means; seed 1 breaks the chain (full worse than scat+text there).
    l1 = {"baseline": (0.40, 0.42), "scat": (0.38, 0.40), "scat+text": (0.36, 0.37), "full": (0.30, 0.38)}
    results = {o: {s: report(b=(v[s], 20.0, 0.5)) for s in (0, 1)} for o, v in l1.items()}
    checks = {c["metric"]: c for c in ablation.ordering_check(results)}
    c = checks["l1"]
    assert c["holds_on_means"] is True
    assert c["ranking"] == ["full", "scat+text", "scat", "baseline"]
    assert (c["seeds_holding"], c["n_seeds"]) == (1, 2)
    assert c["range_of_means"] == pytest.approx(0.41 - 0.34)
    stds = [ablation.summarize(v)["std"] for v in l1.values()]
    assert c["mean_seed_std"] == pytest.approx(sum(stds) / 4)
    assert c["ratio"] == pytest.approx(0.07 / (sum(stds) / 4))
    assert checks["psnr"]["holds_on_means"] is False  # all equal: no strict improvement


def test_paired_t_test_matches_closed_forms_for_one_and_two_degrees_of_freedom():
    # df = 2: two-sided p = 1 - t / sqrt(2 + t^2); diffs 1, 2, 3 -> t = 2 / (1 / sqrt(3)) = sqrt(12)
    r = ablation.paired_test([1.0, 2.0, 3.0])
    assert r["t"] == pytest.approx(math.sqrt(12))
    assert r["p_t"] == pytest.approx(1 - math.sqrt(12) / math.sqrt(14), rel=1e-9)
    # df = 1 (Cauchy): p = 1 - 2 / pi * atan(|t|); diffs 1, 3 -> t = 2 / (sqrt(2) / sqrt(2)) = 2
    r = ablation.paired_test([1.0, 3.0])
    assert r["t"] == pytest.approx(2.0)
    assert r["p_t"] == pytest.approx(1 - 2 / math.pi * math.atan(2.0), rel=1e-9)
    # many seeds: t = 1.96 is close to the normal's two-sided 5 % point (Student's t, df 399: 0.0507)
    n = 400
    m = 1.959963984540054 * math.sqrt(n / (n - 1)) / math.sqrt(n)
    r = ablation.paired_test([m + x for x in (-1.0, 1.0)] * (n // 2))
    assert r["t"] == pytest.approx(1.959963984540054)
    assert r["p_t"] == pytest.approx(0.0507, abs=0.0005)
    assert r["p_signflip"] == pytest.approx(0.05, abs=0.01)  # Monte Carlo above 16 seeds


def test_sign_flip_test_is_exact_and_handles_degenerate_differences():
    # 1, 2, 3: of the 8 sign patterns only +++ and --- reach |mean| 2 -> p = 2 / 8
    assert ablation.paired_test([1.0, 2.0, 3.0])["p_signflip"] == pytest.approx(0.25)
    # five seeds all improving: the smallest possible p, 2 / 32
    assert ablation.paired_test([0.1, 0.2, 0.3, 0.4, 0.5])["p_signflip"] == pytest.approx(2 / 32)
    # 1, -1: every pattern has |mean| >= 0 -> 1
    assert ablation.paired_test([1.0, -1.0])["p_signflip"] == pytest.approx(1.0)
    assert ablation.paired_test([0.0, 0.0, 0.0]) == {"t": 0.0, "p_t": 1.0, "p_signflip": 1.0}
    same = ablation.paired_test([0.5, 0.5, 0.5])
    assert same["p_t"] == 0.0 and same["t"] == math.inf
    assert ablation.paired_test([0.5]) == {"t": None, "p_t": None, "p_signflip": 1.0}
    assert ablation.paired_test([]) == {"t": None, "p_t": None, "p_signflip": None}


def test_paired_differences_carry_the_tests_and_metrics_without_values_are_left_out():
    results = {
        "baseline": {s: report(b=(0.30 + 0.01 * s, 20.0, 0.50)) for s in range(4)},
        "scat": {s: report(b=(0.25 + 0.012 * s, 20.0, 0.50)) for s in range(4)},
    }
    rows = ablation.paired_differences(results, "previous")
    assert [r["metric"] for r in rows] == ["l1", "psnr", "ssim"]  # no probe values anywhere: no probe rows
    l1 = rows[0]
    assert l1["p_signflip"] == pytest.approx(2 / 16)
    assert l1["p_t"] is not None and l1["p_t"] < 0.001


# ---- the --quick path --------------------------------------------------------------------------------------------


def test_quick_run_writes_table_plots_grid_and_results_section(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("torchmetrics")
    from PIL import Image

    results_md = tmp_path / "RESULTS.md"
    results_md.write_text(
        "# Benchmark results\n\n<!-- other start -->\nkeep me\n<!-- other end -->\n", encoding="utf-8"
    )
    work, results = tmp_path / "work", tmp_path / "results" / "quick"
    argv = ["--quick", "--work-dir", str(work), "--results-dir", str(results), "--results-md", str(results_md)]
    assert ablation.main(argv) == 0

    for name in ("table.md", "table.csv", "runs.csv", "summary.json", "curves.png", "metrics.png", "samples.png"):
        assert (results / name).stat().st_size > 0, name
    for name in ("curves.png", "metrics.png", "samples.png"):
        with Image.open(results / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    assert summary["objectives"] == ["baseline", "scat", "scat+text", "full"]
    assert summary["seeds"] == [0] and summary["config"] == "quick"
    assert summary["train_config"]["steps"] == 2 and summary["train_config"]["size"] == 32
    assert {r["objective"] for r in summary["runs"]} == set(summary["objectives"])
    assert all(r["n"] == 1 and r["std"] is None for r in summary["aggregate"])
    assert len(summary["aggregate"]) == 4 * 3 * 5  # rows x buckets x (L1, PSNR, SSIM, probe AUROC, probe AP)
    assert all(r["probe"] is not None and r["probe"]["probe"]["steps"] == 2 for r in summary["runs"])
    assert "--quick" in summary["command"] and summary["wall_s"] > 0
    table = (results / "table.md").read_text(encoding="utf-8")
    assert "Baseline-1 (+SCAT)" in table and "40-60%" in table and "Wall time" in table
    assert "Probe AUROC" in table and "sign-flip" in table
    # every run of a seed shares the same initial weights and batches; only the loss terms differ
    configs = [
        json.loads((work / d / "seed0" / "config.json").read_text()) for d in ("baseline", "scat", "scat-text", "full")
    ]
    assert all({k: v for k, v in c.items() if k not in ("objective", "out")}
               == {k: v for k, v in configs[0].items() if k not in ("objective", "out")} for c in configs)  # fmt: skip
    assert not list(work.rglob("*.pt"))  # checkpoints deleted once scored
    text = results_md.read_text(encoding="utf-8")
    assert "<!-- other start -->\nkeep me\n<!-- other end -->" in text
    assert "<!-- ablation start -->" in text and "<!-- ablation end -->" in text

    # --replot rebuilds every output from the saved runs without training, keeping command and wall time
    (results / "curves.png").unlink()
    assert ablation.main([*argv, "--replot"]) == 0
    assert (results / "curves.png").stat().st_size > 0
    again = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    assert (again["command"], again["wall_s"], again["aggregate"]) == (
        summary["command"],
        summary["wall_s"],
        summary["aggregate"],
    )
