"""models.py: SD architectures from config, the toy model, saving/loading, clear errors without weights."""

import pytest
import torch

from tokencompose.models import (
    WeightsNotFoundError,
    build_toy_model,
    encode_prompts,
    load_components,
    save_toy_model,
    sd_text_config,
    sd_unet_config,
)


def test_sd_configs_are_the_published_shapes():
    sd14 = sd_unet_config("sd14")
    assert sd14["block_out_channels"] == (320, 640, 1280, 1280) and sd14["cross_attention_dim"] == 768
    assert sd14["sample_size"] == 64
    sd21 = sd_unet_config("sd21")
    assert sd21["cross_attention_dim"] == 1024 and sd21["sample_size"] == 96 and sd21["use_linear_projection"]
    assert sd_text_config("sd14")["num_hidden_layers"] == 12 and sd_text_config("sd21")["hidden_size"] == 1024
    with pytest.raises(ValueError, match="sd14"):
        sd_unet_config("sd3")


def test_toy_model_round_trip(tmp_path):
    components = build_toy_model()
    assert components.vae is None and not any(p.requires_grad for p in components.text_encoder.parameters())
    folder = save_toy_model(components, tmp_path / "toy")
    loaded = load_components(str(folder))
    assert loaded.vae is None
    assert loaded.tokenizer("a photo of a cat.")["input_ids"][5] == 2368  # the real CLIP tokenizer
    # stored in half precision: equal to the original up to float16 rounding
    for name, value in components.unet.state_dict().items():
        assert torch.allclose(loaded.unet.state_dict()[name], value, atol=2e-3, rtol=1e-3), name
    embeddings = encode_prompts(loaded, ["a photo of a circle.", ""])
    assert embeddings.shape == (2, 77, 32)


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFoundError) as info:
        load_components(str(tmp_path / "no-such-model"))
    message = str(info.value)
    # a path that does not exist is named as missing, not answered with the hub's login hints (issue 37)
    assert "does not exist" in message and "no-such-model" in message and "toy" in message
    assert "huggingface-cli login" not in message
    monkeypatch.setattr("tokencompose.models.TOY_BASE_DIR", tmp_path / "absent")
    with pytest.raises(WeightsNotFoundError, match="pretrain-toy"):
        load_components("toy")
