"""examples/aotgan/demo.py end to end at a tiny size: two arms from one weights file, labelled pictures, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from examples.aotgan import demo
from examples.aotgan.monitor import export_weights, load_weights
from examples.aotgan.train import TrainConfig, run


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo_weights")
    cfg = TrainConfig(
        out=str(folder / "run"), objective="baseline", size=32, batch_size=4, g_channels=4, g_blocks=1,
        d_channels=4, d_depth=3, train_length=8, eval_images=2, grid_images=2, steps=2, sample_every=0,
        ckpt_every=0, progress=False, threads=1, colour_augment=True,
    )  # fmt: skip
    run(cfg)
    export_weights(sorted((folder / "run" / "checkpoints").glob("step_*.pt"))[-1], folder / "weights.pt")
    return folder / "weights.pt"


def test_demo_runs_both_arms_and_writes_labelled_pictures_and_metrics(tiny_weights: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    argv = ["--weights", str(tiny_weights), "--out", str(out), "--steps", "2", "--sample-every", "1",
            "--probe-steps", "1", "--eval-images", "2"]  # fmt: skip
    assert demo.main(argv) == 0
    for name in ("compare.png", "segmenter.png", "segmenter_train.png", "curves.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 100, name
    for name in ("segmenter.png", "segmenter_train.png"):
        with Image.open(out / name) as image:
            # rows: ground truth, holes, the start, one per saved step (1 and 2); 32 px tiles + 2 px padding,
            # enlarged 2x, plus captions
            assert image.size[1] > 5 * 34 * 2, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["heldout"]) == {"start (shipped weights)", "scat", "baseline"}
    assert set(metrics["probe"]) == {"start (shipped weights)", "scat", "baseline"}
    assert metrics["probe"]["scat"]["probe"]["steps"] == 1
    assert set(metrics["scat_segmenter"]) == set(metrics["heldout"])
    assert metrics["scat_segmenter"]["scat"]["overall"]["count"] == 3 * 2  # 2 held-out crops x 3 buckets
    assert "--objective full" in metrics["commands"]["scat"] and "--size 32" in metrics["commands"]["scat"]
    assert all("--colour-augment" in metrics["commands"][arm] for arm in ("scat", "baseline"))  # as the weights
    for arm in ("scat", "baseline"):
        log = [json.loads(line) for line in (out / arm / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log][-1] == 2 and "s_auroc" in log[-1]
        config = json.loads((out / arm / "config.json").read_text())
        assert config["init_from"] == str(tiny_weights) and config["colour_augment"] is True
    text = (out / "metrics.md").read_text()
    for needle in ("Held-out reconstruction", "training monitor", "Detectability", "SSIM", "AUROC"):
        assert needle in text


class _Logits(torch.nn.Module):
    """A stand-in discriminator whose per-pixel head returns the image's first channel as its logits."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean((1, 2, 3)), x[:, :1]


def test_segmenter_score_maps_the_hinge_margin_to_black_and_white() -> None:
    # per-pixel logit S of "real": >= 1 real beyond the margin (black), <= -1 generated (white), 0 undecided (grey)
    logits = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]).view(1, 1, 1, 7)
    score = demo.segmenter_score(_Logits(), logits)
    assert score.shape == (1, 1, 1, 7)
    assert score.flatten().tolist() == [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_shipped_warmup_keeps_the_baseline_generator_and_changes_only_the_discriminator() -> None:
    # the demo's default start: the baseline generator bit for bit, a different (warmed-up) discriminator
    assert demo.WEIGHTS.parent.name == "warmup"
    warm = load_weights(demo.WEIGHTS)  # checks weights.pt.sha256
    base = load_weights(demo.WEIGHTS.parents[1] / "baseline" / "weights.pt")
    assert warm["generator"].keys() == base["generator"].keys()
    assert all(torch.equal(warm["generator"][k], base["generator"][k]) for k in base["generator"])
    assert warm["discriminator"].keys() == base["discriminator"].keys()
    changed = [k for k in base["discriminator"] if not torch.equal(warm["discriminator"][k], base["discriminator"][k])]
    assert any(k.startswith("pixel_head") for k in changed)
    assert all(warm["config"][k] == base["config"][k] for k in demo.ARCH_FLAGS)
    assert warm["config"]["objective"] == "scat" and warm["config"]["lr_g"] == 0.0


def test_demo_refuses_missing_or_foreign_weights(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not found"):
        demo.main(["--weights", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not a torch file")
    with pytest.raises(SystemExit, match="not a readable torch file"):
        demo.main(["--weights", str(bad), "--out", str(tmp_path / "o")])


def test_make_demo_runs_the_demo_module() -> None:
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    demo_rule = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "-m examples.aotgan.demo" in demo_rule


def test_training_crops_are_drawn_in_their_own_colours() -> None:
    """``segmenter_train.png`` shows the photos as they are: ``--colour-augment``'s remapping is training-only."""
    from examples.aotgan.data import ColourAugment, PhotoCrops

    base = PhotoCrops("train", size=16, length=12, seed=0)
    plain = demo._train_crops(base, 4)
    torch.testing.assert_close(demo._train_crops(ColourAugment(base, seed=3), 4), plain, rtol=0, atol=0)
    assert not torch.equal(torch.stack([ColourAugment(base, seed=3)[i * 3] for i in range(4)]), plain)
