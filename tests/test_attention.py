"""attention.py: the recorder changes nothing the UNet computes, and records the right maps in the right places."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from tokencompose.attention import attach_recorder, attention_layers, layer_resolutions


def toy_inputs(batch=2, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.rand(batch, 3, size, size, generator=generator)
    context = torch.randn(batch, 77, 32, generator=generator)
    return sample, torch.tensor([10, 700][:batch]), context


def test_outputs_equal_with_and_without_recorder_toy(toy_unet):
    sample, t, context = toy_inputs()
    with torch.no_grad():
        plain = toy_unet(sample, t, context).sample
        recorder = attach_recorder(toy_unet, mode="all")
        recorded = toy_unet(sample, t, context).sample
    assert torch.allclose(plain, recorded, atol=1e-5)
    assert recorder.maps(), "nothing was recorded"


def test_outputs_equal_and_keys_sd14(sd14_unet):
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 16, 16, generator=generator)
    context = torch.randn(1, 77, 768, generator=generator)
    with torch.no_grad():
        plain = sd14_unet(sample, 500, context).sample
        recorder = attach_recorder(sd14_unet, groups=("down", "mid", "up"))
        try:
            recorded = sd14_unet(sample, 500, context).sample
            maps = recorder.maps()
        finally:
            recorder.detach()
    assert (plain - recorded).abs().max().item() < 1e-5
    # at 16x16 latents the four levels are 16, 8, 4, 2 (SD 1.4's 64/32/16/8 divided by 4)
    assert {k: len(v) for k, v in maps.items()} == {
        "down_16": 2, "down_8": 2, "down_4": 2, "mid_2": 1, "up_4": 3, "up_8": 3, "up_16": 3}
    assert tuple(maps["up_16"][0].shape) == (1, 8, 256, 77)
    assert torch.allclose(maps["mid_2"][0].sum(-1), torch.ones(1, 8, 4), atol=1e-5)  # softmax over tokens


def test_sd14_keys_at_512px(sd14_unet):
    keys = {k: len(v) for k, v in layer_resolutions(sd14_unet, 64).items()}
    assert keys == {"down_64": 2, "down_32": 2, "down_16": 2, "mid_8": 1, "up_16": 3, "up_32": 3, "up_64": 3}
    assert type(next(iter(sd14_unet.attn_processors.values()))) is AttnProcessor2_0  # restored


def test_sd21_keys():
    # SD 2.1 at 768 px has 96x96 latents: keys 96/48/24/12. A forward at 96 takes a minute on 2 CPU cores,
    # so this runs at 24x24 (keys 24/12/6/3: the same ratios); test_sd14_keys_at_512px checks full size.
    from tokencompose.models import build_architecture

    unet, _ = build_architecture("sd21", text_encoder=False)
    keys = set(layer_resolutions(unet.eval(), 24))
    assert keys == {"down_24", "down_12", "down_6", "mid_3", "up_6", "up_12", "up_24"}


def test_default_records_only_supervised_cross_attention(toy_unet):
    sample, t, context = toy_inputs()
    recorder = attach_recorder(toy_unet)
    processors = toy_unet.attn_processors
    recorded = {layer.name for layer in recorder.layers}
    assert recorded and all(".attn2." in name and not name.startswith("down") for name in recorded)
    assert all(type(p) is AttnProcessor2_0 for name, p in processors.items() if name not in recorded)
    with torch.no_grad():
        toy_unet(sample, t, context)
    maps = recorder.maps()
    # the toy UNet has cross-attention at 16 (down, up) and 8 (mid): SD's mid + decoder layers in miniature
    assert set(maps) == {"mid_8", "up_16"}
    assert [tuple(m.shape) for m in maps["up_16"]] == [(2, 4, 256, 77)] * 2
    recorder.reset()
    assert recorder.maps() == {}


def test_mode_all_records_self_attention_too(toy_unet):
    sample, t, context = toy_inputs()
    recorder = attach_recorder(toy_unet, mode="all")
    with torch.no_grad():
        toy_unet(sample, t, context)
    maps = recorder.maps()
    assert sum(len(v) for v in maps.values()) == len(attention_layers(toy_unet))
    assert tuple(maps["up_16_self"][0].shape) == (2, 4, 256, 256)
    assert tuple(maps["down_16"][0].shape) == (2, 4, 256, 77)


def test_classifier_free_guidance_keeps_conditional_half(toy_unet):
    sample, t, context = toy_inputs()
    cond_only = attach_recorder(toy_unet, keep="all", detach=True)
    with torch.no_grad():
        toy_unet(sample[1:], t[1:], context[1:])
    expected = cond_only.maps()["mid_8"][0]
    cond_only.detach()
    recorder = attach_recorder(toy_unet, keep="cond", detach=True)
    with torch.no_grad():
        toy_unet(sample, t, context)
    got = recorder.maps()["mid_8"][0]
    assert got.shape[0] == 1 and torch.allclose(got, expected, atol=1e-5)


def test_gradient_checkpointing_does_not_duplicate_and_keeps_graph(toy_unet):
    toy_unet.train()
    toy_unet.enable_gradient_checkpointing()
    sample, t, context = toy_inputs()
    recorder = attach_recorder(toy_unet)
    out = toy_unet(sample, t, context).sample
    counts = {k: len(v) for k, v in recorder.maps().items()}
    attention_term = sum(m[..., 5].sum() for maps in recorder.maps().values() for m in maps)
    (out.square().mean() + attention_term).backward()
    assert {k: len(v) for k, v in recorder.maps().items()} == counts
    # the attention term reaches the key projections of a recorded layer
    name = recorder.layers[0].name.rsplit(".processor", 1)[0]
    to_k = toy_unet.get_submodule(name).to_k.weight
    assert to_k.grad is not None and to_k.grad.abs().sum() > 0


def test_paused_and_detach(toy_unet):
    sample, t, context = toy_inputs()
    original = {k: type(v) for k, v in toy_unet.attn_processors.items()}
    recorder = attach_recorder(toy_unet)
    with torch.no_grad(), recorder.paused():
        toy_unet(sample, t, context)
    assert recorder.maps() == {}
    recorder.detach()
    recorder.detach()  # a second call is harmless
    with torch.no_grad():
        toy_unet(sample, t, context)
    assert recorder.maps() == {}
    assert {k: type(v) for k, v in toy_unet.attn_processors.items()} == original


def test_bad_arguments(toy_unet):
    with pytest.raises(ValueError, match="groups"):
        attach_recorder(toy_unet, groups=("middle",))
    with pytest.raises(ValueError, match="mode"):
        attach_recorder(toy_unet, mode="self")
    with pytest.raises(ValueError, match="keep"):
        attach_recorder(toy_unet, keep="uncond")
