"""The tiny reference-trainer configuration the trainer tests share (32x32, 1-block G, 3-level D)."""

from __future__ import annotations

from typing import Any

TINY: dict[str, Any] = {
    "size": 32, "batch_size": 4, "g_channels": 4, "g_blocks": 1, "d_channels": 4, "d_depth": 3,
    "train_length": 8, "eval_images": 2, "grid_images": 2, "log_every": 1, "sample_every": 0, "ckpt_every": 0,
    "progress": False,
}  # fmt: skip
TINY_ARGS = [
    "--size", "32", "--batch-size", "4", "--g-channels", "4", "--g-blocks", "1", "--d-channels", "4",
    "--d-depth", "3", "--train-length", "8", "--eval-images", "2", "--grid-images", "2", "--no-progress",
]  # fmt: skip
