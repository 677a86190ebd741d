"""Shared fixtures: the offline CLIP tokenizer (built once per session)."""

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from tokencompose.tokens import clip_tokenizer

    return clip_tokenizer()


@pytest.fixture(scope="session")
def sd14_unet():
    """SD 1.4's UNet architecture with random weights (built once: ~25 s on 2 cores)."""
    from tokencompose.models import build_architecture

    unet, _ = build_architecture("sd14", text_encoder=False)
    return unet.eval()


@pytest.fixture()
def toy_unet():
    import torch
    from diffusers import UNet2DConditionModel

    from tokencompose.models import TOY_UNET

    torch.manual_seed(0)
    return UNet2DConditionModel(**TOY_UNET).eval()
