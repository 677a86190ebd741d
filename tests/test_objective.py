"""objective.py: one forward pass of Eq. (5) (L_LDM's target by hand, SD 1.4's shapes end to end)."""

import math

import numpy as np
import pytest
import torch

from tokencompose.config import get_config
from tokencompose.models import build_toy_model
from tokencompose.objective import compute_losses


def test_v_prediction_target_by_hand():
    """SD 2.1's target v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_0, checked on the toy model."""
    from diffusers import DDPMScheduler

    from tokencompose.attention import attach_recorder
    from tokencompose.data import collate, encode_example
    from tokencompose.models import TOY_SCHEDULER

    components = build_toy_model(sample_size=16, seed=4)
    components.scheduler = DDPMScheduler(**{**TOY_SCHEDULER, "prediction_type": "v_prediction"})
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[2:8, 2:8] = 255
    mask = np.zeros((16, 16), dtype=bool)
    mask[2:8, 2:8] = True
    batch = collate([encode_example(image, "a photo of a square.", ["square"], [mask], components.tokenizer, 16,
                                    (0.0, 1.0))])
    config = get_config("toy", resolution=16, prediction_type="v_prediction", groups=("mid_4", "up_8"))
    predictions = []
    components.unet.register_forward_hook(lambda module, args, output: predictions.append(output.sample.detach()))
    recorder = attach_recorder(components.unet, groups=("mid", "up"))
    losses = compute_losses(components, recorder, batch, config, torch.Generator().manual_seed(11))

    generator = torch.Generator().manual_seed(11)  # the documented draws: noise, then the timestep
    noise = torch.randn(1, 3, 16, 16, generator=generator)
    t = int(torch.randint(0, 1000, (1,), generator=generator))
    abar = float(components.scheduler.alphas_cumprod[t])
    x0 = batch["pixel_values"]
    velocity = math.sqrt(abar) * noise - math.sqrt(1 - abar) * x0
    expected = ((predictions[0] - velocity) ** 2).mean()
    assert float(losses["ldm"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert set(losses) >= {"token/mid_4", "token/up_8", "pixel/mid_4", "pixel/up_8"}


def test_sd14_architecture_one_step_on_cpu(tokenizer, sd14_unet):
    """SD 1.4's UNet (random weights, shared with test_attention), a small CLIP text encoder of SD 1.4's width
    and a tiny random VAE: one forward + backward at 64 px through the loop's SD path."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from tokencompose.attention import attach_recorder
    from tokencompose.data import collate, encode_example
    from tokencompose.models import Components, sd_text_config

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(**{**sd_text_config("sd14"), "num_hidden_layers": 1,
                                                   "intermediate_size": 64}))
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                        norm_num_groups=4, sample_size=64)
    assert vae.config.scaling_factor == pytest.approx(0.18215)
    unet = sd14_unet
    components = Components(tokenizer, text_encoder.requires_grad_(False), vae.requires_grad_(False), unet,
                            DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    cat, kite = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    cat[8:40, 8:40], kite[40:60, 30:60] = True, True
    batch = collate([encode_example(image, "a photo of a cat and a kite.", ["cat", "kite"], [cat, kite], tokenizer,
                                    64, (-1.0, 1.0))])
    # 64 px -> 8 x 8 latents: SD 1.4's mid_8/up_16/32/64 at 512 px become mid_1/up_2/4/8
    config = get_config("sd14", resolution=64, groups=("mid_1", "up_2", "up_4", "up_8"))
    supervised = unet.up_blocks[3].attentions[0]  # the first up_8 transformer: the only weights given a gradient
    unet.requires_grad_(False)
    supervised.requires_grad_(True)
    recorder = attach_recorder(unet, groups=("mid", "up"))
    try:
        losses = compute_losses(components, recorder, batch, config, torch.Generator().manual_seed(0))
        assert {f"token/{g}" for g in config.groups} <= set(losses)
        assert all(math.isfinite(float(v.detach())) for v in losses.values())
        assert float(losses["token"].detach()) > 0
        losses["total"].backward()
        grad = supervised.transformer_blocks[0].attn2.to_k.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
        assert all(p.grad is None for p in text_encoder.parameters()) and all(p.grad is None for p in vae.parameters())
    finally:  # the UNet is shared with other test modules: leave it as it was
        recorder.detach()
        supervised.zero_grad(set_to_none=True)
        unet.requires_grad_(True)
        unet.eval()
