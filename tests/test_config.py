"""config.py: the presets carry the paper's recipe, and bad values are rejected with the field's name."""

import pytest

from tokencompose.config import PRESETS, get_config


def test_sd14_is_the_authors_recipe():
    config = get_config("sd14")
    assert config.pretrained == "CompVis/stable-diffusion-v1-4"
    assert (config.learning_rate, config.train_batch_size, config.gradient_accumulation_steps) == (5e-6, 1, 4)
    assert (config.max_train_steps, config.max_grad_norm) == (24_000, 1.0)
    assert (config.token_weight, config.pixel_weight) == (1e-3, 5e-5)
    assert config.groups == ("mid_8", "up_16", "up_32", "up_64")
    assert config.resolution == 512 and config.prediction_type == "epsilon" and config.gradient_checkpointing


def test_sd21_scales_resolutions_by_one_and_a_half():
    config = get_config("sd21")
    assert config.resolution == 768 and config.prediction_type == "v_prediction"
    assert config.groups == ("mid_12", "up_24", "up_48", "up_96")


def test_toy_is_the_offline_default():
    config = get_config()
    assert config.preset == "toy" and config.pixel_space and config.value_range == (0.0, 1.0)
    assert config.groups == ("mid_8", "up_16")


def test_overrides_and_errors():
    assert get_config("sd14", mixed_precision="bf16").mixed_precision == "bf16"
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("sd15")
    with pytest.raises(ValueError, match="learning_rat"):
        get_config("toy", learning_rat=1.0)
    with pytest.raises(ValueError, match="mixed_precision"):
        get_config("toy", mixed_precision="fp8")
    with pytest.raises(ValueError, match="max_train_steps"):
        get_config("toy", max_train_steps=0)
    with pytest.raises(ValueError, match="token_weight"):
        get_config("toy", token_weight=-1.0)
    with pytest.raises(ValueError, match="groups"):
        get_config("toy", groups=("middle_8",))
    assert set(PRESETS) == {"toy", "sd14", "sd21"}


def test_the_default_toy_base_meets_its_gates_on_these_weights():
    """The default toy base is the one whose card shows every gate met (issue 12), measured on the weights in
    the folder: swapping the weights without measuring them again fails here. The control stays beside it."""
    import json

    from tokencompose.config import TOY_BASE_DIR, TOY_CONTROL_BASE_DIR
    from tokencompose.provenance import weights_digest

    gates = json.loads((TOY_BASE_DIR / "gates.json").read_text())
    assert gates["digest"] == weights_digest(TOY_BASE_DIR)
    assert gates["gates"] and all(entry["met"] for entry in gates["gates"].values()), gates["gates"]
    assert get_config("toy").pretrained == str(TOY_BASE_DIR)
    assert (TOY_CONTROL_BASE_DIR / "unet").is_dir() and TOY_CONTROL_BASE_DIR != TOY_BASE_DIR
