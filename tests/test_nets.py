"""Reference networks: the two-headed U-Net discriminator, the U-Net segmenter and the AOT-GAN example nets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from scatloss.nets import UNetDiscriminator, UNetSegmenter

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the examples live beside the package, not inside it
    sys.path.insert(0, str(ROOT))

from examples.aotgan.networks import AOTBlock, AOTGenerator, PatchDiscriminator  # noqa: E402


def _tiny_d(**kwargs: object) -> UNetDiscriminator:
    config = {"base_channels": 4, "depth": 3, "max_channels": 16, **kwargs}
    return UNetDiscriminator(**config)  # type: ignore[arg-type]


def _weighted_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _is_spectral_normed(layer: nn.Module) -> bool:
    if not parametrize.is_parametrized(layer, "weight"):
        return False
    return any(type(p).__name__ == "_SpectralNorm" for p in layer.parametrizations.weight)


def _assert_every_parameter_gets_a_gradient(module: nn.Module, loss: torch.Tensor) -> None:
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


# ---- UNetDiscriminator -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "batch", "h", "w"), [(3, 1, 8, 8), (1, 2, 16, 24), (5, 1, 32, 8)])
def test_unet_discriminator_gives_global_b1_and_pixel_map_at_input_resolution(
    channels: int, batch: int, h: int, w: int
) -> None:
    d = _tiny_d(in_channels=channels)
    global_logits, pixel_logits = d(torch.randn(batch, channels, h, w))
    assert global_logits.shape == (batch, 1)
    assert pixel_logits.shape == (batch, 1, h, w)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_unet_discriminator_works_for_any_depth(depth: int) -> None:
    d = UNetDiscriminator(base_channels=2, depth=depth, max_channels=8)
    size = 2**depth
    global_logits, pixel_logits = d(torch.randn(1, 3, size, 2 * size))
    assert global_logits.shape == (1, 1)
    assert pixel_logits.shape == (1, 1, size, 2 * size)
    assert len(d.encoder) == len(d.decoder) == depth


def test_unet_discriminator_default_tap_names_exist_in_named_modules() -> None:
    d = _tiny_d(depth=5)
    names = dict(d.named_modules())
    assert d.textural_layers == ("encoder.0", "encoder.1", "encoder.2", "encoder.3")
    assert d.semantic_layer == UNetDiscriminator.semantic_layer == "global_head:input"
    for name in d.textural_layers:
        assert name in names
    module_name, _, port = d.semantic_layer.partition(":")
    assert isinstance(names[module_name], nn.Linear)
    assert port == "input"
    for name in ("encoder.4", "decoder.0", "decoder.4", "pixel_head", "global_head"):
        assert name in names
    assert d.default_taps() == {"textural": d.textural_layers, "semantic": "global_head:input"}


@pytest.mark.parametrize(("depth", "expected"), [(1, ("encoder.0",)), (3, ("encoder.0", "encoder.1", "encoder.2"))])
def test_unet_discriminator_textural_layers_shrink_below_depth_four(depth: int, expected: tuple[str, ...]) -> None:
    assert _tiny_d(depth=depth).textural_layers == expected
    assert UNetDiscriminator.textural_layer_names(depth) == expected


def test_unet_discriminator_textural_layer_i_halves_resolution_i_plus_one_times() -> None:
    d = _tiny_d(depth=4, max_channels=64)
    outputs: dict[str, torch.Tensor] = {}
    names = dict(d.named_modules())
    for name in d.textural_layers:
        names[name].register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
    d(torch.randn(2, 3, 32, 16))
    for i, name in enumerate(d.textural_layers):
        assert outputs[name].shape == (2, 4 * 2**i, 32 // 2 ** (i + 1), 16 // 2 ** (i + 1))


def test_unet_discriminator_semantic_vector_is_1024_wide_with_release_defaults() -> None:
    torch.manual_seed(0)
    d = UNetDiscriminator(base_channels=64, depth=5)
    captured: dict[str, torch.Tensor] = {}
    d.global_head.register_forward_pre_hook(lambda _m, args: captured.__setitem__("pooled", args[0]))
    d.encoder[4].register_forward_hook(lambda _m, _i, out: captured.__setitem__("bottleneck", out))
    with torch.no_grad():
        d(torch.randn(1, 3, 32, 32))
    assert d.feature_dim == 1024
    assert d.global_head.in_features == 1024
    assert captured["pooled"].shape == (1, 1024)
    # The semantic vector is the ReLU-then-sum-pool of the bottleneck.
    torch.testing.assert_close(captured["pooled"], torch.relu(captured["bottleneck"]).sum(dim=(2, 3)))


@pytest.mark.parametrize(("h", "w"), [(12, 16), (16, 20), (4, 8)])
def test_unet_discriminator_indivisible_size_raises(h: int, w: int) -> None:
    with pytest.raises(ValueError, match=r"x: expected height and width divisible by 2\*\*depth = 8 \(depth=3\)"):
        _tiny_d()(torch.randn(1, 3, h, w))


def test_unet_discriminator_wrong_channel_count_raises() -> None:
    with pytest.raises(ValueError, match=r"x: expected 3 channels"):
        _tiny_d()(torch.randn(1, 4, 8, 8))


def test_unet_discriminator_integer_input_raises() -> None:
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        _tiny_d()(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize("kwargs", [{"depth": 0}, {"base_channels": -4}])
def test_unet_discriminator_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=f"{next(iter(kwargs))}: expected a positive int"):
        _tiny_d(**kwargs)


def test_unet_discriminator_every_conv_and_linear_is_spectral_normed() -> None:
    layers = _weighted_layers(_tiny_d())
    assert len(layers) > 10
    assert [n for n, m in layers if not _is_spectral_normed(m)] == []


def test_unet_discriminator_without_spectral_norm_has_plain_layers() -> None:
    assert not any(_is_spectral_normed(m) for _, m in _weighted_layers(_tiny_d(spectral_norm=False)))


def test_unet_discriminator_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    d = _tiny_d()
    global_logits, pixel_logits = d(torch.randn(2, 3, 16, 16))
    _assert_every_parameter_gets_a_gradient(d, global_logits.sum() + pixel_logits.sum())


def test_unet_discriminator_has_no_inplace_ops_so_tapped_outputs_stay_intact() -> None:
    d = _tiny_d(depth=4, max_channels=32)
    assert not any(getattr(m, "inplace", False) for m in d.modules())
    kept: dict[str, torch.Tensor] = {}
    copies: dict[str, torch.Tensor] = {}

    def hook(name: str):  # noqa: ANN202
        def record(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            kept[name] = out
            copies[name] = out.detach().clone()

        return record

    for name, module in d.named_modules():
        if name.startswith(("encoder.", "decoder.")) and name.count(".") <= 2:
            module.register_forward_hook(hook(name))
    d(torch.randn(2, 3, 16, 16))
    assert kept
    for name in kept:
        assert torch.equal(kept[name], copies[name]), f"{name} was modified after it was produced"


def test_unet_discriminator_is_deterministic_under_manual_seed() -> None:
    torch.manual_seed(3)
    a = _tiny_d().state_dict()
    torch.manual_seed(3)
    b = _tiny_d().state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- UNetSegmenter -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "batch", "h", "w"), [(3, 1, 16, 16), (1, 3, 16, 32), (4, 1, 48, 16)])
def test_unet_segmenter_gives_per_pixel_logits_at_input_resolution(channels: int, batch: int, h: int, w: int) -> None:
    s = UNetSegmenter(in_channels=channels, base_channels=4, depth=4)
    assert s(torch.randn(batch, channels, h, w)).shape == (batch, 1, h, w)


def test_unet_segmenter_every_conv_is_spectral_normed() -> None:
    layers = _weighted_layers(UNetSegmenter(base_channels=4, depth=3))
    assert [n for n, m in layers if not _is_spectral_normed(m)] == []


def test_unet_segmenter_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    s = UNetSegmenter(base_channels=4, depth=3)
    _assert_every_parameter_gets_a_gradient(s, s(torch.randn(2, 3, 16, 16)).sum())


def test_unet_segmenter_indivisible_size_raises() -> None:
    with pytest.raises(ValueError, match=r"divisible by 2\*\*depth = 16"):
        UNetSegmenter(base_channels=4)(torch.randn(1, 3, 24, 24))


# ---- examples/aotgan ---------------------------------------------------------------------------------------------


def _corrupt(batch: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, h, w, generator=g) * 2 - 1
    hole = (torch.rand(batch, 1, h, w, generator=g) < 0.3).float()
    return image * (1 - hole) + hole, hole


@pytest.mark.parametrize(("batch", "h", "w"), [(1, 16, 16), (2, 12, 20)])
def test_aot_generator_output_has_input_shape_and_lies_in_minus_one_one(batch: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    g = AOTGenerator(base_channels=4, num_blocks=2)
    with torch.no_grad():
        for p in g.parameters():  # large weights drive tanh into saturation: the range must still hold
            p.mul_(50.0)
        out = g(*_corrupt(batch, h, w))
    assert out.shape == (batch, 3, h, w)
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert out.abs().max() > 0.9  # saturated, so the range check above was exercised


def test_aot_generator_accepts_bool_holes_and_other_channel_counts() -> None:
    g = AOTGenerator(in_channels=2, base_channels=4, num_blocks=1)
    out = g(torch.rand(1, 1, 8, 8), torch.zeros(1, 1, 8, 8, dtype=torch.bool))
    assert out.shape == (1, 1, 8, 8)


def test_aot_generator_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    g = AOTGenerator(base_channels=4, num_blocks=2)
    _assert_every_parameter_gets_a_gradient(g, g(*_corrupt(2, 16, 16)).square().sum())


def test_aot_generator_size_not_divisible_by_four_raises() -> None:
    corrupted, hole = _corrupt(1, 18, 16)
    with pytest.raises(ValueError, match="corrupted: expected height and width divisible by 4"):
        AOTGenerator(base_channels=4, num_blocks=1)(corrupted, hole)


def test_aot_generator_mismatched_hole_raises() -> None:
    corrupted, _ = _corrupt(1, 16, 16)
    with pytest.raises(ValueError, match=r"hole: expected the spatial size \(16, 16\)"):
        AOTGenerator(base_channels=4, num_blocks=1)(corrupted, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"hole: expected shape \(B, 1, H, W\)"):
        AOTGenerator(base_channels=4, num_blocks=1)(corrupted, torch.zeros(1, 2, 16, 16))


def test_aot_block_rates_must_divide_channels() -> None:
    with pytest.raises(ValueError, match="rates: expected len"):
        AOTBlock(10, rates=(1, 2, 4))


def test_aot_block_keeps_shape_and_is_a_gated_mix_of_input_and_transform() -> None:
    torch.manual_seed(0)
    block = AOTBlock(8, rates=(1, 2))
    x = torch.randn(2, 8, 9, 7)
    assert block(x).shape == x.shape
    with torch.no_grad():  # a zero fuse conv makes the transform 0, so the output is x * (1 - g), |.| <= |x|
        for p in block.fuse.parameters():
            p.zero_()
        out = block(x)
    assert (out.abs() <= x.abs() + 1e-6).all()
    assert not torch.allclose(out, x)


@pytest.mark.parametrize(("batch", "h", "w"), [(1, 8, 8), (2, 64, 64), (1, 40, 24)])
def test_patch_discriminator_gives_logit_map_at_one_eighth_resolution(batch: int, h: int, w: int) -> None:
    d = PatchDiscriminator(base_channels=4)
    assert d(torch.randn(batch, 3, h, w)).shape == (batch, 1, h // 8, w // 8)


def test_patch_discriminator_is_spectral_normed_with_inplace_leaky_relu() -> None:
    d = PatchDiscriminator(base_channels=4)
    layers = _weighted_layers(d)
    assert len(layers) == 5
    assert all(_is_spectral_normed(m) for _, m in layers)
    acts = [m for m in d.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 4
    assert all(m.inplace and m.negative_slope == 0.2 for m in acts)


def test_patch_discriminator_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    d = PatchDiscriminator(base_channels=4)
    _assert_every_parameter_gets_a_gradient(d, d(torch.randn(2, 3, 16, 16)).sum())


def test_patch_discriminator_indivisible_size_raises() -> None:
    with pytest.raises(ValueError, match="x: expected height and width divisible by 8"):
        PatchDiscriminator(base_channels=4)(torch.randn(1, 3, 12, 16))
