"""The reference AOT-GAN-style trainer (examples/aotgan): every objective end to end, exact resume, clean failures.

Runs are tiny (32x32, 4-channel nets, 2-4 steps) and single-threaded (conftest.py): tiny convolutions are
dominated by thread synchronisation, and on a busy machine two threads are many times slower than one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from examples.aotgan.checkpoint import FORMAT, TrainerError, load_checkpoint, save_checkpoint
from examples.aotgan.figures import label_grid
from examples.aotgan.losses import (
    SoftMaskPatchGANLoss,
    gaussian_blur,
    smgan_blur_for_size,
    smgan_generator_loss,
)
from examples.aotgan.networks import PatchDiscriminator
from examples.aotgan.train import OBJECTIVES, TrainConfig, Trainer, main, run
from tests._trainer_settings import TINY

ROOT = Path(__file__).resolve().parents[1]


def _config(out: Path, **overrides: Any) -> TrainConfig:
    return TrainConfig(out=str(out), **{**TINY, **overrides})


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def _write_images(folder: Path, n: int, size: int = 40, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(folder / f"photo_{i}.png")
    return folder


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed 2-step run of the full objective (its folder is copied, never modified, by the tests)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run(_config(out, objective="full", steps=2))
    return out


# ---- end to end -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_each_objective_writes_grid_metrics_log_and_checkpoint(tmp_path: Path, objective: str) -> None:
    result = run(_config(tmp_path, objective=objective, steps=2))

    grids = sorted((tmp_path / "samples").glob("step_*.png"))
    assert [g.name for g in grids] == ["step_0000002.png"]
    # 4 rows (corrupted, output, truth, D's map) x 2 columns of 32+2 px, with captions drawn by figures.label_grid
    trainer = Trainer(_config(tmp_path / "captions", objective=objective, steps=2), data=True)
    rows, columns, title = trainer.grid_captions()
    assert len(rows) == 4 and len(columns) == 2 and all(c.endswith("% holes") for c in columns)
    labelled = label_grid(np.zeros((4 * 34, 2 * 34, 3), np.uint8), rows, columns, title=title)
    with Image.open(grids[0]) as grid:
        assert grid.size == (labelled.shape[1], labelled.shape[0]) and grid.mode == "RGB"
        assert grid.size[0] > 2 * 2 * 34 and grid.size[1] > 2 * 4 * 34  # enlarged, plus caption margins

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["objective"] == objective and metrics["step"] == 2
    assert [b["name"] for b in metrics["buckets"]] == ["0-20%", "20-40%", "40-60%"]
    for bucket in metrics["buckets"]:
        assert bucket["count"] == 2
        assert all(math.isfinite(bucket[k]) for k in ("l1", "psnr", "ssim"))
    assert result["buckets"] == metrics["buckets"]

    lines = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    terms = OBJECTIVES[objective] or ("adv", "rec")
    assert {k for k in lines[-1] if k.startswith("g_")} == {f"g_{t}" for t in terms} | {"g_total"}
    assert all(math.isfinite(v) for line in lines for k, v in line.items() if k.startswith(("g_", "d_")))

    state = load_checkpoint(tmp_path / "checkpoints" / "step_0000002.pt")  # weights_only=True inside
    assert state["format"] == FORMAT and state["step"] == 2 and state["config"]["objective"] == objective
    assert json.loads((tmp_path / "config.json").read_text())["objective"] == objective


def test_scat_objective_trains_the_projection_head_with_the_generator(tmp_path: Path) -> None:
    trainer = Trainer(_config(tmp_path, objective="full"), data=False)
    head = list(trainer.loss.parameters())
    assert head and all(any(p is q for g in trainer.opt_g.param_groups for q in g["params"]) for p in head)
    assert not any(p is q for p in head for q in trainer.opt_d.param_groups[0]["params"])
    assert not list(Trainer(_config(tmp_path, objective="scat+text"), data=False).loss.parameters())


# ---- resume ---------------------------------------------------------------------------------------------------------


def _assert_same_state(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"differs at {path}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"keys differ at {path}"
        for key in a:
            _assert_same_state(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"lengths differ at {path}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"differs at {path}: {a!r} != {b!r}"


def test_resume_continues_bit_exactly(tmp_path: Path) -> None:
    # 3 batches per epoch: the 4 steps cross an epoch boundary, the interruption falls mid-epoch.
    settings = {"objective": "full", "train_length": 12, "ckpt_every": 2}
    run(_config(tmp_path / "straight", steps=4, **settings))
    run(_config(tmp_path / "resumed", steps=2, **settings))
    run(_config(tmp_path / "resumed", steps=4, resume=str(tmp_path / "resumed"), **settings))

    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "step_0000004.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "step_0000004.pt")
    assert (a["epoch"], a["batch_in_epoch"]) == (1, 1)
    for key in ("generator", "discriminator", "loss", "optim_g", "optim_d", "rng", "step", "epoch", "batch_in_epoch"):
        _assert_same_state(a[key], b[key], key)  # parameters with torch.equal, Adam moments, SN vectors, RNGs

    def log(run_dir: Path) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        return [{k: v for k, v in line.items() if k != "time_s"} for line in lines]

    assert log(tmp_path / "straight") == log(tmp_path / "resumed")  # same losses, each step logged once
    assert (
        json.loads((tmp_path / "straight" / "metrics.json").read_text())["buckets"]
        == json.loads((tmp_path / "resumed" / "metrics.json").read_text())["buckets"]
    )


def test_cli_resume_takes_the_settings_from_the_checkpoint(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "continued"
    assert main(["--resume", str(finished_run), "--out", str(out), "--steps", "3", "--no-progress"]) == 0
    state = load_checkpoint(out / "checkpoints" / "step_0000003.pt")
    assert state["config"]["size"] == 32 and state["config"]["objective"] == "full"


# ---- failures: a clear message and nothing overwritten --------------------------------------------------------------


def _foreign_torch_file(path: Path, finished: Path) -> None:
    torch.save({"model": {"weight": torch.zeros(3)}, "epoch": 7}, path)


def _random_bytes(path: Path, finished: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _truncated(path: Path, finished: Path) -> None:
    data = (finished / "checkpoints" / "step_0000002.pt").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_a_dict(path: Path, finished: Path) -> None:
    torch.save(torch.arange(4), path)


def _wrong_shapes(path: Path, finished: Path) -> None:  # our format, matching config, tensors of a wider G
    state = load_checkpoint(finished / "checkpoints" / "step_0000002.pt")
    state["generator"] = Trainer(_config(path.parent / "x", objective="full", g_channels=8), data=False).G.state_dict()
    save_checkpoint(state, path)


BAD_CHECKPOINTS = {
    "foreign torch file": (_foreign_torch_file, "not written by this trainer"),
    "random bytes": (_random_bytes, "cannot be read as a torch checkpoint"),
    "truncated": (_truncated, r"is corrupted: .* \(truncated\)"),
    "not a dict": (_not_a_dict, "not a checkpoint of this trainer"),
    "tensors of another size": (_wrong_shapes, "does not fit this model"),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_stops_cleanly_and_touches_nothing(finished_run: Path, tmp_path: Path, case: str) -> None:
    make, message = BAD_CHECKPOINTS[case]
    bad = tmp_path / "bad.pt"
    make(bad, finished_run)
    before = _snapshot(finished_run)
    with pytest.raises(TrainerError, match=message):
        run(_config(finished_run, objective="full", steps=4, resume=str(bad)))
    assert _snapshot(finished_run) == before


def _error_cases(tmp: Path, finished: Path) -> dict[str, tuple[TrainConfig, str]]:
    empty = tmp / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    masks = tmp / "masks"
    masks.mkdir()
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(masks / "m.png")
    ckpt = str(finished / "checkpoints" / "step_0000002.pt")
    other = tmp / "other" / "checkpoints"
    other.mkdir(parents=True)
    (other / "step_0000002.pt").write_bytes(Path(ckpt).read_bytes())
    return {
        "checkpoint of another size": (
            _config(finished, objective="full", size=64, resume=ckpt),
            "size: checkpoint 32",
        ),
        "checkpoint of another objective": (_config(finished, objective="scat", resume=ckpt), "objective"),
        "missing checkpoint": (_config(finished, resume=str(tmp / "nope.pt")), "does not exist"),
        "missing data folder": (_config(finished, data=str(tmp / "missing"), overwrite=True), "does not exist"),
        "folder without images": (_config(finished, data=str(empty), overwrite=True), "found none"),
        "mask size mismatch": (_config(finished, masks=str(masks), overwrite=True), "16x16 but the images are 32x32"),
        "existing run without --resume": (_config(finished, objective="full"), "already holds a run"),
        "size not divisible": (_config(finished, size=36, overwrite=True), "multiple of 8"),
        "resume into another run's folder": (_config(finished, objective="full", resume=str(other)), "another run"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "checkpoint of another size",
        "checkpoint of another objective",
        "missing checkpoint",
        "missing data folder",
        "folder without images",
        "mask size mismatch",
        "existing run without --resume",
        "size not divisible",
        "resume into another run's folder",
    ],
)
def test_bad_input_stops_cleanly_and_touches_nothing(finished_run: Path, tmp_path: Path, case: str) -> None:
    cfg, message = _error_cases(tmp_path, finished_run)[case]
    before = _snapshot(finished_run)
    with pytest.raises(TrainerError, match=message):
        run(cfg)
    assert _snapshot(finished_run) == before


def test_cli_reports_errors_in_one_line_without_traceback(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pt"
    _random_bytes(bad, finished_run)
    before = _snapshot(finished_run)
    assert main(["--resume", str(bad), "--out", str(finished_run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["--resume", str(finished_run), "--size", "64"]) == 2
    assert "size: checkpoint 32, this run 64" in capsys.readouterr().err
    assert _snapshot(finished_run) == before


# ---- precision, data sources ----------------------------------------------------------------------------------------


def test_bf16_run_is_finite_and_computes_losses_in_float32(tmp_path: Path) -> None:
    result = run(_config(tmp_path, objective="full", steps=2, precision="bf16"))
    assert all(math.isfinite(b["psnr"]) for b in result["buckets"])
    lines = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(v) for line in lines for k, v in line.items() if k.startswith(("g_", "d_")))

    trainer = Trainer(_config(tmp_path / "t", objective="full", precision="bf16"), data=False)
    image = torch.rand(4, 3, 32, 32) * 2 - 1
    hole = torch.zeros(4, 1, 32, 32)
    hole[:, :, 8:20, 8:20] = 1
    terms = trainer.train_step(image, hole)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    global_logits, pixel_logits = trainer.D(image)
    assert global_logits.dtype == pixel_logits.dtype == torch.float32


def test_image_folder_and_mask_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write_images(tmp_path / "photos", 6)
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(3):
        m = np.zeros((32, 32), dtype=np.uint8)
        m[4 + i : 20 + i, 6:22] = 255
        Image.fromarray(m).save(masks / f"mask_{i}.png")
    result = run(
        _config(tmp_path / "run", objective="scat", steps=2, data=str(data), masks=str(masks), tensorboard=True)
    )
    assert [b["count"] for b in result["buckets"]] == [1, 1, 1]  # the held-out split: 1 of 6 files
    err = capsys.readouterr().err
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert "TensorBoard is not installed" in err


# ---- the smgan loss -------------------------------------------------------------------------------------------------


def test_smgan_blur_scales_aotgan_settings_with_image_size() -> None:
    assert smgan_blur_for_size(512) == (71, 10.0)
    assert smgan_blur_for_size(256) == (35, 5.0)
    assert smgan_blur_for_size(64) == (9, 1.25)
    ones = torch.ones(1, 1, 32, 32)
    assert torch.allclose(gaussian_blur(ones, 9, 1.25)[..., 8:-8, 8:-8], ones[..., 8:-8, 8:-8])
    assert gaussian_blur(ones, 9, 1.25)[0, 0, 0, 0] < 1  # zero padding at the border, as AOT-GAN


def test_smgan_targets_blurred_hole_for_fakes_and_weights_generator_by_hole() -> None:
    hole = torch.zeros(2, 1, 16, 16)
    hole[:, :, 4:12, 4:12] = 1
    fake_map = torch.zeros(2, 1, 16, 16, requires_grad=True)
    smgan_generator_loss(fake_map, hole, "hole").backward()
    assert fake_map.grad is not None and (fake_map.grad[hole == 0] == 0).all() and (fake_map.grad[hole == 1] < 0).all()
    assert torch.allclose(smgan_generator_loss(torch.zeros(2, 1, 16, 16), hole, "release"), torch.tensor(1.0))

    torch.manual_seed(0)
    d = PatchDiscriminator(base_channels=4)
    loss = SoftMaskPatchGANLoss(d, kernel_size=5, sigma=1.0)
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    terms = loss.discriminator_step(image.clone(), image, hole)
    assert set(terms) == {"adv", "total"}
    prediction = image.clone().requires_grad_(True)
    g_terms = loss.generator_step(prediction, image, hole)
    g_terms["total"].backward()
    assert set(g_terms) == {"adv", "rec", "total"} and all(p.grad is None for p in d.parameters())
    assert all(p.requires_grad for p in d.parameters()) and not list(loss.parameters())


# ---- entry points ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["examples/aotgan/train.py"], ["-m", "examples.aotgan.train"], ["-m", "examples.aotgan"]]
)
def test_entry_points_start_from_the_repository_root(command: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, *command, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "--objective" in done.stdout and "--resume" in done.stdout


def test_readme_retrofit_lines_are_verbatim_from_the_trainer() -> None:
    readme = (ROOT / "examples" / "aotgan" / "README.md").read_text()
    block = readme.split("```diff\n", 1)[1].split("```", 1)[0]

    def code(line: str) -> str:  # a line without its trailing comment
        return line.split("  #")[0].strip()

    source = {code(line) for line in (ROOT / "examples" / "aotgan" / "train.py").read_text().splitlines()}
    lines = [line[1:] for line in block.splitlines() if line[:1] in "+- " and line[1:].strip() != "..."]
    assert len(lines) > 15
    missing = [line for line in lines if code(line) not in source]
    assert not missing, f"README retrofit lines not in train.py: {missing}"


def test_a_checkpoint_older_than_a_setting_resumes_with_its_default(finished_run: Path, tmp_path: Path) -> None:
    """``colour_augment`` came after the first checkpoints: one whose config lacks it resumes as ``False`` (what it
    was trained with) and is refused with ``--colour-augment``, by name."""
    old = tmp_path / "old.pt"
    state = load_checkpoint(finished_run / "checkpoints" / "step_0000002.pt")
    del state["config"]["colour_augment"]
    save_checkpoint(state, old)
    run(_config(tmp_path / "a", objective="full", steps=3, resume=str(old)))
    assert load_checkpoint(tmp_path / "a" / "checkpoints" / "step_0000003.pt")["config"]["colour_augment"] is False
    with pytest.raises(TrainerError, match="colour_augment: checkpoint False, this run True"):
        run(_config(tmp_path / "b", objective="full", steps=3, resume=str(old), colour_augment=True))
