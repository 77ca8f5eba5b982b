"""Tests pinning behaviour of ``scatloss.adapters.aotgan`` that mutation testing (run f5) found unchecked.

``SCATDiscriminator.__init__`` / ``load_state_dict`` and ``SCATGANLoss.__init__`` / ``forward``: each test compares
with an independent expectation written here (the documented layouts and defaults, the exact error message, the
paper's defaults, the host's plain discriminator called directly).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

from scatloss import reference
from scatloss.adapters import aotgan as aotgan_module
from scatloss.adapters.aotgan import SCATDiscriminator, SCATGANLoss
from scatloss.masks import MaskGenerator
from tests._pins import B, S, aot_images, composite, holes, patch_d, scat_d, tiny_seg


def conv_d(**kwargs: Any) -> SCATDiscriminator:
    """The pins' SCATDiscriminator with a one-conv segmenter (two tensors) and a ``4 -> 4 -> 3`` head."""
    kwargs.setdefault("segmenter", nn.Conv2d(3, 1, 3, padding=1))
    return scat_d(**kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# SCATDiscriminator.load_state_dict
# ----------------------------------------------------------------------------------------------------------------------


class RecordingD(nn.Sequential):
    """The pins' PatchGAN that records the keyword arguments of each ``load_state_dict`` call it gets."""

    def __init__(self) -> None:
        super().__init__(*patch_d())
        self.calls: list[dict[str, Any]] = []

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self.calls.append({"strict": strict, "assign": assign})
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def _filled(sd: dict[str, torch.Tensor], value: float) -> dict[str, torch.Tensor]:
    return {k: torch.full_like(v, value) for k, v in sd.items()}


def test_load_state_dict_copies_into_the_existing_parameters_by_default() -> None:
    """Default ``assign=False``: both layouts copy values into the parameters the optimisers already hold."""
    d = conv_d()
    before = list(d.state_dict(keep_vars=True).values())
    d.load_state_dict(_filled(d.state_dict(), 0.5))
    after = list(d.state_dict(keep_vars=True).values())
    assert all(a is b for a, b in zip(before, after, strict=True))
    assert all(torch.all(v == 0.5) for v in after)
    plain = _filled(d.netD.state_dict(), 0.25)
    with pytest.warns(UserWarning):
        d.load_state_dict(plain)
    assert all(a is b for a, b in zip(before, d.state_dict(keep_vars=True).values(), strict=True))
    assert all(torch.all(v == 0.25) for v in d.netD.state_dict().values())


def test_load_state_dict_assign_true_takes_the_given_tensors() -> None:
    """``assign=True`` is passed on: the module's tensors become the state dict's (both layouts)."""
    d = conv_d()
    own = _filled(d.state_dict(), 0.5)
    d.load_state_dict(own, assign=True)
    got = d.state_dict(keep_vars=True)
    assert all(got[k].data_ptr() == v.data_ptr() for k, v in own.items())
    plain = _filled(d.netD.state_dict(), 0.25)
    with pytest.warns(UserWarning):
        d.load_state_dict(plain, assign=True)
    got_plain = d.netD.state_dict(keep_vars=True)
    assert all(got_plain[k].data_ptr() == v.data_ptr() for k, v in plain.items())


def test_load_state_dict_passes_strict_and_assign_to_the_host_discriminator() -> None:
    """A plain host state dict reaches ``netD.load_state_dict`` with the caller's ``strict`` and ``assign``."""
    torch.manual_seed(0)
    d = SCATDiscriminator(RecordingD(), segmenter=tiny_seg(), hidden_features=4, out_features=3)
    plain = d.netD.state_dict()
    with pytest.warns(UserWarning):
        d.load_state_dict(plain)
    with pytest.warns(UserWarning):
        d.load_state_dict(plain, strict=False, assign=True)
    assert d.netD.calls == [{"strict": True, "assign": False}, {"strict": False, "assign": True}]


def test_load_state_dict_own_layout_is_strict_by_default() -> None:
    """The own layout with a key missing raises torch's strict-loading ``RuntimeError`` naming the key."""
    d = conv_d()
    sd = d.state_dict()
    del sd["segmenter.bias"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "segmenter\.bias"'):
        d.load_state_dict(sd)


@pytest.mark.parametrize("part", ["segmenter", "projection"])
def test_load_state_dict_takes_a_segmenter_or_head_only_dict_as_the_own_layout(part: str) -> None:
    """Keys under ``segmenter.`` alone, or ``projection.`` alone, are this module's layout (``strict=False``)."""
    d = conv_d()
    sd = {k: torch.full_like(v, 0.5) for k, v in d.state_dict().items() if k.startswith(f"{part}.")}
    d.load_state_dict(sd, strict=False)
    assert all(torch.all(v == 0.5) for v in getattr(d, part).state_dict().values())


def _neither_message(d: SCATDiscriminator, keys: int, unexpected: list[str]) -> str:
    """The documented "fits neither layout" message, for a wrapped ``nn.Sequential`` PatchGAN and no DDP prefix."""
    return (
        "state_dict: expected the keys of a SCATDiscriminator (netD.*, segmenter.*, projection.*) or of the wrapped "
        f"Sequential ({sorted(d.netD.state_dict())[:3]}...), got {keys} keys of which {len(unexpected)} fit "
        f"neither, e.g. {unexpected[:4]}"
    )


def test_load_state_dict_strict_refuses_a_host_dict_with_an_extra_key_as_neither_layout() -> None:
    """``strict=True``: the host's keys plus one unknown key fit neither layout; the message ends at the examples
    (no ``module.`` hint)."""
    d = conv_d()
    sd = {**d.netD.state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=f"^{re.escape(_neither_message(d, 9, ['extra.weight']))}$"):
        d.load_state_dict(sd)


def test_load_state_dict_refuses_an_empty_or_unknown_dict_as_neither_layout() -> None:
    """An empty dict, and (``strict=False``) a dict sharing no key with netD, fit neither layout."""
    d = conv_d()
    with pytest.raises(ValueError, match=f"^{re.escape(_neither_message(d, 0, []))}$"):
        d.load_state_dict({})
    with pytest.raises(ValueError, match=f"^{re.escape(_neither_message(d, 1, ['weird.weight']))}$"):
        d.load_state_dict({"weird.weight": torch.zeros(1)}, strict=False)


def test_load_state_dict_non_strict_loads_the_known_part_of_a_host_dict() -> None:
    """``strict=False``: a plain host dict with some of netD's keys and an unknown one loads the known ones."""
    d = conv_d()
    sd = {"0.weight": torch.full_like(d.netD[0].weight, 0.5), "extra.weight": torch.zeros(1)}
    with pytest.warns(UserWarning, match="into netD"):
        d.load_state_dict(sd, strict=False)
    assert torch.all(d.netD[0].weight == 0.5)


def test_load_state_dict_warning_names_only_the_segmenter_without_a_head() -> None:
    """Without a projection head, the warning names only the segmenter and its tensor count."""
    d = conv_d(projection=False)
    assert d.projection is None
    expected = (
        "SCATDiscriminator.load_state_dict: loaded a plain discriminator state dict (the layout from before the "
        "retrofit) into netD; segmenter (2 tensors) keep their initial values"
    )
    with pytest.warns(UserWarning, match=f"^{re.escape(expected)}$"):
        d.load_state_dict(d.netD.state_dict())


# ----------------------------------------------------------------------------------------------------------------------
# SCATGANLoss.forward: argument checks
# ----------------------------------------------------------------------------------------------------------------------


def test_forward_refuses_a_plain_discriminator_with_the_retrofit_hint() -> None:
    """The host's plain discriminator raises ``TypeError`` naming what arrived and how to wrap it, verbatim."""
    real, masks = aot_images(), holes()
    expected = (
        "netD: expected a SCATDiscriminator, got torch.nn.modules.container.Sequential; wrap the host's "
        "discriminator first (netD = SCATDiscriminator(net.Discriminator())), then DDP around it"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(expected)}$"):
        SCATGANLoss()(patch_d(), composite(real, masks), real, masks)


def test_forward_names_a_non_float_fake_or_real() -> None:
    """An integer ``fake`` or ``real`` raises ``TypeError`` naming that argument."""
    real, masks = aot_images(), holes()
    fake = composite(real, masks)
    for name, args in (("fake", (fake.long(), real)), ("real", (fake, real.long()))):
        with pytest.raises(TypeError, match=f"^{name}: expected a floating-point tensor .* got dtype torch.int64"):
            SCATGANLoss()(scat_d(), *args, masks)


def test_forward_wants_4d_fake_and_real() -> None:
    """A 3-D ``fake`` or ``real`` (the other 4-D) raises the 4-D error naming it, before any shape comparison."""
    real, masks = aot_images(), holes()
    fake = composite(real, masks)
    with pytest.raises(ValueError, match=rf"^fake: expected a 4-D tensor, got shape \({B}, {S}, {S}\)$"):
        SCATGANLoss()(scat_d(), fake[:, 0], real, masks)
    with pytest.raises(ValueError, match=rf"^real: expected a 4-D tensor, got shape \({B}, {S}, {S}\)$"):
        SCATGANLoss()(scat_d(), fake, real[:, 0], masks)


# ----------------------------------------------------------------------------------------------------------------------
# SCATGANLoss: the documented defaults, through the terms of one call
# ----------------------------------------------------------------------------------------------------------------------


def _features(d: SCATDiscriminator, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The host PatchGAN's activations ``"1"``, ``"3"``, ``"5"``, computed by running its layers directly."""
    return {str(k): d.netD[: k + 1](x) for k in (1, 3, 5)}


def test_default_terms_follow_eq3_eq4_with_the_papers_temperature_and_white_fill() -> None:
    """Defaults: holes of x~ and of the negatives filled with 1.0; textural term = sum over layers "1", "3" of
    ``mean|a - p| / (mean|a - n| + 1e-7)``; semantic term = InfoNCE (Eq. 4) with t = 0.07 on L2-normalised head
    outputs of the ReLU-sum-pooled layer "5", negatives ``x_b`` corrupted by every mask of the batch."""
    d = conv_d().double()
    real, masks = aot_images().double(), holes().double()
    fake = composite(real, masks)
    loss = SCATGANLoss()
    loss(d, fake, real, masks)
    with torch.no_grad():
        corrupted = real * (1 - masks) + masks
        a, p, n = _features(d, fake), _features(d, real), _features(d, corrupted)
        text = sum((a[k] - p[k]).abs().mean() / ((a[k] - n[k]).abs().mean() + 1e-7) for k in ("1", "3"))
        negatives = torch.stack([real[b] * (1 - masks) + masks for b in range(B)])  # (B, B, C, H, W)
        neg5 = _features(d, negatives.flatten(0, 1))["5"]

        def head(f: torch.Tensor) -> torch.Tensor:
            return d.projection(torch.relu(f).sum(dim=(-2, -1)))

        sem = reference.semantic_contrastive_loss(
            head(a["5"]), head(p["5"]), head(neg5).view(B, B, -1), 0.07, True, "mean"
        )
    assert float(loss.last_terms["g_text"]) == pytest.approx(float(text), rel=1e-9)
    assert float(loss.last_terms["g_sem"]) == pytest.approx(float(sem), rel=1e-6)


def test_default_totals_keep_the_papers_ratio_to_the_hosts_l1() -> None:
    """Defaults (host weights 1, lambdas 10 : 1 : 10): ``dis_loss = d_adv + d_scat`` and ``gen_loss = g_adv +
    g_scat + 1.0 g_text + 0.1 g_sem`` (the module docstring's ``1.0 L_text + 0.1 L_sem`` next to ``1 * L1``)."""
    d = conv_d().double()
    real, masks = aot_images().double(), holes().double()
    loss = SCATGANLoss()
    dis, gen = loss(d, composite(real, masks), real, masks)
    t = loss.last_terms
    assert loss.contrastive_scale == pytest.approx(0.1)
    assert float(dis.detach()) == pytest.approx(float(t["d_adv"] + t["d_scat"]), rel=1e-12)
    expected = t["g_adv"] + t["g_scat"] + 1.0 * t["g_text"] + 0.1 * t["g_sem"]
    assert float(gen.detach()) == pytest.approx(float(expected), rel=1e-12)


def test_fresh_negatives_come_from_the_seed_0_sampler_in_chunks_of_8() -> None:
    """``negatives=M`` (int): the negatives are ``x_b`` corrupted (fill 1.0) by ``MaskGenerator(H, W, seed=0)``'s
    first ``B * M`` masks, pushed through D in autograd-free passes of 8 images (then the remaining 1)."""
    b, m = 3, 3
    d = conv_d()
    real, masks = aot_images(b), holes(b)
    seen: list[torch.Tensor] = []
    d.netD[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    SCATGANLoss(negatives=m)(d, composite(real, masks), real, masks)
    sizes = [x.shape[0] for x in seen]
    assert 9 not in sizes
    i = sizes.index(8)
    assert sizes[i + 1] == 1
    got = torch.cat(seen[i : i + 2])
    sampled = MaskGenerator(S, S, seed=0).sample(b * m)
    expected = real.repeat_interleave(m, dim=0) * (1 - sampled) + sampled
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host_adv_weight": -1.0}, "host_adv_weight: expected a finite weight >= 0, got -1.0"),
        ({"host_adv_weight": 0.0}, "host_adv_weight: expected a weight > 0 (the host's adv_weight), got 0.0"),
        ({"host_rec_weight": -1.0}, "host_rec_weight: expected a finite weight >= 0, got -1.0"),
        ({"lambda_rec": 0.0}, "lambda_rec: expected a weight > 0 (the paper's: 10), got 0.0"),
        ({"negatives_from": "all"}, "negatives_from: expected one of 'local', 'global', got 'all'"),
        ({"kind": "wgan"}, "kind: expected one of 'hinge', 'bce', 'ls', got 'wgan'"),
        ({"resample": "bilinear"}, "resample: expected one of 'area', 'nearest', 'max', got 'bilinear'"),
    ],
)
def test_gan_loss_option_errors_name_the_option(kwargs: dict[str, Any], message: str) -> None:
    """A bad option raises ``ValueError`` with the exact message naming it (weights > 0 where a ratio needs it)."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SCATGANLoss(**kwargs)


def test_gan_loss_takes_small_positive_weights() -> None:
    """``host_adv_weight`` and ``lambda_rec`` below 1 are valid: ``contrastive_scale = 1 / (0.5 * 0.5)``."""
    assert SCATGANLoss(host_adv_weight=0.5, lambda_rec=0.5).contrastive_scale == pytest.approx(4.0)


# ----------------------------------------------------------------------------------------------------------------------
# SCATGANLoss.forward under DistributedDataParallel (one process, gloo)
# ----------------------------------------------------------------------------------------------------------------------


def test_ddp_on_a_subgroup_broadcasts_the_head_and_gathers_over_that_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """DDP built on a process subgroup: the projection head is broadcast within DDP's group (not the world), and
    the criterion's ``process_group`` (what ``negatives_from="global"`` gathers over) is that group."""
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no process group yet")
    groups: list[Any] = []
    real_broadcast = aotgan_module.broadcast_parameters

    def recording(params: list[nn.Parameter], group: Any = None) -> None:
        groups.append(group)
        real_broadcast(params, group)

    monkeypatch.setattr(aotgan_module, "broadcast_parameters", recording)
    real, masks = aot_images(), holes()
    d = conv_d()
    loss = SCATGANLoss(negatives_from="global")
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{Path(tmp) / 'store'}", rank=0, world_size=1)
        try:
            sub = dist.new_group([0])
            wrapped = nn.parallel.DistributedDataParallel(d, process_group=sub)
            loss(wrapped, composite(real, masks), real, masks)
            assert groups == [sub]
            assert loss.criterion(d).process_group is sub
        finally:
            dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------------------
# SCATDiscriminator.__init__
# ----------------------------------------------------------------------------------------------------------------------


def test_default_projection_head_is_the_releases_256_256() -> None:
    """Default head: ``Linear(feature_dim, 256) -> ReLU -> Linear(256, 256)`` (release: 256, 256)."""
    d = SCATDiscriminator(patch_d(), segmenter=nn.Conv2d(3, 1, 3, padding=1))
    head = d.projection
    assert isinstance(head, nn.Sequential)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features) == (4, 256)
    assert (head[2].in_features, head[2].out_features) == (256, 256)


def test_auto_detection_runs_for_either_term_alone() -> None:
    """``"auto"`` for one of the two layer options and a name for the other: the auto one is still detected
    (``("1", "3")`` textural, ``"5"`` semantic), and the named semantic layer gets its own channel count."""
    seg = nn.Conv2d(3, 1, 3, padding=1)
    text_auto = SCATDiscriminator(patch_d(), segmenter=seg, textural_layers="auto", semantic_layer="1")
    assert (text_auto.textural_layers, text_auto.semantic_layer, text_auto.feature_dim) == (("1", "3"), "1", 2)
    sem_auto = SCATDiscriminator(patch_d(), segmenter=seg, textural_layers=("3",), semantic_layer="auto")
    assert (sem_auto.textural_layers, sem_auto.semantic_layer, sem_auto.feature_dim) == (("3",), "5", 4)


def test_root_module_as_semantic_layer_gets_the_output_channels() -> None:
    """``semantic_layer=""`` (the root's name in ``named_modules()``) with named textural layers: the feature size
    is the channel count of netD's output (the last conv's 1), not an auto-detected one."""
    d = SCATDiscriminator(patch_d(), segmenter=nn.Conv2d(3, 1, 3, padding=1), textural_layers=("1",), semantic_layer="")
    assert d.feature_dim == 1


def test_layer_names_are_checked_against_named_modules_and_input_taps_allowed() -> None:
    """A textural or semantic name absent from ``netD.named_modules()`` raises ``ValueError`` naming it; a name
    ``"<module>:input"`` (the module's input) is checked through its module and accepted."""
    seg = nn.Conv2d(3, 1, 3, padding=1)
    d = SCATDiscriminator(
        patch_d(), segmenter=seg, textural_layers=("2:input",), semantic_layer="4:input", feature_dim=4
    )
    assert (d.textural_layers, d.semantic_layer, d.feature_dim) == (("2:input",), "4:input", 4)
    for kwargs, name in (({"textural_layers": ("9",)}, "9"), ({"semantic_layer": "nope", "feature_dim": 4}, "nope")):
        expected = f"layers: expected names from netD.named_modules(), got unknown layer {name!r}"
        with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
            SCATDiscriminator(patch_d(), segmenter=seg, **kwargs)


def test_textural_layers_as_one_string_is_refused() -> None:
    """A single string (not a sequence of names) for ``textural_layers`` raises ``TypeError`` naming it."""
    expected = "textural_layers: expected 'auto' or a sequence of layer names, got str '1'"
    with pytest.raises(TypeError, match=f"^{re.escape(expected)}$"):
        SCATDiscriminator(patch_d(), segmenter=nn.Conv2d(3, 1, 3, padding=1), textural_layers="1")


@pytest.mark.parametrize(("feature_dim", "shown"), [(None, "None"), (True, "True")])
def test_flatten_needs_an_int_feature_dim(feature_dim: Any, shown: str) -> None:
    """``semantic_pool="flatten"`` cannot infer the feature size: without ``feature_dim`` (or with a bool) it
    raises the documented ``ValueError`` asking for it."""
    expected = (
        "feature_dim: expected a positive int (the size of the pooled semantic feature of '5'), got "
        f"{shown}; it could not be inferred, pass feature_dim=..."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        SCATDiscriminator(
            patch_d(), segmenter=nn.Conv2d(3, 1, 3, padding=1), semantic_pool="flatten", feature_dim=feature_dim
        )


def test_feature_dim_one_is_a_valid_size() -> None:
    """``feature_dim=1`` is a positive int: accepted, and the head takes one input."""
    d = conv_d(semantic_pool="flatten", feature_dim=1)
    assert d.feature_dim == 1
    assert d.projection[0].in_features == 1
