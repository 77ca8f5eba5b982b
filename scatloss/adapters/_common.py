"""Helpers the host adapters share (not public API): boundary checks of the hosts' conventions (value range,
hole vs. valid mask), construction-time option checks, feature-layer detection in a Sequential-like PatchGAN,
unwrapping of ``DistributedDataParallel``, and the migration helpers for pre-retrofit checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validation import (
    RANGE_TOLERANCE,
    check_hole_convention,
    check_image_range,
    inverted_hole_samples,
)

__all__ = ["check_hole_convention", "check_image_range", "inverted_hole_samples"]  # re-exported for the adapters

# ----------------------------------------------------------------------------------------------------------
# Boundary checks of the hosts' conventions (shared by both adapters; not public API)
# ----------------------------------------------------------------------------------------------------------

# The checks themselves live in scatloss._validation, where SCATCriterion uses them too: each queues its statistics
# on a ValueChecks, so that an adapter call reads all of them back in one device-to-host transfer.
_RANGE_TOLERANCE = RANGE_TOLERANCE

_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.LeakyReLU,
    nn.ReLU,
    nn.ReLU6,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
)
"""Modules that end a convolution block for :func:`conv_blocks`."""


def check_criterion_options(negatives: Any, chunk_size: Any, fill: Any) -> None:
    """Validate, at construction, the options the adapters hand to :class:`~scatloss.SCATCriterion` on first use."""
    if negatives != "batch" and (isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 1):
        raise ValueError(f"negatives: expected 'batch' or an int M >= 1, got {negatives!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an int >= 1, got {chunk_size!r}")
    if isinstance(fill, bool) or not isinstance(fill, (int, float)):
        raise TypeError(f"fill: expected a float, got {type(fill).__name__} {fill!r}")


# ----------------------------------------------------------------------------------------------------------
# Feature-layer detection in a Sequential-like PatchGAN
# ----------------------------------------------------------------------------------------------------------


def conv_blocks(module: nn.Module) -> list[tuple[str, int]]:
    """``(activation name, channels)`` for each convolution block of a Sequential-like network.

    Walks ``named_modules()`` in registration order (execution order for ``nn.Sequential`` stacks such as
    AOT-GAN's and LaMa's PatchGANs); each activation module (LeakyReLU, ReLU, ...) that follows an
    ``nn.Conv2d`` closes a block whose channel count is that convolution's ``out_channels``. Spectral norm,
    in either PyTorch form, keeps the convolution an ``nn.Conv2d``. Normalisation layers in between are
    allowed. Tapping the activation (not the convolution) is what makes an ``inplace=True`` activation safe.
    """
    blocks: list[tuple[str, int]] = []
    channels: int | None = None
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            channels = m.out_channels
        elif isinstance(m, _ACTIVATIONS) and channels is not None and name:
            blocks.append((name, channels))
            channels = None
    return blocks


def default_layers(module: nn.Module, *, max_textural: int = 4) -> tuple[tuple[str, ...], str, int]:
    """Default taps of a Sequential-like PatchGAN: ``(textural_layers, semantic_layer, semantic_channels)``.

    Textural: the activations of the first conv blocks (up to ``max_textural``), all but the last; semantic:
    the activation of the last conv block (the widest features before the 1-channel logit conv), whose
    channel count is the semantic feature size after ReLU-sum pooling.

    Raises:
        ValueError: fewer than two conv blocks were found (activations applied functionally, or a
            non-Sequential layout): pass the layer names explicitly.
    """
    blocks = conv_blocks(module)
    if len(blocks) < 2:
        found = ", ".join(repr(n) for n, _ in blocks) or "none"
        raise ValueError(
            "discriminator: expected a Sequential-like PatchGAN with at least two conv + activation-module blocks "
            f"to pick default feature layers, got {type(module).__name__} with blocks {found}. "
            "Pass textural_layers=[...] and semantic_layer='...' (names from named_modules()), "
            "and feature_dim=... for the semantic layer"
        )
    textural = tuple(n for n, _ in blocks[:-1][:max_textural])
    semantic, channels = blocks[-1]
    return textural, semantic, channels


def layer_channels(module: nn.Module, layer: str) -> int | None:
    """Channel count of a named layer's output: the ``out_channels`` of the last ``nn.Conv2d`` up to it.

    A container (e.g. a ``model2`` block) counts through its own children. ``None`` when it cannot be told from
    the structure (a ``":input"`` name, an unknown name, no convolution before the layer).
    """
    if layer.endswith(":input"):
        return None
    inside = f"{layer}." if layer else ""
    channels: int | None = None
    found = False
    for name, m in module.named_modules():  # registration order: a module, then its descendants
        if found and not name.startswith(inside):
            break
        if isinstance(m, nn.Conv2d):
            channels = m.out_channels
        elif isinstance(m, nn.Linear):
            channels = m.out_features
        found = found or name == layer
    return channels if found else None


def image_channels(module: nn.Module) -> int | None:
    """``in_channels`` of the first ``nn.Conv2d`` of ``module`` (the image channels of a discriminator)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def module_device(module: nn.Module) -> torch.device | None:
    """Device of a module's first parameter or buffer (``None`` for a module without tensors)."""
    for param in module.parameters():
        return param.device
    for buffer in module.buffers():
        return buffer.device
    return None


# ----------------------------------------------------------------------------------------------------------
# DistributedDataParallel
# ----------------------------------------------------------------------------------------------------------

DDP = nn.parallel.DistributedDataParallel
STEP_KEYWORD = "_scatloss_step"
"""Keyword by which an adapter runs its whole step inside a wrapped module's ``forward`` (see ``aotgan``)."""


def unwrap(name: str, module: Any, expected: type[nn.Module], hint: str) -> tuple[Any, DDP | None]:
    """``(inner module, DDP wrapper or None)``; ``TypeError`` naming what arrived for anything else.

    ``DataParallel`` is refused: it replicates the module per call, which an adapter's step cannot live in.
    """
    wrapper: DDP | None = None
    inner = module
    if isinstance(module, DDP):
        wrapper, inner = module, module.module
        if not isinstance(inner, expected):
            raise TypeError(
                f"{name}: expected a {expected.__name__} (optionally DistributedDataParallel-wrapped), got a "
                f"DistributedDataParallel wrapping a {type(inner).__module__}.{type(inner).__name__}; {hint}"
            )
    elif isinstance(module, nn.DataParallel):
        raise TypeError(
            f"{name}: expected a {expected.__name__} or a DistributedDataParallel-wrapped one, got a DataParallel "
            "wrapper; use DistributedDataParallel (one process per device)"
        )
    elif not isinstance(module, expected):
        what = f"{type(module).__module__}.{type(module).__name__}" if module is not None else "None"
        raise TypeError(f"{name}: expected a {expected.__name__}, got {what}; {hint}")
    return inner, wrapper


def broadcast_parameters(params: list[nn.Parameter], group: Any = None) -> None:
    """Broadcast ``params`` from rank 0 of ``group`` (a no-op without an initialised process group)."""
    import torch.distributed as dist

    if not params or not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)


# ----------------------------------------------------------------------------------------------------------
# Checkpoint migration
# ----------------------------------------------------------------------------------------------------------


def load_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> list[int]:
    """Load an optimiser state saved **before** a retrofit into the retrofitted optimiser, keeping what exists.

    A retrofit adds parameters at the end of existing groups (AOT-GAN's ``optimD`` now also holds the segmenter,
    registered after the discriminator) and whole new groups (the projection head in ``optimG``), so the host's
    own ``optimizer.load_state_dict(old)`` refuses the old state (different group sizes or counts). This helper
    maps group ``i`` of the old state onto group ``i`` of ``optimizer`` and its ``k``-th parameter onto the
    ``k``-th one there: their moments, step counts and hyperparameters are kept; parameters and groups beyond the
    old ones start fresh (no state, the group's current hyperparameters). A state that already fits is loaded
    as it is. One line in the host's ``load()``::

        load_optimizer_state(self.optimD, data["optimD"])      # was: self.optimD.load_state_dict(data["optimD"])

    Returns:
        The number of parameters that start fresh, per group of ``optimizer``.

    Raises:
        TypeError: ``state_dict`` is not an optimiser state dict.
        ValueError: it has more groups than ``optimizer``, more parameters in a group, or a state tensor whose
            shape differs from the parameter it maps onto.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not isinstance(state_dict, dict) or "param_groups" not in state_dict or "state" not in state_dict:
        keys = sorted(state_dict)[:6] if isinstance(state_dict, dict) else None
        raise TypeError(
            "state_dict: expected an optimiser state dict with 'state' and 'param_groups', got "
            f"{type(state_dict).__name__}" + (f" with keys {keys}" if keys is not None else "")
        )
    current = optimizer.state_dict()
    old_groups, new_groups = state_dict["param_groups"], current["param_groups"]
    if len(old_groups) > len(new_groups):
        raise ValueError(
            f"state_dict: expected at most {len(new_groups)} parameter groups (the optimiser's), got {len(old_groups)}"
        )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    index_to_param = dict(zip([i for g in new_groups for i in g["params"]], params, strict=True))
    state: dict[Any, Any] = {}
    fresh: list[int] = []
    groups: list[dict[str, Any]] = []
    for gi, new in enumerate(new_groups):
        if gi >= len(old_groups):
            groups.append(dict(new))
            fresh.append(len(new["params"]))
            continue
        old = old_groups[gi]
        if len(old["params"]) > len(new["params"]):
            raise ValueError(
                f"state_dict: group {gi} has {len(old['params'])} parameters, expected at most {len(new['params'])} "
                "(the optimiser's group): this is not a pre-retrofit state of this optimiser"
            )
        for k_old, k_new in zip(old["params"], new["params"], strict=False):
            if k_old not in state_dict["state"]:
                continue
            entry = state_dict["state"][k_old]
            param = index_to_param[k_new]
            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise ValueError(
                        f"state_dict: group {gi}, parameter {k_old}: state {key!r} has shape {tuple(value.shape)}, "
                        f"expected {tuple(param.shape)} (the parameter it maps onto): the parameter order differs"
                    )
            state[k_new] = entry
        groups.append({**old, "params": list(new["params"])})
        fresh.append(len(new["params"]) - len(old["params"]))
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return fresh
