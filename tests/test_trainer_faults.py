"""Faults of the reference trainer (examples/aotgan): divergence, corrupt checkpoints, killed writes, bad images.

Each test states what a user is promised when something goes wrong:

* a NaN/inf loss term, gradient or weight stops the run before the update that would use it (one line naming
  the step, the term and the last good checkpoint; exit status 3), or with ``--nonfinite skip`` skips that
  optimiser's update as AMP's grad scaler does, and never reaches a checkpoint;
* a corrupt newest checkpoint is skipped with a warning and the run resumes bit-exactly from the previous one;
* a write killed before its rename leaves a ``.tmp`` file that the next start removes;
* an image that passes ``verify()`` but cannot be decoded stops the start before anything is written.

Runs are tiny (32x32, 4-channel nets, a few steps) and single-threaded (conftest.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from examples.aotgan.checkpoint import NonFiniteError, TrainerError, load_checkpoint
from examples.aotgan.data import ImageFolder
from examples.aotgan.train import TrainConfig, Trainer, main, run
from scatloss.criterion import SCATCriterion
from scatloss.masks import MaskGenerator
from tests._trainer_settings import TINY
from tests._trainer_settings import TINY_ARGS as _BASE_ARGS

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = [*_BASE_ARGS, "--log-every", "1", "--sample-every", "0"]
STATE_KEYS = ("generator", "discriminator", "loss", "optim_g", "optim_d", "rng", "step", "epoch", "batch_in_epoch")


def _config(out: Path, **overrides: Any) -> TrainConfig:
    return TrainConfig(out=str(out), **{**TINY, **overrides})


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1
    return image, MaskGenerator(32, 32, seed=1).sample(4)


def _poison(terms: dict[str, torch.Tensor], key: str, value: float) -> dict[str, torch.Tensor]:
    """``terms`` with ``terms[key]`` (and so the total) turned non-finite, gradients included."""
    bad = terms[key] * value
    return {**terms, key: bad, "total": terms["total"] + bad}


def _poisoning(method: Callable[..., Any], key: str, value: float, calls: set[int]) -> Callable[..., Any]:
    """Wrap a loss's ``*_step`` method: the calls numbered in ``calls`` (1-based) return poisoned terms."""
    count = [0]

    def wrapper(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        count[0] += 1
        terms = method(*args, **kwargs)
        return _poison(terms, key, value) if count[0] in calls else terms

    return wrapper


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return value


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters (not the buffers: spectral norm's power iteration advances in every training forward)."""
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _all_finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def _log_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


# ---- non-finite values: the guard in one step -------------------------------------------------------------------

D_TERMS = ("adv", "scat")
G_TERMS = ("adv", "scat", "text", "sem", "rec")


@settings(max_examples=12)  # each example builds a trainer; 7 terms x 3 values in all
@given(
    side_key=st.sampled_from([("D", k) for k in D_TERMS] + [("G", k) for k in G_TERMS]),
    value=st.sampled_from([math.nan, math.inf, -math.inf]),
)
def test_a_non_finite_term_stops_before_its_update_and_names_it(side_key: tuple[str, str], value: float) -> None:
    side, key = side_key
    trainer = Trainer(TrainConfig(objective="full", **TINY), data=False)
    method = "discriminator_step" if side == "D" else "generator_step"
    setattr(trainer.loss, method, _poisoning(getattr(trainer.loss, method), key, value, {1}))
    before = {"G": _weights(trainer.G), "D": _weights(trainer.D)}

    with pytest.raises(NonFiniteError) as info:
        trainer.train_step(*_batch())

    message = str(info.value)
    assert re.search(rf"^step 1: non-finite .*\b{side.lower()}_{key} = -?(nan|inf)\b", message), message
    assert f"stopped before {side}'s update" in message and "no checkpoint was written yet" in message
    assert _same(_weights(trainer.G), before["G"]) and not trainer.opt_g.state  # G never stepped
    if side == "D":
        assert _same(_weights(trainer.D), before["D"]) and not trainer.opt_d.state
    else:  # D's step came first and was finite
        assert not _same(_weights(trainer.D), before["D"]) and trainer.opt_d.state


def test_skip_policy_skips_only_the_bad_update_counts_it_and_stops_after_max_skips(
    capsys: pytest.CaptureFixture[str],
) -> None:
    trainer = Trainer(TrainConfig(objective="full", nonfinite="skip", max_skips=3, **TINY), data=False)
    trainer.loss.generator_step = _poisoning(trainer.loss.generator_step, "rec", math.nan, {1, 3, 4, 5})
    image, hole = _batch()

    g_before, opt_g_before = _weights(trainer.G), _clone(trainer.opt_g.state_dict())
    d_before = _weights(trainer.D)
    terms = trainer.train_step(image, hole)  # call 1: G's update skipped, D's done
    assert math.isnan(float(terms["g_rec"])) and math.isnan(float(terms["g_total"]))
    assert _same(_weights(trainer.G), g_before) and _same(trainer.opt_g.state_dict(), opt_g_before)
    assert all(p.grad is None for p in trainer.G.parameters())  # the bad gradients were dropped
    assert not _same(_weights(trainer.D), d_before)
    assert (trainer.skips_consecutive, trainer.skips_total) == (1, 1)
    assert "step 1: skipped the update of G (g_rec = nan" in capsys.readouterr().err
    trainer.step += 1

    trainer.train_step(image, hole)  # call 2: clean, G moves, the run of skips is over
    assert not _same(_weights(trainer.G), g_before)
    assert (trainer.skips_consecutive, trainer.skips_total) == (0, 1)
    trainer.step += 1

    for _ in range(2):  # calls 3 and 4: skipped
        trainer.train_step(image, hole)
        trainer.step += 1
    assert (trainer.skips_consecutive, trainer.skips_total) == (2, 3)
    with pytest.raises(NonFiniteError, match=r"step 5: non-finite values in 3 consecutive steps \(--max-skips 3\)"):
        trainer.train_step(image, hole)  # call 5: the third in a row


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_non_finite_weights_always_stop(policy: str) -> None:
    trainer = Trainer(TrainConfig(objective="baseline", nonfinite=policy, **TINY), data=False)
    with torch.no_grad():
        next(trainer.G.parameters()).view(-1)[0] = math.nan
    with pytest.raises(NonFiniteError, match=r"step 1: .*(weights of G are non-finite|d_adv = nan)"):
        trainer.train_step(*_batch())


def test_a_checkpoint_with_non_finite_state_is_never_written(tmp_path: Path) -> None:
    trainer = Trainer(_config(tmp_path, objective="scat"), data=False)
    trainer.masks = MaskGenerator(32, 32, seed=0)  # data=False builds none; the checkpoint saves its state
    trainer.train_step(*_batch())
    trainer.step = 1
    good = trainer.save_checkpoint()
    assert good is not None and good.exists() and trainer.last_checkpoint == good

    first_state = next(iter(trainer.opt_d.state.values()))
    first_state["exp_avg"].view(-1)[0] = math.inf  # e.g. an overflow inside Adam
    trainer.step = 2
    with pytest.raises(NonFiniteError, match=r"step 2: non-finite optim_d\.state\[0\]\.exp_avg.*not written") as info:
        trainer.save_checkpoint()
    assert f"last good checkpoint: {good}" in str(info.value)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [good.name]
    assert load_checkpoint(good)["step"] == 1


def test_a_checkpoint_that_does_not_read_back_intact_rotates_nothing_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import examples.aotgan.train as train_module

    trainer = Trainer(_config(tmp_path, objective="baseline", keep_checkpoints=1), data=False)
    trainer.masks = MaskGenerator(32, 32, seed=0)
    trainer.step = 1
    good = trainer.save_checkpoint()
    assert good is not None

    write = train_module.save_checkpoint

    def bad_disk(state: dict[str, Any], path: Path) -> Path:  # the bytes on disk differ from those written
        written = write(state, path)
        data = bytearray(written.read_bytes())
        data[-100] ^= 1
        written.write_bytes(bytes(data))
        return written

    monkeypatch.setattr(train_module, "save_checkpoint", bad_disk)
    trainer.step = 2
    with pytest.raises(TrainerError, match=r"step_0000002\.pt' is corrupted"):
        trainer.save_checkpoint()
    assert good.exists() and load_checkpoint(good)["step"] == 1  # keep_checkpoints=1, and still kept
    assert trainer.last_checkpoint == good


# ---- non-finite values: whole runs ------------------------------------------------------------------------------


def test_a_diverging_run_stops_in_one_line_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's failure: a NaN at step 5 used to be checkpointed and rotate step 4 away (keep 1)."""
    out = tmp_path / "run"
    monkeypatch.setattr(SCATCriterion, "generator_step", _poisoning(SCATCriterion.generator_step, "rec", math.nan, {5}))
    argv = [*TINY_ARGS, "--out", str(out), "--steps", "6", "--ckpt-every", "2", "--keep-checkpoints", "1"]
    assert main(argv) == 3

    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    good = out / "checkpoints" / "step_0000004.pt"
    assert err.startswith("error: step 5: non-finite g_rec = nan") and f"last good checkpoint: {good}" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000004.pt"]
    state = load_checkpoint(good)
    assert state["step"] == 4 and _all_finite(state)
    assert _log_steps(out) == [1, 2, 3, 4]  # the bad step is not logged as a finished step
    assert not (out / "metrics.json").exists()


def test_the_stop_line_starts_a_line_of_its_own_after_the_progress_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(SCATCriterion, "generator_step", _poisoning(SCATCriterion.generator_step, "adv", math.inf, {2}))
    argv = [*TINY_ARGS, "--progress", "--out", str(tmp_path / "run"), "--steps", "3"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    errors = [line for line in err.split("\n") if "error:" in line]  # tqdm redraws with \r, not \n
    assert len(errors) == 1 and errors[0].startswith("error: step 2: non-finite g_adv = "), err


def test_a_run_with_skipped_steps_finishes_finite_and_records_the_skips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    monkeypatch.setattr(
        SCATCriterion, "discriminator_step", _poisoning(SCATCriterion.discriminator_step, "adv", math.inf, {2, 3})
    )
    assert main([*TINY_ARGS, "--out", str(out), "--steps", "4", "--nonfinite", "skip", "--max-skips", "3"]) == 0
    err = capsys.readouterr().err
    assert len(re.findall(r"step [23]: skipped the update of D \(d_adv = inf", err)) == 2, err
    state = load_checkpoint(out / "checkpoints" / "step_0000004.pt")
    assert _all_finite(state) and state["nonfinite_skips"] == {"total": 2, "consecutive": 0}
    assert all(math.isfinite(b["psnr"]) for b in json.loads((out / "metrics.json").read_text())["buckets"])


# ---- corrupt checkpoints and killed writes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 steps without interruption, a checkpoint after every step (2 kept): the reference for the resumes."""
    out = tmp_path_factory.mktemp("straight") / "run"
    run(_config(out, objective="full", steps=4, ckpt_every=1, keep_checkpoints=2))
    return out


def _assert_resumed_exactly(resumed: Path, straight: Path) -> None:
    a = load_checkpoint(straight / "checkpoints" / "step_0000004.pt")
    b = load_checkpoint(resumed / "checkpoints" / "step_0000004.pt")
    for key in STATE_KEYS:
        assert _same(a[key], b[key]), key
    assert _log_steps(resumed) == [1, 2, 3, 4]


def test_a_corrupt_newest_checkpoint_is_skipped_and_the_resume_is_still_exact(
    straight_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    run(_config(out, objective="full", steps=4, ckpt_every=1, keep_checkpoints=2))
    newest = out / "checkpoints" / "step_0000004.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x10  # one flipped bit inside the tensors
    newest.write_bytes(bytes(data))

    with pytest.warns(UserWarning, match=r"step_0000004\.pt.*corrupted.*falling back to .*step_0000003\.pt"):
        run(_config(out, objective="full", steps=4, ckpt_every=1, keep_checkpoints=2, resume=str(out)))
    _assert_resumed_exactly(out, straight_run)
    assert (out / "checkpoints" / "step_0000004.pt.corrupt").read_bytes() == bytes(data)  # kept aside, for a look


def test_every_checkpoint_corrupt_refuses_to_resume_and_touches_nothing(straight_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    for name in ("step_0000003.pt", "step_0000004.pt"):
        (out / "checkpoints" / name).write_bytes((straight_run / "checkpoints" / name).read_bytes()[:-7])
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    with pytest.warns(UserWarning), pytest.raises(TrainerError, match=r"none of the 2 checkpoint\(s\) loads"):
        run(_config(out, objective="full", steps=4, resume=str(out)))
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before


_KILL = """
import os, pathlib, signal, sys
kill_at = sys.argv.pop(1)
real_replace, real_unlink = os.replace, pathlib.Path.unlink
def replace(src, dst, *args, **kwargs):
    if kill_at == "rename" and str(dst).endswith("step_0000004.pt"):  # written and fsynced, not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
def unlink(self, *args, **kwargs):
    if kill_at == "rotate" and self.name.startswith("step_") and self.with_name("step_0000004.pt").exists():
        os.kill(os.getpid(), signal.SIGKILL)  # step 4 renamed, step 2 not yet deleted
    return real_unlink(self, *args, **kwargs)
os.replace, pathlib.Path.unlink = replace, unlink
from examples.aotgan.train import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["rename", "rotate"])
def test_a_run_killed_while_checkpointing_resumes_exactly_and_leaves_no_tmp_file(
    straight_run: Path, tmp_path: Path, moment: str
) -> None:
    """SIGKILL before the rename of step 4's checkpoint (a .tmp file is left) or after it, before rotation."""
    out = tmp_path / "run"
    argv = [
        *TINY_ARGS, "--objective", "full", "--out", str(out), "--steps", "4", "--ckpt-every", "1",
        "--keep-checkpoints", "2", "--threads", "1",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _KILL, moment, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == -9, done.stderr
    stale = list((out / "checkpoints").glob(".step_0000004.pt.*.tmp"))
    steps = sorted(p.name for p in (out / "checkpoints").glob("step_*.pt"))
    if moment == "rename":
        assert len(stale) == 1 and stale[0].stat().st_size > 0
        assert steps == ["step_0000002.pt", "step_0000003.pt"]
    else:
        assert not stale and steps == ["step_0000002.pt", "step_0000003.pt", "step_0000004.pt"]

    run(_config(out, objective="full", steps=4, ckpt_every=1, keep_checkpoints=2, resume=str(out)))
    assert not list((out / "checkpoints").glob("*.tmp"))
    _assert_resumed_exactly(out, straight_run)


# ---- the run folder ---------------------------------------------------------------------------------------------


def test_a_folder_without_checkpoints_is_not_offered_for_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "train_log.jsonl").write_text("")  # a start that failed before its first checkpoint
    with pytest.raises(TrainerError, match="wrote no checkpoint .* nothing to resume; pass --overwrite") as info:
        run(_config(out, steps=1))
    assert "--resume" not in str(info.value)
    run(_config(out, steps=1, overwrite=True))
    assert (out / "checkpoints" / "step_0000001.pt").exists()


# ---- images that pass verify() but do not decode ----------------------------------------------------------------


def _photos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(folder / f"photo_{i}.png")
    return folder


def _jpeg(path: Path, keep: float | int = 1.0) -> Path:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path, quality=90)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep) if isinstance(keep, float) else keep])
    return path


def test_an_undecodable_jpeg_stops_the_start_before_anything_is_written(tmp_path: Path) -> None:
    data = _photos(tmp_path / "photos", 6)
    bad = _jpeg(data / "trunc.jpg", keep=0.5)
    with Image.open(bad) as image:
        image.verify()  # passes: the header is intact
    out = tmp_path / "run"

    with pytest.raises(TrainerError, match=r"cannot be decoded: .*trunc\.jpg.*(truncated|OSError)"):
        run(_config(out, data=str(data), steps=1))
    assert not out.exists()

    with pytest.warns(UserWarning, match=r"trunc\.jpg"):  # the same folder, the file left out on request
        run(_config(out, data=str(data), steps=1, bad_images="skip"))
    assert (out / "checkpoints" / "step_0000001.pt").exists()


def test_cli_names_the_undecodable_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _photos(tmp_path / "photos", 6)
    _jpeg(data / "trunc.jpg", keep=0.5)
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--data", str(data), "--out", str(out), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data: root: 1 image file(s)") and "trunc.jpg" in err and "Traceback" not in err
    assert not out.exists()
    (data / "trunc.jpg").unlink()  # fixed: the rerun needs no --overwrite
    assert main([*TINY_ARGS, "--data", str(data), "--out", str(out), "--steps", "1"]) == 0


@given(cut=st.floats(min_value=0.05, max_value=0.999))
def test_after_a_decode_check_every_kept_file_loads(tmp_path_factory: pytest.TempPathFactory, cut: float) -> None:
    folder = _photos(tmp_path_factory.mktemp("cut"), 1)
    _jpeg(folder / "cut.jpg", keep=cut)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a skipped file warns at construction
        dataset = ImageFolder(folder, size=32, check="decode")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ... and never later
        for index in range(len(dataset)):
            assert dataset[index].shape == (3, 32, 32)
    kept = folder / "cut.jpg" in dataset.files
    try:
        ImageFolder(folder, size=32, check="decode", on_error="raise")
    except ValueError as error:
        assert not kept and "cut.jpg" in str(error)
    else:
        assert kept
