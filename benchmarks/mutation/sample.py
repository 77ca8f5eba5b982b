"""Draw a seeded uniform sample of mutants per module group, for a mutation score when a full run does not fit.

A full ``make mutate`` is ~7,800 mutants; on 2 CPU cores that is many hours. This prints the names of a random
sample (``--per-group`` mutants of each group, drawn without replacement from the mutants mutmut generated and
not yet checked), one per line, for ``mutmut run $(cat sample.txt)``; ``score.py --wilson`` then reports each
group's score on the mutants checked with a 95 % Wilson interval. Usage (after ``mutmut run`` has generated
``mutants/``, e.g. by ``make mutate MUTANTS=none``)::

    python benchmarks/mutation/sample.py --per-group 100 --seed 2026 > sample.txt
    OMP_NUM_THREADS=1 HYPOTHESIS_PROFILE=mutate TRITON_INTERPRET=1 PYTHONHASHSEED=0 \
        python -m mutmut run --max-children 2 $(cat sample.txt)
    python benchmarks/mutation/score.py --wilson --survivors

Groups: ``scatloss.functional``, ``scatloss.ops`` (every module under it), ``scatloss.criterion``,
``scatloss.taps``, ``scatloss.masks``, ``scatloss.evaluate``, ``scatloss.adapters`` (every module under it).
The draw is a pure function of ``--seed`` and the set of mutant names, so it can be repeated.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

GROUPS = (
    "scatloss.functional",
    "scatloss.ops",
    "scatloss.criterion",
    "scatloss.taps",
    "scatloss.masks",
    "scatloss.evaluate",
    "scatloss.adapters",
)


def group_of(mutant: str) -> str | None:
    for group in GROUPS:
        if mutant == group or mutant.startswith(group + "."):
            return group
    return None


def mutants(root: Path) -> dict[str, int | None]:
    """Every generated mutant name -> its exit code (``None``: not checked yet)."""
    out: dict[str, int | None] = {}
    for meta in sorted((root / "scatloss").rglob("*.meta")):  # not the copy of benchmarks/mutation/results
        out.update(json.loads(meta.read_text()).get("exit_code_by_key", {}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("mutants"))
    parser.add_argument("--per-group", type=int, default=100, help="mutants drawn per group (default 100)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--groups", nargs="*", default=list(GROUPS), help="groups to draw from (default: all)")
    parser.add_argument("--include-checked", action="store_true", help="draw from checked mutants too")
    parser.add_argument(
        "--exclude",
        type=Path,
        help="file of mutant names (one per line, e.g. those run in full) never to draw: sample the rest",
    )
    args = parser.parse_args()
    if args.per_group < 1:
        parser.error(f"--per-group: expected a positive int, got {args.per_group}")
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"--groups: expected names from {list(GROUPS)}, got {unknown}")
    excluded = set(args.exclude.read_text().split()) if args.exclude else set()
    by_group: dict[str, list[str]] = defaultdict(list)
    for name, code in mutants(args.root).items():
        group = group_of(name)
        if group in args.groups and name not in excluded and (code is None or args.include_checked):
            by_group[group].append(name)
    if not by_group:
        parser.error(f"no mutants under {args.root} (run mutmut once to generate them)")
    for group in args.groups:
        names = sorted(by_group[group])
        rng = random.Random(f"{args.seed}:{group}")
        for name in rng.sample(names, min(args.per_group, len(names))):
            print(name)


if __name__ == "__main__":
    main()
