"""Mutation score of the whole configured population from a partial run: some functions in full, the rest sampled.

A full ``make mutate`` does not fit a session on 2 cores, so the score is measured on two strata:

* the mutants run in full (``--full FILE``, repeatable: their names, e.g. every mutant of the functions that
  earlier samples found weakest), counted exactly;
* every other mutant, estimated from a seeded sample of them (``--sample FILE``, drawn per group with
  ``sample.py --exclude FULL``): each group's sampled kill and equivalence rates are scaled to the group's
  population outside the full stratum.

Score = killed / (killed + survived + no tests), documented equivalents left out, survivors listed in
``killed_outside.txt`` counted as killed (as ``score.py`` does). The 95 % interval comes from a stratified
bootstrap of the sample (the full stratum has no sampling error). Usage::

    python benchmarks/mutation/estimate.py --root mutants [--root rerun/mutants] --full full.txt --sample sample.txt
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path

from sample import GROUPS, group_of, mutants
from score import KILLED, NO_TESTS, SURVIVED, load_equivalents

Verdict = str  # "killed" | "alive" | "equivalent" | "unchecked"


def verdicts(roots: list[Path], csvs: list[Path], equivalent: set[str], elsewhere: set[str]) -> dict[str, Verdict]:
    """Each mutant's verdict; with several roots (e.g. a rerun of the survivors in a newer tree) the last root
    that checked a mutant decides, then the rows of the ``run,mutant,exit_code`` files in order (the last row of
    a mutant decides)."""
    out: dict[str, Verdict] = {}
    codes: dict[str, int | None] = {}
    for root in roots:
        for name, code in mutants(root).items():
            if code is not None or name not in codes:
                codes[name] = code
    for path in csvs:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if row["mutant"] not in codes:
                    raise ValueError(f"{path}: {row['mutant']} is not a mutant of the given --root trees")
                codes[row["mutant"]] = int(row["exit_code"])
    for name, code in codes.items():
        if code is None:
            out[name] = "unchecked"
        elif code in KILLED or (code in SURVIVED | NO_TESTS and name in elsewhere):
            out[name] = "killed"
        elif code in SURVIVED | NO_TESTS:
            out[name] = "equivalent" if name in equivalent else "alive"
        else:
            out[name] = "unchecked"  # a mutmut error code: not a verdict
    return out


def _names(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def stratum_counts(names: list[str], verdict: dict[str, Verdict]) -> dict[str, int]:
    counts = {"killed": 0, "alive": 0, "equivalent": 0, "unchecked": 0}
    for name in names:
        counts[verdict[name]] += 1
    return counts


def combined(
    full: dict[str, dict[str, int]], sampled: dict[str, list[Verdict]], population: dict[str, int]
) -> tuple[float, float]:
    """(estimated killed, estimated non-equivalent) over the full stratum plus every group's scaled sample."""
    killed = sum(c["killed"] for c in full.values())
    total = sum(c["killed"] + c["alive"] for c in full.values())
    for group, outcomes in sampled.items():
        checked = [v for v in outcomes if v != "unchecked"]
        if not checked or population[group] == 0:
            continue
        scale = population[group] / len(checked)
        killed += scale * sum(v == "killed" for v in checked)
        total += scale * sum(v in ("killed", "alive") for v in checked)
    return killed, total


def main() -> None:
    here = Path(__file__).parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        action="append",
        help="mutants/ tree (default mutants); repeat it for reruns: the last root that checked a mutant decides",
    )
    parser.add_argument(
        "--verdicts",
        type=Path,
        action="append",
        default=[],
        help="run,mutant,exit_code CSV (e.g. results/session5/verdicts.csv), applied after the trees (repeatable)",
    )
    parser.add_argument(
        "--full", type=Path, action="append", required=True, help="names of the mutants run in full (repeatable)"
    )
    parser.add_argument("--sample", type=Path, required=True, help="names of the sampled mutants (the rest)")
    parser.add_argument("--equivalent", type=Path, default=here / "equivalent.txt")
    parser.add_argument("--killed-elsewhere", type=Path, default=here / "killed_outside.txt")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.bootstrap < 1:
        parser.error(f"--bootstrap: expected a positive int, got {args.bootstrap}")

    roots = args.root or [Path("mutants")]
    equivalent, elsewhere = set(load_equivalents(args.equivalent)), set(load_equivalents(args.killed_elsewhere))
    verdict = verdicts(roots, args.verdicts, equivalent, elsewhere)
    full_names = {name for path in args.full for name in _names(path)}
    # A sample drawn before some of its functions joined the full stratum: those draws move to the full stratum,
    # and what is left is still a uniform sample of the rest of each group.
    sample_names = [name for name in _names(args.sample) if name not in full_names]
    unknown = sorted((full_names | set(sample_names)) - verdict.keys())
    if unknown:
        parser.error(f"{len(unknown)} names are not mutants under {roots}, e.g. {unknown[0]}")

    by_group_full: dict[str, list[str]] = defaultdict(list)
    for name in full_names:
        by_group_full[group_of(name) or "other"].append(name)
    population = {g: 0 for g in GROUPS}
    for name in verdict:
        group = group_of(name)
        if group is not None and name not in full_names:
            population[group] += 1
    by_group_sample: dict[str, list[str]] = defaultdict(list)
    for name in sample_names:
        by_group_sample[group_of(name) or "other"].append(name)
    sampled = {g: [verdict[name] for name in names] for g, names in by_group_sample.items()}

    full = {g: stratum_counts(by_group_full[g], verdict) for g in GROUPS}
    rows = []
    for group in GROUPS:
        f = full[group]
        s = stratum_counts(by_group_sample[group], verdict)
        k, t = combined({group: f}, {group: sampled.get(group, [])}, {group: population[group]})
        rows.append((group, f, len(by_group_full[group]), s, population[group], k / t if t else float("nan")))
    k, t = combined(full, sampled, population)

    rng = random.Random(args.seed)
    boots = []
    for _ in range(args.bootstrap):
        resampled = {g: [rng.choice(v) for _ in v] for g, v in sampled.items() if v}
        bk, bt = combined(full, resampled, population)
        boots.append(bk / bt)
    boots.sort()
    lo, hi = boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]

    unchecked = sum(f["unchecked"] for f in full.values()) + sum(r[3]["unchecked"] for r in rows)
    header = (
        "| group | full: mutants | killed | alive | equivalent | rest: population | sampled | killed | alive | "
        "equivalent | estimated score |"
    )
    if args.markdown:
        print(header)
        print("|---|" + "---:|" * 10)
    for group, f, n_full, s, pop, score in rows:
        n_sample = sum(s.values())
        cells = [group, n_full, f["killed"], f["alive"], f["equivalent"], pop, n_sample, s["killed"], s["alive"]]
        cells += [s["equivalent"], f"{100 * score:.1f} %"]
        print(("| " + " | ".join(map(str, cells)) + " |") if args.markdown else "  ".join(map(str, cells)))
    total_line = f"all: estimated {100 * k / t:.1f} % (95 % bootstrap interval {100 * lo:.1f}-{100 * hi:.1f} %)"
    print(f"\n{total_line}; {unchecked} named mutants not checked" if args.markdown else total_line)


if __name__ == "__main__":
    main()
