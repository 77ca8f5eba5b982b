"""Mutation score per module from a finished ``mutmut run`` (reads ``mutants/**/*.meta``).

Usage (from the repository root, after ``make mutate``)::

    python benchmarks/mutation/score.py [--equivalent benchmarks/mutation/equivalent.txt] [--markdown]

Score = killed / (mutants checked - documented equivalents). ``killed`` counts pytest failures and
timeouts (a mutant that makes a test hang is caught); ``survived`` a mutant every covering test passed;
``no tests`` a mutant in code no selected test reaches (counted against the score). Equivalent mutants
are listed one per line in ``equivalent.txt`` (``mutant name  # reason``) and excluded from the score
only if they survived. Survivors listed in ``killed_outside.txt`` (killed by a test mutmut cannot run for
them, e.g. a deselected torch.compile test; each checked by hand) count as killed, in the column
``elsewhere``. ``--names FILE`` scores only the listed mutants (a sample); ``--wilson`` adds a 95 % interval;
``--csv RUN`` prints the verdicts as ``RUN,mutant,exit_code`` rows instead (for ``estimate.py --verdicts``).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

KILLED = {1, 3, 36, 24, -24, 152, 255}  # test failure, pytest internal error (mutmut: killed), timeouts
SURVIVED = {0}
NO_TESTS = {5, 33}


def load_equivalents(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition("#")
        out[name.strip()] = reason.strip()
    return out


def wilson(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``killed / n`` (for a score measured on a random sample)."""
    if n == 0:
        return (0.0, 1.0)
    p = killed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def group_of(mutant: str, groups: bool) -> str:
    """The module of a mutant, or with ``groups`` its package for ``scatloss.ops`` / ``scatloss.adapters``."""
    module = module_of(mutant)
    if groups:
        for package in ("scatloss.ops", "scatloss.adapters"):
            if module.startswith(package + "."):
                return package
    return module


def module_of(mutant: str) -> str:
    """``scatloss.criterion.xǁSCATCriterionǁ_pool__mutmut_3`` -> ``scatloss.criterion``."""
    head = mutant.split(".x", 1)[0] if ".x" in mutant else mutant.rsplit(".", 1)[0]
    return head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("mutants"))
    parser.add_argument("--equivalent", type=Path, default=Path(__file__).with_name("equivalent.txt"))
    parser.add_argument(
        "--killed-elsewhere",
        type=Path,
        default=Path(__file__).with_name("killed_outside.txt"),
        help="survivors killed by a test mutmut cannot run for them (counted as killed, column 'elsewhere')",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--survivors", action="store_true", help="list surviving mutants that are not equivalent")
    parser.add_argument(
        "--wilson", action="store_true", help="add a 95 %% Wilson interval (a score measured on a random sample)"
    )
    parser.add_argument("--groups", action="store_true", help="one row for scatloss.ops and one for scatloss.adapters")
    parser.add_argument(
        "--names", type=Path, help="count only the mutants listed in this file (one name per line, e.g. a sample)"
    )
    parser.add_argument(
        "--csv",
        metavar="RUN",
        help="print every checked mutant as a `run,mutant,exit_code` row (no header) labelled RUN, not the table "
        "(a record of the run for estimate.py --verdicts)",
    )
    args = parser.parse_args()
    equivalents = load_equivalents(args.equivalent)
    elsewhere = load_equivalents(args.killed_elsewhere)  # same file format
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: list[str] = []
    only = set(args.names.read_text().split()) if args.names else None
    for meta in sorted((args.root / "scatloss").rglob("*.meta")) or sorted(args.root.rglob("*.meta")):
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            if only is not None and name not in only:
                continue
            c = counts[group_of(name, args.groups)]
            if args.csv is not None:
                if code is not None:
                    print(f"{args.csv},{name},{code}")
                continue
            if code is None:
                c["not checked"] += 1
            elif code in KILLED:
                c["killed"] += 1
            elif code in SURVIVED:
                if name in equivalents:
                    c["equivalent"] += 1
                elif name in elsewhere:
                    c["elsewhere"] += 1
                else:
                    c["survived"] += 1
                    survivors.append(name)
            elif code in NO_TESTS:
                c["no tests"] += 1
            else:
                c["other"] += 1
    if args.csv is not None:
        return
    cols = ("killed", "elsewhere", "survived", "no tests", "equivalent", "other", "not checked")
    rows = []
    total: Counter[str] = Counter()
    for module in sorted(counts):
        c = counts[module]
        total.update(c)
        rows.append((module, c))
    rows.append(("all", total))
    if args.markdown:
        print("| module | " + " | ".join(cols) + " | score |" + (" 95 % interval |" if args.wilson else ""))
        print("|---|" + "---:|" * (len(cols) + 1 + args.wilson))
    for module, c in rows:
        killed = c["killed"] + c["elsewhere"]
        scored = killed + c["survived"] + c["no tests"] + c["other"]
        score = f"{100 * killed / scored:.1f} %" if scored else "-"
        low, high = wilson(killed, scored)
        interval = f"{100 * low:.1f}-{100 * high:.1f} %" if scored else "-"
        if args.markdown:
            extra = f" {interval} |" if args.wilson else ""
            print(f"| {module} | " + " | ".join(str(c[k]) for k in cols) + f" | {score} |" + extra)
        else:
            extra = f"  95% {interval}" if args.wilson else ""
            print(f"{module:40s} " + " ".join(f"{k}={c[k]}" for k in cols) + f"  score={score}" + extra)
    if args.survivors:
        print("\nsurvivors (not documented as equivalent):")
        for name in survivors:
            print("  " + name)


if __name__ == "__main__":
    main()
