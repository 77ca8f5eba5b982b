"""Data-parallel training of the reference trainer: 2 CPU processes (gloo) against one process.

What is shown, for one training step at fixed weights (``Trainer.train_step(..., update=False)``, float64):

* every process runs the step on its half of a fixed batch; G's gradients are averaged by DDP, D's and the
  projection head's by the trainer's coalesced ``all_reduce``;
* the averaged gradients equal **the mean of one process's gradients on each half** for every objective:
  that is what data parallelism computes, and it holds whatever the loss;
* they equal **one process's gradients on the concatenated batch** exactly when the loss is a mean of
  per-sample terms over equal halves: D's loss for every objective (hinge / LSGAN means, SCAT per-pixel
  means) and G's loss for ``baseline`` and ``scat``. G's loss is batch-coupled, so it differs, for
  ``full`` (the textural term is a ratio of batch means; ``negatives="batch"`` makes each process draw its
  negatives from its own masks only, M = local batch size) and for ``aotgan`` (smgan's generator term is
  normalised by the hole area of the local batch). The tests assert that difference too, so the
  documentation cannot drift from the code.

Spectral norm runs in train mode: its power iteration does not depend on the data, and every process starts
from the same ``u``, so it advances identically in both set-ups. Each gradient is computed by a freshly built
trainer, so every computation starts from the same weights and power-iteration vectors.

The same workers then run the command-line entry point for 2 steps (``WORLD_SIZE``/``RANK``/``MASTER_*`` in the
environment, exactly as ``torchrun`` sets them): DistributedSampler data, per-process mask streams, rank-0 files.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from examples.aotgan.checkpoint import load_checkpoint
from examples.aotgan.train import TrainConfig, Trainer, main
from scatloss.masks import MaskGenerator

BATCH = 4
SIZE = 32
TINY = {
    "size": SIZE, "batch_size": BATCH // 2, "g_channels": 4, "g_blocks": 1, "d_channels": 4, "d_depth": 3,
    "progress": False,
}  # fmt: skip
CASES = ("baseline", "scat", "full", "aotgan")
SEPARABLE_G = {"baseline": True, "scat": True, "full": False, "aotgan": False}


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    image = torch.rand(BATCH, 3, SIZE, SIZE, generator=gen, dtype=torch.float64) * 2 - 1
    hole = MaskGenerator(SIZE, SIZE, seed=5).sample(BATCH)
    return image, hole


def _gradients(objective: str, image: torch.Tensor, hole: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    trainer = Trainer(TrainConfig(objective=objective, **TINY), data=False)
    trainer.train_step(image, hole, update=False)

    def grads(params: object) -> list[torch.Tensor]:
        return [p.grad.detach().clone() for p in params if p.grad is not None]  # type: ignore[attr-defined]

    return {
        "G": grads(trainer.G.parameters()),
        "D": grads(trainer.D.parameters()),
        "head": grads(trainer.loss.parameters()),
    }


def _worker(rank: int, world: int, port: int, out: str, data: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        {"WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
         "MASTER_PORT": str(port)}
    )  # fmt: skip
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    image, hole = _batch()
    half = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    for objective in CASES:
        grads = _gradients(objective, image[half], hole[half])  # joins the process group on first use
        if rank == 0:
            torch.save(grads, Path(out) / f"grads_{objective}.pt")
    torch.set_default_dtype(previous)
    argv = [
        "--objective", "full", "--data", data, "--out", str(Path(out) / "run"), "--steps", "2", "--size", str(SIZE),
        "--batch-size", "2", "--g-channels", "4", "--g-blocks", "1", "--d-channels", "4", "--d-depth", "3",
        "--log-every", "1", "--no-progress", "--eval-images", "2", "--grid-images", "2",
    ]  # fmt: skip
    if main(argv) != 0:  # destroys the process group
        raise RuntimeError(f"rank {rank}: main() failed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    data = out / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / f"img{i}.png")
    mp.spawn(_worker, args=(2, _free_port(), str(out), str(data)), nprocs=2, join=True)
    return out


def _close(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.allclose(x, y, rtol=1e-9, atol=1e-12) for x, y in zip(a, b, strict=True))


def _reference(objective: str) -> tuple[dict[str, list[torch.Tensor]], dict[str, list[torch.Tensor]]]:
    """One process: gradients on the concatenated batch, and the mean of the gradients on each half."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        image, hole = _batch()
        full = _gradients(objective, image, hole)
        halves = [_gradients(objective, image[s], hole[s]) for s in (slice(0, BATCH // 2), slice(BATCH // 2, BATCH))]
    finally:
        torch.set_default_dtype(previous)
    mean = {k: [(a + b) / 2 for a, b in zip(halves[0][k], halves[1][k], strict=True)] for k in full}
    return full, mean


@pytest.mark.slow
@pytest.mark.parametrize("objective", CASES)
def test_two_processes_average_the_per_process_gradients(two_process_run: Path, objective: str) -> None:
    ddp = torch.load(two_process_run / f"grads_{objective}.pt", weights_only=True)
    full, mean = _reference(objective)
    for net in ("G", "D", "head"):
        assert _close(ddp[net], mean[net]), f"{objective}: {net} gradients != mean of the per-half gradients"
    assert ddp["G"] and ddp["D"]
    assert bool(ddp["head"]) == (objective == "full")  # the projection head exists only with the semantic term
    # D's loss is a mean of per-sample (per-pixel) terms for every objective: the halves add up to the batch.
    assert _close(ddp["D"], full["D"]), f"{objective}: D gradients != one process on the concatenated batch"
    # G's loss is separable for baseline/scat only (see the module docstring).
    assert _close(ddp["G"], full["G"]) == SEPARABLE_G[objective]


@pytest.mark.slow
def test_torchrun_style_run_writes_once_and_keeps_every_process_rng(two_process_run: Path) -> None:
    run = two_process_run / "run"
    state = load_checkpoint(run / "checkpoints" / "step_0000002.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    masks = [r["masks"]["rng_state"] for r in state["rng"]]
    assert not torch.equal(masks[0], masks[1])  # each process draws its own masks
    lines = (run / "train_log.jsonl").read_text().splitlines()
    assert [int(line.split(",")[0].split(":")[1]) for line in lines] == [1, 2]  # rank 0 alone writes
    assert (run / "metrics.json").exists() and list((run / "samples").glob("*.png"))
