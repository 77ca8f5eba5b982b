"""The README never shows code that does not run: every ```python block is executed, in order."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_a_quickstart_of_at_most_fifteen_lines_of_code() -> None:
    quickstart = _blocks()[0]
    lines = [ln for ln in quickstart.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert 5 <= len(lines) <= 16, len(lines)


def test_readme_python_blocks_run_and_give_finite_terms() -> None:
    torch.manual_seed(0)
    namespace: dict[str, object] = {"__name__": "readme"}
    for i, block in enumerate(_blocks()):
        exec(compile(block, f"README.md block {i}", "exec"), namespace)
    g_terms = namespace["g_terms"]
    assert isinstance(g_terms, dict)
    assert set(g_terms) == {"adv", "scat", "text", "sem", "rec", "total"}
    assert all(math.isfinite(float(v.detach())) for v in g_terms.values())
    # downstream property tests shown in the README are real tests: run them
    for name, fn in list(namespace.items()):
        if name.startswith("test_") and callable(fn):
            fn()
