"""Sampling modes (sample.sampling_settings, prepare_for_sampling, `sample --mode`) and benchmarks/sd_sampling.py."""

import logging

import numpy as np
import pytest
import torch
from repo_scripts import load_script
from sd_parts import tiny_pipeline

from tokencompose.sample import (
    SAMPLING_MODES,
    attention_processor_names,
    cli,
    generate,
    prepare_for_sampling,
    sampling_settings,
)

PROMPTS = ["a photo of a circle.", "a photo of a star and a ring."]


# ---------------------------------------------------------------------------------------------- settings

@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_authors_mode_is_batch_one_float32_uncompiled_on_every_device(device):
    settings = sampling_settings("authors", device)
    assert (settings.mode, settings.dtype, settings.batch_size, settings.compile_unet) == (
        "authors", torch.float32, 1, False)
    assert settings.device == device
    # asking it for an explicit float32 / batch 1 is the same thing, not an error
    assert sampling_settings("authors", device, dtype="float32", batch_size=1) == settings


def test_fast_mode_is_batched_half_precision_on_cuda_and_float32_on_cpu():
    cuda = sampling_settings("fast", "cuda")  # settings only: nothing is put on a GPU
    assert (cuda.dtype, cuda.batch_size, cuda.compile_unet) == (torch.float16, 16, False)
    assert sampling_settings("fast", "cuda:1", dtype="bfloat16", batch_size=32).dtype == torch.bfloat16
    assert sampling_settings("fast", "cuda", compile_unet=True).compile_unet
    cpu = sampling_settings("fast", "cpu")
    assert (cpu.dtype, cpu.batch_size, cpu.compile_unet) == (torch.float32, 8, False)
    assert SAMPLING_MODES == ("fast", "authors")


def test_compile_is_turned_off_where_it_does_not_pay(caplog):
    with caplog.at_level(logging.WARNING, logger="tokencompose.sample"):
        assert not sampling_settings("fast", "cpu", compile_unet=True).compile_unet
    assert "only used on CUDA" in caplog.text


def test_bad_settings_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="unknown sampling mode 'quick'.*'fast'.*'authors'"):
        sampling_settings("quick", "cpu")
    with pytest.raises(ValueError, match="batch 1, float32.*batch size 4.*'fast' mode"):
        sampling_settings("authors", "cpu", batch_size=4)
    with pytest.raises(ValueError, match="dtype float16"):
        sampling_settings("authors", "cpu", dtype=torch.float16)
    with pytest.raises(ValueError, match="compile"):
        sampling_settings("authors", "cuda", compile_unet=True)
    with pytest.raises(ValueError, match="unknown dtype 'half'"):
        sampling_settings("fast", "cpu", dtype="half")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        sampling_settings("fast", "cpu", batch_size=0)


# ---------------------------------------------------------------------------------------------- the pipeline

def test_fast_mode_puts_eager_attention_on_sdpa_and_keeps_a_recorder():
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    class Recorder(AttnProcessor):  # stands for an attention recorder attached for heat maps
        pass

    pipe = tiny_pipeline()
    names = list(pipe.unet.attn_processors)
    pipe.unet.set_attn_processor({name: Recorder() if i == 0 else AttnProcessor() for i, name in enumerate(names)})
    prepare_for_sampling(pipe, sampling_settings("authors", "cpu"))
    assert attention_processor_names(pipe.unet) == {"Recorder": 1, "AttnProcessor": len(names) - 1}
    prepare_for_sampling(pipe, sampling_settings("fast", "cpu"))
    processors = pipe.unet.attn_processors
    assert type(processors[names[0]]) is Recorder
    assert all(type(processors[name]) is AttnProcessor2_0 for name in names[1:])


def test_fast_mode_casts_a_loaded_pipeline_to_its_dtype():
    pipe = prepare_for_sampling(tiny_pipeline(), sampling_settings("fast", "cpu", dtype="bfloat16"))
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16


def test_both_modes_make_the_same_images_on_cpu():
    """Batched (fast) or one at a time (authors), the seeds are per image: in float32 the images agree."""
    pipe = tiny_pipeline()
    images = {}
    for mode in SAMPLING_MODES:
        settings = sampling_settings(mode, "cpu", batch_size=4 if mode == "fast" else None)
        model = prepare_for_sampling(pipe, settings)
        images[mode] = generate(model, PROMPTS, [0, 1], steps=2, batch_size=settings.batch_size, progress=False)
    assert images["fast"].shape == (4, 32, 32, 3)
    assert np.abs(images["fast"].astype(int) - images["authors"].astype(int)).max() <= 1


# ---------------------------------------------------------------------------------------------- command line

def test_cli_refuses_a_bad_mode_with_a_clear_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli(["--prompts", "a cat.", "--out", str(tmp_path / "out"), "--mode", "turbo"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "--mode" in error and "unknown sampling mode 'turbo'" in error and "'fast'" in error
    assert "'authors'" in error
    with pytest.raises(SystemExit) as stop:
        cli(["--prompts", "a cat.", "--out", str(tmp_path / "out"), "--mode", "authors", "--batch-size", "4"])
    assert stop.value.code == 2
    assert "batch 1, float32" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any model was loaded or image written


# ---------------------------------------------------------------------------------------------- benchmark

def test_benchmark_smoke_run_writes_a_table_with_both_modes(tmp_path, capsys):
    module = load_script("benchmarks/sd_sampling.py")
    out = tmp_path / "sd_sampling.md"
    assert module.main(["--smoke", "--device", "cpu", "--images", "2", "--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[1:-1]]
            for line in text.splitlines() if line.startswith("| ") and not line.startswith("| mode")}
    assert set(rows) == {"authors", "fast"}
    assert rows["authors"][1:3] == ["float32", "1"] and rows["authors"][7] == "1.00x"
    assert rows["fast"][1:3] == ["float32", "2"]  # float32 on a CPU; the smoke run's batch of 2
    for row in rows.values():
        assert row[4] == "2" and float(row[6]) > 0  # 2 images timed, a positive rate
    assert "Not measured on a GPU" in text and "CPU" in text and "--smoke" in text


def test_multigen_extrapolation():
    module = load_script("benchmarks/sd_sampling.py")
    assert module.multigen_hours(1.0, 50) == pytest.approx(10_000 / 3600)
    assert module.multigen_hours(2.0, 25) == pytest.approx(10_000 / 3600)  # half the steps, scaled to 50
