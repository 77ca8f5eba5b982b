"""Checkpoint files of the reference trainer (examples/aotgan/checkpoint.py): content hash, fallback, temp files.

Every single-bit flip of a checkpoint must be refused, not loaded as slightly different weights: a plain
``torch.save`` zip stores tensor bytes without a checksum that ``torch.load`` checks, so before the header
most flips loaded silently (``test_plain_torch_save_accepts_most_bit_flips`` shows that this is so, which is
what makes the hash necessary).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from examples.aotgan.checkpoint import (
    FORMAT,
    HEADER_PREFIX,
    TrainerError,
    load_checkpoint,
    load_newest,
    remove_stale_temp_files,
    save_checkpoint,
    verify_checkpoint,
)
from examples.aotgan.train import TrainConfig, Trainer
from scatloss.masks import MaskGenerator

TINY: dict[str, Any] = {
    "size": 32, "batch_size": 2, "g_channels": 4, "g_blocks": 1, "d_channels": 4, "d_depth": 3, "progress": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    """A real trainer state (networks, Adam states after one step, RNG states) of the full objective."""
    trainer = Trainer(TrainConfig(objective="full", **TINY), data=False)
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    hole = torch.zeros(2, 1, 32, 32)
    hole[:, :, 8:20, 6:24] = 1
    trainer.train_step(image, hole)
    trainer.masks = MaskGenerator(32, 32, seed=0)  # data=False builds no mask stream; state_dict saves one
    return trainer.state_dict()


@pytest.fixture(scope="module")
def saved(state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "step_0000001.pt"
    save_checkpoint(state, path)
    return path.read_bytes()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def test_round_trip_is_exact_and_the_header_holds_length_and_sha256(
    state: dict[str, Any], saved: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(saved)
    assert _same(load_checkpoint(path), state)
    header, payload = saved.split(b"\n", 1)
    assert header.startswith(HEADER_PREFIX) and header.endswith(f" bytes={len(payload)}".encode())
    assert hashlib.sha256(payload).hexdigest().encode() in header
    assert _same(torch.load(io.BytesIO(payload), weights_only=True), state)  # the payload is a plain torch.save


@given(bit=st.integers(min_value=0))
def test_every_single_bit_flip_is_refused(saved: bytes, tmp_path_factory: pytest.TempPathFactory, bit: int) -> None:
    bit %= len(saved) * 8
    path = tmp_path_factory.mktemp("flip") / "step_0000001.pt"
    path.write_bytes(_flip(saved, bit))
    with pytest.raises(TrainerError, match="corrupted|cannot be read"):
        load_checkpoint(path)
    with pytest.raises(TrainerError, match="corrupted|cannot be read"):
        verify_checkpoint(path)


def test_every_bit_flip_in_the_header_is_refused(saved: bytes, tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    for byte in range(saved.index(b"\n") + 1):  # every header byte, each at one of its 8 bits
        path.write_bytes(_flip(saved, 8 * byte + byte % 8))
        with pytest.raises(TrainerError):
            verify_checkpoint(path)


def test_plain_torch_save_accepts_most_bit_flips(state: dict[str, Any], tmp_path: Path) -> None:
    """Why the hash: ``torch.load`` of a plain zip does not notice flips in tensor data (the issue's 38 of 40)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    generator = torch.Generator().manual_seed(0)
    accepted = 0
    for bit in torch.randint(len(data) * 8, (40,), generator=generator).tolist():
        try:
            torch.load(io.BytesIO(_flip(data, bit)), weights_only=True)
        except Exception:
            continue
        accepted += 1
    assert accepted >= 20


def test_a_plain_torch_save_checkpoint_still_loads_with_a_warning(state: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save(state, path)  # what the trainer wrote before the header existed
    with pytest.warns(UserWarning, match="no content hash"):
        assert _same(load_checkpoint(path), state)


def test_truncated_and_extended_files_name_the_problem(saved: bytes, tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(saved[:-1])
    with pytest.raises(TrainerError, match=r"promises \d+ bytes .* \(truncated\)"):
        verify_checkpoint(path)
    path.write_bytes(saved + b"\0")
    with pytest.raises(TrainerError, match=r"bytes appended"):
        verify_checkpoint(path)
    path.write_bytes(saved[:50])
    with pytest.raises(TrainerError, match="damaged header"):
        verify_checkpoint(path)


# ---- fallback ---------------------------------------------------------------------------------------------------


def _checkpoints(tmp_path: Path, state: dict[str, Any], steps: list[int]) -> list[Path]:
    paths = []
    for step in steps:
        paths.append(save_checkpoint({**state, "step": step}, tmp_path / f"step_{step:07d}.pt"))
    return paths


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_with_a_warning(
    state: dict[str, Any], tmp_path: Path
) -> None:
    older, newest = _checkpoints(tmp_path, state, [2, 4])
    newest.write_bytes(_flip(newest.read_bytes(), 8 * (len(newest.read_bytes()) // 2)))
    with pytest.warns(UserWarning, match=r"step_0000004\.pt.*corrupted.*falling back to .*step_0000002\.pt"):
        path, loaded, skipped = load_newest([older, newest])
    assert path == older and loaded["step"] == 2 and skipped == [newest]


def test_the_newest_good_checkpoint_loads_without_a_warning(state: dict[str, Any], tmp_path: Path) -> None:
    paths = _checkpoints(tmp_path, state, [1, 2, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path, loaded, skipped = load_newest(paths)
    assert path == paths[-1] and loaded["step"] == 3 and skipped == []


def test_all_checkpoints_corrupt_is_one_clear_error_naming_each(state: dict[str, Any], tmp_path: Path) -> None:
    paths = _checkpoints(tmp_path, state, [2, 4])
    paths[0].write_bytes(paths[0].read_bytes()[:-10])
    paths[1].write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning), pytest.raises(TrainerError, match=r"none of the 2 checkpoint\(s\) loads") as info:
        load_newest(paths)
    assert "step_0000002.pt" in str(info.value) and "step_0000004.pt" in str(info.value)


def test_a_foreign_format_is_refused_like_a_corrupt_file(tmp_path: Path) -> None:
    path = save_checkpoint({"format": "someone else's", "step": 1}, tmp_path / "step_0000001.pt")
    with pytest.raises(TrainerError, match=f"expected format {FORMAT!r}"):
        load_checkpoint(path)


# ---- temporary files --------------------------------------------------------------------------------------------


def test_remove_stale_temp_files_touches_only_the_atomic_write_pattern(tmp_path: Path) -> None:
    from scatloss.utils import atomic_write

    stale = tmp_path / ".step_0000004.pt.k2j3h4.tmp"
    keep = [
        tmp_path / "step_0000002.pt",
        tmp_path / ".notes.txt.abc.tmp",  # another target's temporary file
        tmp_path / "step_0000004.pt.tmp",  # not atomic_write's name
        tmp_path / "sub" / ".step_0000001.pt.x.tmp",  # not directly in the folder
    ]
    for path in [stale, *keep]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and all(p.exists() for p in keep)

    # the pattern is atomic_write's own: a write interrupted by an exception leaves no file, a killed one this name
    def interrupted(handle: Any) -> None:
        handle.write(b"half")
        names.extend(p.name for p in tmp_path.glob(".step_0000009.pt.*.tmp"))
        raise KeyboardInterrupt

    names: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "step_0000009.pt", interrupted)
    assert len(names) == 1
