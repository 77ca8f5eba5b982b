"""examples/aotgan/monitor.py and figures.py: confusion monitor, weights-only starts, labelled grids, curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from examples.aotgan.checkpoint import TrainerError
from examples.aotgan.figures import GRID_ROWS, label_grid, plot_curves, read_log, tile
from examples.aotgan.monitor import (
    WEIGHTS_FORMAT,
    confusion_terms,
    export_weights,
    init_from,
    load_weights,
)
from examples.aotgan.networks import AOTGenerator
from examples.aotgan.train import TrainConfig, Trainer, build_models, run
from scatloss.nets import UNetDiscriminator
from tests._trainer_settings import TINY

ROOT = Path(__file__).resolve().parents[1]


def _config(out: Path, **overrides: Any) -> TrainConfig:
    return TrainConfig(out=str(out), **{**TINY, **overrides})


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    hole = torch.zeros(2, 1, 32, 32)
    hole[:, :, 8:20, 4:28] = 1
    return image, hole


class _Oracle(nn.Module):
    """A 'discriminator' whose per-pixel head says 'real' exactly where the image is not white (the fill)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        white = (x >= 0.999).all(1, keepdim=True)
        return x.mean(dim=(1, 2, 3)), torch.where(white, -4.0, 4.0)


class _WhiteFill(nn.Module):
    def forward(self, corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(corrupted)


def test_monitor_scores_the_per_pixel_head_on_the_composite() -> None:
    image, hole = _batch()
    image = image.clamp(-0.9, 0.9)  # no white pixel outside the holes
    terms = confusion_terms(_WhiteFill(), _Oracle(), nn.Identity(), image, hole)
    assert terms == {"s_auroc": 1.0, "s_ap": 1.0, "s_iou": 1.0}
    # a generator that fills nothing detectable: the oracle sees no white pixel -> chance, nothing called generated
    copy = confusion_terms(_Copy(image), _Oracle(), nn.Identity(), image, hole)
    assert copy["s_auroc"] == 0.5 and copy["s_iou"] == 0.0


class _Copy(nn.Module):
    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.image = image

    def forward(self, corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return self.image


def test_monitor_restores_modes_draws_no_random_numbers_and_keeps_spectral_norm_state() -> None:
    cfg = _config(Path("unused"), objective="full")
    G, D, loss = build_models(cfg)
    G.train()
    D.train()
    before = {k: v.clone() for k, v in D.state_dict().items()}
    rng = torch.get_rng_state()
    image, hole = _batch()
    terms = confusion_terms(G, D, loss, image, hole)
    assert set(terms) == {"s_auroc", "s_ap", "s_iou"} and all(0.0 <= v <= 1.0 for v in terms.values())
    assert G.training and D.training and all(m.training for m in D.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    after = D.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # spectral norm's u, v did not advance


def test_monitor_reads_aotgans_patch_map_as_p_generated() -> None:
    G, D, loss = build_models(_config(Path("unused"), objective="aotgan"))
    image, hole = _batch()
    terms = confusion_terms(G, D, loss, image, hole)
    assert all(0.0 <= v <= 1.0 for v in terms.values())


def test_a_monitored_run_logs_the_confusion_and_trains_bit_identically(tmp_path: Path) -> None:
    run(_config(tmp_path / "on", objective="full", steps=3))
    run(_config(tmp_path / "off", objective="full", steps=3, monitor=False))
    on = read_log(tmp_path / "on" / "train_log.jsonl")
    off = read_log(tmp_path / "off" / "train_log.jsonl")
    assert all({"s_auroc", "s_ap", "s_iou"} <= set(r) for r in on)
    assert all(not any(k.startswith("s_") for k in r) for r in off)
    assert all(0.0 <= r["s_auroc"] <= 1.0 for r in on)
    assert (tmp_path / "on" / "curves.png").read_bytes()[:4] == b"\x89PNG"  # terms and AUROC over steps
    strip = [{k: v for k, v in r.items() if not k.startswith("s_") and k != "time_s"} for r in on]
    assert strip == [{k: v for k, v in r.items() if k != "time_s"} for r in off]  # same losses at every step


# ---- weights-only starts ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    run(_config(folder / "run", objective="baseline", steps=2))
    path = folder / "weights.pt"
    digest = export_weights(sorted((folder / "run" / "checkpoints").glob("step_*.pt"))[-1], path)
    assert (folder / "weights.pt.sha256").read_text().split()[0] == digest
    return path


def test_weights_file_is_small_and_holds_only_weights(weights: Path) -> None:
    state = load_weights(weights)
    assert state["format"] == WEIGHTS_FORMAT and state["step"] == 2
    assert set(state) == {"format", "step", "config", "generator", "discriminator"}


def test_init_from_starts_another_objective_with_the_same_networks(weights: Path, tmp_path: Path) -> None:
    trainer = Trainer(_config(tmp_path / "scat", objective="full", init_from=str(weights)), data=False)
    state = load_weights(weights)
    assert init_from(trainer.G, trainer.D, trainer.cfg.to_dict(), weights) == 2
    for key, value in state["generator"].items():
        assert torch.equal(trainer.G.state_dict()[key], value), key
    result = run(_config(tmp_path / "cli", objective="full", steps=1, init_from=str(weights)))
    assert result["step"] == 1
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["init_from"] == str(weights)


def test_init_from_refuses_other_shapes_and_damaged_files(weights: Path, tmp_path: Path) -> None:
    G, D = AOTGenerator(base_channels=8, num_blocks=1), UNetDiscriminator(base_channels=4, depth=3)
    cfg = {**_config(tmp_path).to_dict(), "g_channels": 8, "objective": "full"}
    with pytest.raises(TrainerError, match="g_channels: weights 4, this run 8"):
        init_from(G, D, cfg, weights)
    damaged = tmp_path / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (tmp_path / "weights.pt.sha256").write_text((weights.parent / "weights.pt.sha256").read_text())
    with pytest.raises(TrainerError, match="SHA-256"):
        load_weights(damaged)
    with pytest.raises(TrainerError, match="does not exist"):
        init_from(G, D, cfg, tmp_path / "missing.pt")
    with pytest.raises(TrainerError, match="no checkpoints"):
        init_from(G, D, cfg, tmp_path)


def test_shipped_baseline_weights_load_into_the_default_configuration() -> None:
    path = ROOT / "examples" / "aotgan" / "baseline" / "weights.pt"
    if not path.exists():
        pytest.skip("no shipped weights in this checkout")
    state = load_weights(path)  # checks weights.pt.sha256
    cfg = TrainConfig(objective="full")
    G, D, _ = build_models(cfg)
    assert init_from(G, D, cfg.to_dict(), path) == state["step"]
    assert path.stat().st_size < 5 * 2**20


# ---- figures ---------------------------------------------------------------------------------------------------------


def test_label_grid_adds_captions_around_an_enlarged_grid() -> None:
    grid = tile([np.zeros((3, 8, 8, 3), np.uint8)] * 4)
    assert grid.shape == (4 * 10, 3 * 10, 3)
    labelled = label_grid(grid, GRID_ROWS, ["a", "b", "c"], title="t", scale=2)
    assert labelled.dtype == np.uint8 and labelled.shape[0] > 2 * grid.shape[0] and labelled.shape[1] > 2 * 30
    left = labelled[:, :10]
    assert (left < 128).any()  # some caption text was drawn in the margin
    with pytest.raises(ValueError, match="rows: expected a caption per grid row"):
        label_grid(grid, ["only", "three", "rows"])


def test_plot_curves_writes_a_png_with_the_auroc_panel(tmp_path: Path) -> None:
    logs = {"a": [{"step": 1, "s_auroc": 0.6, "g_rec": 0.3}, {"step": 2, "s_auroc": math.nan, "g_rec": 0.2}]}
    path = plot_curves(logs, tmp_path / "c.png", title="x", marks={"m": 1})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
