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
Rank 1 looks at the run folder a second late: every process must have checked ``--out`` before rank 0 writes
into it (the race that once failed with ``[rank 1] --out ... already holds a run``). Last, rank 1 alone finds a
problem: both processes must stop with exit status 2 instead of one training while the other has left.

The workers run under a deadline (:data:`DEADLINE_S`): a hang (once, 5 minutes in the gloo process-group
teardown) kills them and fails the test with a message, instead of using up CI's time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

import examples.aotgan.train as train_module
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
DEADLINE_S = 180  # the workers take 12-20 s on 2 busy cores; pytest-timeout (below) is the backstop
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


def _late_check(run_dir_seen: list[list[str]]) -> None:
    """Rank 1: look at the run folder a second after rank 0, and record what rank 0 had written by then."""
    check = train_module._existing_run

    def late(run_dir: Path) -> list[Path]:
        time.sleep(1.0)
        run_dir_seen.append(sorted(p.name for p in run_dir.rglob("*")) if run_dir.exists() else [])
        return check(run_dir)

    train_module._existing_run = late  # type: ignore[assignment]


def _main(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    return status, err.getvalue()


def _worker(rank: int, world: int, ports: tuple[int, int], out: str, data: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        {"WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
         "MASTER_PORT": str(ports[0])}
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
        "--objective", "full", "--data", data, "--steps", "2", "--size", str(SIZE),
        "--batch-size", "2", "--g-channels", "4", "--g-blocks", "1", "--d-channels", "4", "--d-depth", "3",
        "--log-every", "1", "--no-progress", "--eval-images", "2", "--grid-images", "2",
    ]  # fmt: skip
    seen: list[list[str]] = []
    check = train_module._existing_run
    if rank == 1:
        _late_check(seen)
    status, err = _main([*argv, "--out", str(Path(out) / "run")])  # destroys the process group
    train_module._existing_run = check  # type: ignore[assignment]
    result: dict[str, object] = {"run": status, "run_err": err, "seen_by_late_check": seen}

    os.environ["MASTER_PORT"] = str(ports[1])  # a fresh process group: rank 1 alone refuses to start
    if rank == 1:
        train_module._existing_run = lambda run_dir: [run_dir / "train_log.jsonl"]  # type: ignore[assignment]
    status, err = _main([*argv, "--out", str(Path(out) / "refused")])
    train_module._existing_run = check  # type: ignore[assignment]
    result.update(refused=status, refused_err=err)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))


def _free_ports() -> tuple[int, int]:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return int(a.getsockname()[1]), int(b.getsockname()[1])


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    data = out / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / f"img{i}.png")
    context = mp.start_processes(
        _worker, args=(2, _free_ports(), str(out), str(data)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=2):  # raises if a worker failed (and terminates the other)
            if time.monotonic() > deadline:
                pytest.fail(f"the 2-process run did not finish in {DEADLINE_S} s (a hang?); its workers were killed")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join(10)
    return out


def _result(run: Path, rank: int) -> dict[str, object]:
    return json.loads((run / f"rank{rank}.json").read_text())  # type: ignore[no-any-return]


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
@pytest.mark.timeout(DEADLINE_S + 60)  # the first test to use the fixture pays for the 2-process run
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
@pytest.mark.timeout(DEADLINE_S + 60)
def test_torchrun_style_run_writes_once_and_keeps_every_process_rng(two_process_run: Path) -> None:
    assert [_result(two_process_run, r)["run"] for r in (0, 1)] == [0, 0], _result(two_process_run, 1)["run_err"]
    run = two_process_run / "run"
    state = load_checkpoint(run / "checkpoints" / "step_0000002.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    masks = [r["masks"]["rng_state"] for r in state["rng"]]
    assert not torch.equal(masks[0], masks[1])  # each process draws its own masks
    lines = (run / "train_log.jsonl").read_text().splitlines()
    assert [int(line.split(",")[0].split(":")[1]) for line in lines] == [1, 2]  # rank 0 alone writes
    assert (run / "metrics.json").exists() and list((run / "samples").glob("*.png"))


@pytest.mark.slow
@pytest.mark.timeout(DEADLINE_S + 60)
def test_every_process_checks_the_run_folder_before_rank_0_writes_it(two_process_run: Path) -> None:
    late = _result(two_process_run, 1)
    assert late["run"] == 0, late["run_err"]
    assert late["seen_by_late_check"] == [[]]  # a second late, and still nothing written by rank 0
    assert (two_process_run / "run" / "config.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(DEADLINE_S + 60)
def test_a_problem_found_by_one_process_stops_every_process(two_process_run: Path) -> None:
    rank0, rank1 = _result(two_process_run, 0), _result(two_process_run, 1)
    assert rank0["refused"] == rank1["refused"] == 2
    assert "holds the files of a run" in str(rank1["refused_err"])
    assert "rank 1: --out" in str(rank0["refused_err"])  # rank 0 found nothing itself, and stopped anyway
    assert not (two_process_run / "refused").exists()
