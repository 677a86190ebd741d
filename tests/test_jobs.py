"""jobs.py: a finished job is served from its job.json only for the same settings and base weights."""

import json
from pathlib import Path

import pytest

from tokencompose.models import build_toy_model, save_toy_model
from tokencompose.provenance import StaleResultError
from tokencompose.toy.ablation import AblationSettings
from tokencompose.toy.jobs import job_spec, run_job


def _finished(spec):
    """Write the job.json a finished job leaves (no fine-tuning needed to test the cache)."""
    record = {**spec, "scores": {"3.0": {}}, "losses": {}, "train_minutes": 1.0, "eval_minutes": 1.0}
    folder = Path(spec["folder"])
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(record))
    return record


def test_a_cached_job_is_served_only_for_the_same_base_weights_and_settings(tmp_path):
    base = save_toy_model(build_toy_model(sample_size=16, seed=0), tmp_path / "base")
    spec = job_spec(tmp_path / "work", str(base), "both_seed0", "both", 0, 0.1, AblationSettings(steps=3), [3.0], False)
    assert spec["settings"]["steps"] == 3 and spec["base_digest"]
    _finished(spec)
    assert run_job(spec)["train_minutes"] == 1.0  # served from job.json, nothing ran

    other_settings = job_spec(tmp_path / "work", str(base), "both_seed0", "both", 0, 0.1, AblationSettings(steps=4),
                              [3.0], False)
    with pytest.raises(StaleResultError, match="settings"):
        run_job(other_settings)

    save_toy_model(build_toy_model(sample_size=16, seed=1), base)  # the base retrained in place
    retrained = job_spec(tmp_path / "work", str(base), "both_seed0", "both", 0, 0.1, AblationSettings(steps=3), [3.0],
                         False)
    assert retrained["base_digest"] != spec["base_digest"]
    with pytest.raises(StaleResultError, match="base_digest"):
        run_job(retrained)


def test_variant_keeps_only_its_loss_weights(tmp_path):
    base = save_toy_model(build_toy_model(sample_size=16, seed=0), tmp_path / "base")
    settings = AblationSettings(token_weight=0.5, pixel_weight=0.25)
    weights = {variant: (spec["settings"]["token_weight"], spec["settings"]["pixel_weight"])
               for variant in ("ldm", "pixel", "token", "both", "base")
               for spec in [job_spec(tmp_path, str(base), variant, variant, 0, 0.1, settings, [3.0], False)]}
    assert weights == {"ldm": (0.0, 0.0), "pixel": (0.0, 0.25), "token": (0.5, 0.0), "both": (0.5, 0.25),
                       "base": (0.0, 0.0)}


def test_a_job_reuses_the_same_finetune_of_another_job(tmp_path):
    """The sweep's seed-0 fine-tune at the chosen ratio is the main run's: trained once, evaluated twice. A job
    with another seed, variant or training setting trains its own."""
    from tokencompose.toy.jobs import same_finetune

    base = save_toy_model(build_toy_model(sample_size=16, seed=0), tmp_path / "base")
    sweep_settings = AblationSettings(steps=3, prompts_per_count=8, prompt_seed=7)
    sweep = job_spec(tmp_path / "work", str(base), "sweep_r0.1", "both", 0, 0.1, sweep_settings, [3.0], False)
    _finished(sweep)
    train = Path(sweep["folder"]) / "train"
    (train / "unet").mkdir(parents=True)
    (train / "log.csv").write_text("step,ldm,token,pixel,total,seconds\n1,0.1,0.5,0.7,0.2,1.0\n")

    main_settings = AblationSettings(steps=3, prompts_per_count=32, prompt_seed=2024)
    same = job_spec(tmp_path / "work", str(base), "both_seed0", "both", 0, 0.1, main_settings, [3.0], False)
    assert same_finetune(same) == Path(sweep["folder"])
    for other in (job_spec(tmp_path / "work", str(base), "both_seed1", "both", 1, 0.1, main_settings, [3.0], False),
                  job_spec(tmp_path / "work", str(base), "token_seed0", "token", 0, 0.1, main_settings, [3.0], False),
                  job_spec(tmp_path / "work", str(base), "both_long", "both", 0, 0.1,
                           AblationSettings(steps=4, prompts_per_count=32), [3.0], False)):
        assert same_finetune(other) is None, other["name"]
    (train / "unet").rmdir()  # weights gone: nothing to share
    assert same_finetune(same) is None
