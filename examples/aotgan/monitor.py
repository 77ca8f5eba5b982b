"""Training monitor (segmentation confusion) and weights-only starts for the reference trainer.

- :func:`confusion_terms`: how well the discriminator's per-pixel head (SCAT's segmenter) finds the holes of
  the current batch's composites: ``s_auroc``, ``s_ap``, ``s_iou`` (:func:`scatloss.evaluate.hole_detection_metrics`).
  The trainer logs them with the loss terms (``train_log.jsonl``, TensorBoard), which shows the game SCAT plays:
  the segmenter learning to find the holes (AUROC up), the generator learning to hide them (AUROC down).
- :func:`export_weights` / :func:`load_weights` / :func:`init_from`: a small weights-only file (G and D, no
  optimiser or RNG state) that starts a *new* run of any objective (``--init-from``), e.g. the demo's two arms
  from one shipped baseline generator.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from examples.aotgan.checkpoint import TrainerError, atomic_write, load_checkpoint
from scatloss import functional as SF
from scatloss.evaluate import hole_detection_metrics

__all__ = [
    "ARCH_KEYS",
    "WEIGHTS_FORMAT",
    "confusion_terms",
    "export_weights",
    "init_from",
    "load_weights",
    "p_generated",
]

WEIGHTS_FORMAT = "scatloss.examples.aotgan.weights/1"
"""``"format"`` of a weights-only file written by :func:`export_weights`."""

ARCH_KEYS: tuple[str, ...] = ("g_channels", "g_blocks", "d_channels", "d_depth")
"""Settings a run started with ``--init-from`` must share with the weights (the network shapes)."""

_FILL = 1.0  # the trainer's FILL (not imported: train.py imports this module)


def p_generated(D: nn.Module, loss: nn.Module, comp: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` P(generated) of the discriminator's per-pixel output on ``comp``."""
    patch_map = getattr(loss, "patch_map", None)
    if callable(patch_map):  # AOT-GAN's smgan: D regresses the blurred hole mask, i.e. P(generated) already
        return patch_map(comp).float().clamp(0.0, 1.0)
    return torch.sigmoid(-D(comp)[1].float())  # two-headed U-Net: per-pixel logit of "real"


@torch.no_grad()
def confusion_terms(
    G: nn.Module, D: nn.Module, loss: nn.Module, image: torch.Tensor, hole: torch.Tensor, fill: float = _FILL
) -> dict[str, float]:
    """``{"s_auroc", "s_ap", "s_iou"}`` of D's per-pixel map on the composites of ``image`` with ``hole``.

    G and D run in eval mode (spectral norm's power iteration does not advance) without autograd; every module's
    train/eval flag is restored, and no random number is drawn, so a monitored run trains bit-identically to an
    unmonitored one. An undefined value (a batch without holes) is NaN in the log, as JSON lines allow.
    """
    modes = [(m, m.training) for m in (*G.modules(), *D.modules(), *loss.modules())]
    G.eval()
    D.eval()
    loss.eval()
    try:
        comp = SF.composite(G(SF.corrupt(image, hole, fill=fill), hole).float(), image, hole)
        p = p_generated(D, loss, comp)
    finally:
        for m, training in modes:
            m.training = training
    scores = hole_detection_metrics(p, (hole > 0.5).float())
    return {f"s_{k}": float("nan") if scores[k] is None else float(scores[k]) for k in ("auroc", "ap", "iou")}  # type: ignore[arg-type]


# ---- weights-only files ----------------------------------------------------------------------------------------------


def export_weights(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> str:
    """Write G's and D's weights of a trainer checkpoint to ``out`` (plain ``torch.save``); return its SHA-256.

    The hash is also written next to it as ``<out>.sha256``; :func:`load_weights` checks it when present.
    """
    state = load_checkpoint(checkpoint)
    slim = {
        "format": WEIGHTS_FORMAT,
        "step": int(state["step"]),
        "config": state["config"],
        "generator": state["generator"],
        "discriminator": state["discriminator"],
    }
    buffer = io.BytesIO()
    torch.save(slim, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    path = Path(out)
    atomic_write(path, lambda handle: handle.write(payload))
    atomic_write(path.with_name(path.name + ".sha256"), lambda h: h.write(f"{digest}  {path.name}\n"), binary=False)
    return digest


def load_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a weights-only file (``weights_only=True``), checking ``<path>.sha256`` when it exists.

    Raises:
        TrainerError: missing or unreadable file, hash mismatch, or not a weights file of this trainer.
    """
    file = Path(path)
    if not file.is_file():
        raise TrainerError(f"--init-from: weights file {str(file)!r} does not exist")
    payload = file.read_bytes()
    sidecar = file.with_name(file.name + ".sha256")
    if sidecar.is_file():
        expected = sidecar.read_text(encoding="utf-8").split()[0]
        if hashlib.sha256(payload).hexdigest() != expected:
            raise TrainerError(f"--init-from: {str(file)!r} does not match its SHA-256 in {sidecar.name} (damaged?)")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:
        raise TrainerError(f"--init-from: {str(file)!r} is not a readable torch file: {type(error).__name__}") from None
    if not isinstance(state, dict) or state.get("format") != WEIGHTS_FORMAT:
        raise TrainerError(f"--init-from: {str(file)!r} is not a weights file of this trainer ({WEIGHTS_FORMAT})")
    return state


def init_from(G: nn.Module, D: nn.Module, config: dict[str, Any], path: str | os.PathLike[str]) -> int:
    """Load G's and D's weights from a weights file or a trainer checkpoint (a run folder: its newest one).

    Only the weights are taken: the new run has fresh optimisers, starts at step 0 and may use another objective.
    Returns the step the weights were trained for.

    Raises:
        TrainerError: unreadable source, or network shapes (:data:`ARCH_KEYS`, the discriminator type) that
            differ from this run's.
    """
    source = Path(path)
    if source.is_dir():
        found = sorted((source / "checkpoints").glob("step_*.pt"))
        if not found:
            raise TrainerError(f"--init-from: no checkpoints/step_*.pt under the folder {str(source)!r}")
        source = found[-1]
    if not source.is_file():
        raise TrainerError(f"--init-from: {str(source)!r} does not exist")
    with source.open("rb") as handle:
        zip_file = handle.read(4) == b"PK\x03\x04"
    state = load_weights(source) if zip_file else load_checkpoint(source)
    saved = state["config"]
    diff = [
        f"{k}: weights {saved.get(k)!r}, this run {config.get(k)!r}" for k in ARCH_KEYS if saved.get(k) != config[k]
    ]
    if (saved.get("objective") == "aotgan") != (config.get("objective") == "aotgan"):
        diff.append(
            f"discriminator: weights for objective {saved.get('objective')!r}, this run {config['objective']!r}"
        )
    if diff:
        raise TrainerError(f"--init-from {str(source)!r}: the networks differ: " + "; ".join(diff))
    try:
        G.load_state_dict(state["generator"])
        D.load_state_dict(state["discriminator"])
    except (RuntimeError, KeyError) as error:
        raise TrainerError(f"--init-from {str(source)!r}: {str(error).splitlines()[0][:300]}") from None
    return int(state.get("step", 0))
