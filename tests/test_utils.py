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


def test_peak_memory_bytes_counts_the_high_water_mark_above_the_start() -> None:
    from scatloss.utils import peak_memory_bytes

    keep = torch.zeros(1 << 16)  # allocated before the call: not counted

    def two_then_one() -> None:
        a = torch.ones(1 << 14)  # 64 KiB
        b = torch.ones(1 << 14)  # 64 KiB: both alive -> 128 KiB high-water mark
        del a, b
        c = torch.ones(1 << 12)  # 16 KiB after both were freed
        del c

    peak = peak_memory_bytes(two_then_one)
    assert 2 * (1 << 16) <= peak < 2 * (1 << 16) + 4096
    assert peak_memory_bytes(lambda: None) == 0
    assert keep.numel() == 1 << 16
    with pytest.raises(ValueError, match="device"):
        peak_memory_bytes(lambda: None, "meta")
