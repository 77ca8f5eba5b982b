"""scatloss.utils: atomic writes and temporarily frozen parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scatloss.utils import atomic_write, frozen_parameters


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path) -> None:
    target = tmp_path / "sub" / "out.txt"
    atomic_write(target, lambda h: h.write("first"), binary=False)
    atomic_write(target, lambda h: h.write("second"), binary=False)
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_write_failure_leaves_the_previous_file_intact(tmp_path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def broken(handle) -> None:
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_frozen_parameters_builds_no_weight_graph_and_restores_flags_even_on_error() -> None:
    net = nn.Linear(3, 2)
    net.bias.requires_grad_(False)  # the caller's own choice must survive
    x = torch.randn(4, 3, requires_grad=True)
    with frozen_parameters(net, None):
        y = net(x).sum()
    y.backward()
    assert net.weight.grad is None and x.grad is not None
    with pytest.raises(RuntimeError), frozen_parameters(net):
        raise RuntimeError("inside")
    assert net.weight.requires_grad and not net.bias.requires_grad
