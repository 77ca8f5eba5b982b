"""Tests pinning behaviour that mutation testing (run f6, helper h3) found unchecked in the adapters' shared helpers
(:mod:`scatloss.adapters._common`), LaMa's ``pre_discriminator_step`` and the release drop-in's ``dualadv``.

Covers the construction-time checks of ``negatives`` / ``chunk_size`` (bools and floats refused, ``1`` accepted),
conv-block detection (an activation closes a block only right after a convolution), the default taps (at most four
textural layers; the "none found" error), ``layer_channels`` (``Linear`` widths, unknown names, no convolution yet,
``":input"`` names), LaMa binding the discriminator and setting ``requires_grad`` only for ``gp_coef > 0``, and the
release's ``release_layers`` (default five feature layers, layout check, plain-module blocks), ``dualadv`` under
``DistributedDataParallel`` and ``dualadv.D`` (its checks' messages, the loss forms of ``args``). Each test compares
with an independent expectation: a hand-written loss, the documented contract or an exact error message.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from scatloss.adapters import release as release_module
from scatloss.adapters._common import conv_blocks, default_layers, layer_channels
from scatloss.adapters.lama import SCATAdversarialLoss
from tests._pins import B, C, S, holes, patch_d, tiny_seg
from tests.test_adapters_release import SIZE, ReleaseLikeD, release_case

# ----------------------------------------------------------------------------------------------------------------------
# _common.check_criterion_options (through SCATAdversarialLoss, which checks at construction)
# ----------------------------------------------------------------------------------------------------------------------


def test_criterion_options_refuse_bools_and_floats_and_accept_one() -> None:
    """``negatives`` is ``'batch'`` or an int ``>= 1`` and ``chunk_size`` an int ``>= 1``: ``True`` and ``2.0`` are
    refused with the documented message, ``chunk_size=1`` (one image per feature pass) is accepted."""
    for value in (True, 2.0):
        with pytest.raises(ValueError, match=rf"^negatives: expected 'batch' or an int M >= 1, got {value!r}$"):
            SCATAdversarialLoss(segmenter=tiny_seg(), negatives=value)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=rf"^chunk_size: expected an int >= 1, got {value!r}$"):
            SCATAdversarialLoss(segmenter=tiny_seg(), chunk_size=value)  # type: ignore[arg-type]
    loss = SCATAdversarialLoss(segmenter=tiny_seg(), chunk_size=1, negatives=1)
    assert (loss.chunk_size, loss.negatives) == (1, 1)


# ----------------------------------------------------------------------------------------------------------------------
# _common.conv_blocks / default_layers / layer_channels
# ----------------------------------------------------------------------------------------------------------------------


def test_conv_blocks_close_only_right_after_a_convolution() -> None:
    """An activation before any convolution, and a second activation right after a block's, close no block: only
    the activation following each ``Conv2d`` does, with that convolution's ``out_channels``."""
    net = nn.Sequential(
        nn.ReLU(),  # "0": no convolution yet
        nn.Conv2d(3, 4, 3),
        nn.LeakyReLU(0.2),  # "2": block of 4
        nn.Conv2d(4, 8, 3),
        nn.LeakyReLU(0.2),  # "4": block of 8
        nn.ReLU(),  # "5": a second activation, no new convolution
        nn.Conv2d(8, 1, 3),
    )
    assert conv_blocks(net) == [("2", 4), ("4", 8)]


def test_default_layers_take_at_most_four_textural_layers() -> None:
    """Seven conv blocks: the textural taps are the first four blocks' activations (``max_textural = 4``), the
    semantic tap the last block's, with its channel count."""
    layers: list[nn.Module] = []
    cin = 3
    for width in (2, 3, 4, 5, 6, 7, 9):
        layers += [nn.Conv2d(cin, width, 1), nn.LeakyReLU(0.2)]
        cin = width
    net = nn.Sequential(*layers, nn.Conv2d(cin, 1, 1))
    assert default_layers(net) == (("1", "3", "5", "7"), "13", 9)


def test_default_layers_error_says_none_without_blocks() -> None:
    """No conv + activation-module block at all: the error says ``with blocks none``."""
    with pytest.raises(ValueError, match=r"^discriminator: .* got Sequential with blocks none\. Pass textural_layers"):
        default_layers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 1, 3)))


def test_layer_channels_reads_linear_widths_and_returns_none_when_unknown() -> None:
    """A ``Linear`` before the layer gives its ``out_features``; an unknown name, a layer before any convolution and
    an ``":input"`` name (even one that is also a registered module's name) give ``None``."""
    net = nn.Sequential(
        OrderedDict(
            [
                ("act", nn.ReLU()),
                ("conv", nn.Conv2d(3, 4, 3)),
                ("flat", nn.Flatten()),
                ("fc", nn.Linear(4, 7)),
                ("out", nn.ReLU()),
                ("head:input", nn.Conv2d(7, 5, 1)),
            ]
        )
    )
    assert layer_channels(net, "conv") == 4
    assert layer_channels(net, "out") == 7
    assert layer_channels(net, "fc") == 7
    assert layer_channels(net, "act") is None
    assert layer_channels(net, "nope") is None
    assert layer_channels(net, "head:input") is None


# ----------------------------------------------------------------------------------------------------------------------
# lama.SCATAdversarialLoss.pre_discriminator_step
# ----------------------------------------------------------------------------------------------------------------------


def _lama_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    real = torch.rand(B, C, S, S, generator=torch.Generator().manual_seed(2))
    mask = holes()
    return real, mask * 0.25 + (1 - mask) * real, mask


def test_lama_pre_discriminator_step_binds_the_discriminator() -> None:
    """With contrastive layers and no ``discriminator=`` at construction, ``pre_discriminator_step`` remembers D:
    the D step then runs, and the G step's contrastive term is the one of a loss built with ``discriminator=D``."""
    netD = patch_d()
    real, fake, mask = _lama_batch()
    torch.manual_seed(0)
    bound = SCATAdversarialLoss(segmenter=tiny_seg(), textural_layers=["1", "3"], gp_coef=0.0)
    torch.manual_seed(0)
    given = SCATAdversarialLoss(segmenter=tiny_seg(), textural_layers=["1", "3"], gp_coef=0.0, discriminator=netD)
    bound.pre_discriminator_step(real, fake, nn.Identity(), netD)
    with torch.no_grad():
        real_pred, fake_pred = netD(real), netD(fake)
    _, metrics = bound.discriminator_loss(real, fake, real_pred, fake_pred, mask)
    _, want = given.discriminator_loss(real, fake, real_pred, fake_pred, mask)
    torch.testing.assert_close(metrics["scat_seg"], want["scat_seg"])
    _, g_metrics = bound.generator_loss(real, fake, real_pred, fake_pred, mask)
    _, g_want = given.generator_loss(real, fake, real_pred, fake_pred, mask)
    torch.testing.assert_close(g_metrics["contra_text"], g_want["contra_text"])


def test_lama_pre_discriminator_step_sets_requires_grad_only_for_r1() -> None:
    """``gp_coef = 0`` (no R1): ``real_batch.requires_grad`` stays False; ``gp_coef > 0``: it is set (as LaMa)."""
    real, fake, _ = _lama_batch()
    SCATAdversarialLoss(segmenter=tiny_seg(), gp_coef=0.0).pre_discriminator_step(real, fake, nn.Identity(), patch_d())
    assert real.requires_grad is False
    SCATAdversarialLoss(segmenter=tiny_seg(), gp_coef=0.001).pre_discriminator_step(
        real, fake, nn.Identity(), patch_d()
    )
    assert real.requires_grad is True


# ----------------------------------------------------------------------------------------------------------------------
# release.release_layers
# ----------------------------------------------------------------------------------------------------------------------


def test_release_layers_default_reads_four_blocks_and_the_bottleneck() -> None:
    """By default (``num_feat_layers = 5``, the release's) the textural taps are the last modules of ``blocks[0..3]``
    and the semantic tap the input of ``linear_middle``."""
    names = ("blocks.0.0", "blocks.1.0", "blocks.2.0", "blocks.3.0")
    assert release_module.release_layers(ReleaseLikeD()) == (names, "linear_middle:input")


class _PlainBlocksD(nn.Module):
    """A release-like layout whose blocks are plain modules (not ``ModuleList``s), with or without ``linear_middle``."""

    def __init__(self, linear_middle: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Conv2d(3, 3, 1) for _ in range(5)])
        if linear_middle:
            self.linear_middle = nn.Linear(3, 1)


def test_release_layers_plain_blocks_and_missing_linear_middle() -> None:
    """A block that is a plain module is tapped by its own name ``blocks.i``; without ``linear_middle`` the layout
    is refused with the documented message."""
    assert release_module.release_layers(_PlainBlocksD(), 3) == (("blocks.0", "blocks.1"), "linear_middle:input")
    with pytest.raises(
        ValueError,
        match=r"^netD: expected the release's UnetDiscriminator / ResUnetDiscriminator layout \(a 'blocks' ModuleList "
        r"and 'linear_middle'\), got _PlainBlocksD; pass textural_layers=\.\.\. and semantic_layer=\.\.\.$",
    ):
        release_module.release_layers(_PlainBlocksD(linear_middle=False))


# ----------------------------------------------------------------------------------------------------------------------
# release.dualadv
# ----------------------------------------------------------------------------------------------------------------------


def test_release_g_unwraps_a_ddp_wrapped_discriminator() -> None:
    """``dualadv.G`` on a DDP-wrapped D (world size 1) runs the module inside and gives the plain call's terms."""
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no process group yet")
    netD, _, masks, _, comp = release_case(2)
    adv = release_module.dualadv(SimpleNamespace())
    want = adv.G(netD, comp, 1 - masks)
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{Path(tmp) / 'store'}", rank=0, world_size=1)
        try:
            got = adv.G(nn.parallel.DistributedDataParallel(netD), comp, 1 - masks)
        finally:
            dist.destroy_process_group()
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


def test_release_d_checks_real_and_the_valid_mask_under_their_names() -> None:
    """``dualadv.D``: a 3-D ``real`` is refused naming ``real`` and its shape; valid masks of another batch size
    are refused naming ``masks (valid, 1 = known)`` and the batch of ``real``."""
    netD, images, masks, _, comp = release_case(2)
    adv = release_module.dualadv(SimpleNamespace())
    with pytest.raises(ValueError, match=rf"^real: expected a 4-D tensor, got shape \(3, {SIZE}, {SIZE}\)$"):
        adv.D(netD, comp, images[0], 1 - masks)
    with pytest.raises(
        ValueError, match=r"^masks \(valid, 1 = known\): expected batch size 2 to match the other inputs, got 1$"
    ):
        adv.D(netD, comp, images, 1 - masks[:1])


@pytest.mark.parametrize(
    ("gan_type", "real_term", "fake_term"),
    [
        ("nsgan", lambda z: F.softplus(-z), lambda z: F.softplus(z)),
        ("lsgan", lambda z: (z - 1).square(), lambda z: z.square()),
    ],
)
def test_release_d_terms_follow_the_args_loss_types(gan_type: str, real_term: Any, fake_term: Any) -> None:
    """``dualadv.D``'s global term follows ``args.globalgan_type`` and its SCAT term ``args.SCAT_type`` (each set
    here to a non-hinge form, the other one hinge): global ``mean(l+(D(x))) + mean(l-(D(comp)))``, SCAT
    ``mean(l+(S(x))) + mean(l+(S(comp)) * valid) + mean(l-(S(comp)) * hole)``."""
    netD, images, masks, _, comp = release_case(2)
    with torch.no_grad():
        _, _, gf, pf = netD(comp)
        _, _, gr, pr = netD(images)

    def hinge_real(z: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - z)

    def hinge_fake(z: torch.Tensor) -> torch.Tensor:
        return F.relu(1 + z)

    for global_pair, scat_pair, args in (
        ((real_term, fake_term), (hinge_real, hinge_fake), SimpleNamespace(globalgan_type=gan_type)),
        ((hinge_real, hinge_fake), (real_term, fake_term), SimpleNamespace(SCAT_type=gan_type)),
    ):
        d_global, d_scat = release_module.dualadv(args).D(netD, comp, images, 1 - masks)
        want_global = global_pair[0](gr).mean() + global_pair[1](gf).mean()
        lp, lm = scat_pair
        want_scat = lp(pr).mean() + (lp(pf) * (1 - masks)).mean() + (lm(pf) * masks).mean()
        torch.testing.assert_close(d_global, want_global, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(d_scat, want_scat, rtol=1e-12, atol=1e-14)
