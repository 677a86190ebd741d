"""evaluate/latency.py: medians of known fake timings, warm-up excluded, interleaving, and a real toy run."""

import json
import math

import pytest

from tokencompose.evaluate.latency import cli, compare_latency, latency_table, measure_latency
from tokencompose.models import build_toy_model, save_toy_model


class FakeClock:
    """Returns the given readings in order (two readings a timed call: start, end)."""

    def __init__(self, readings):
        self.readings = list(readings)

    def __call__(self):
        return self.readings.pop(0)


def test_median_of_known_timings_excludes_warmup():
    calls = []
    # warm-up: 100 s (excluded); timed runs: 2, 3, 4, 10 s for 2 images -> 1, 1.5, 2, 5 s an image
    clock = FakeClock([0, 100, 100, 102, 102, 105, 105, 109, 109, 119])
    result = measure_latency(lambda prompts: calls.append(list(prompts)), ["a", "b"], runs=4, warmup=1, clock=clock)
    assert len(calls) == 5 and calls[0] == ["a", "b"]
    assert result["seconds_per_image_runs"] == [1.0, 1.5, 2.0, 5.0]
    assert result["seconds_per_image"] == 1.75  # median of an even count: mean of the middle two
    assert (result["min"], result["max"]) == (1.0, 5.0)
    assert result["runs"] == 4 and result["warmup"] == 1 and result["images_per_run"] == 2


def test_synchronize_is_called_around_each_timed_call():
    events = []
    measure_latency(lambda p: events.append("generate"), ["a"], runs=1, warmup=0, clock=lambda: 0.0,
                    synchronize=lambda: events.append("sync"))
    assert events == ["sync", "generate", "sync"]


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="runs must be >= 1"):
        measure_latency(lambda p: None, ["a"], runs=0)
    with pytest.raises(ValueError, match="non-empty list"):
        measure_latency(lambda p: None, "a photo", runs=1)


def test_compare_interleaves_and_takes_ratio_of_medians():
    order = []
    clock = FakeClock([
        0, 1, 1, 2,  # warm-up: base, fine-tuned
        10, 12, 12, 15,  # run 0: base 2 s, fine-tuned 3 s
        20, 23, 23, 25,  # run 1: fine-tuned 3 s, base 2 s
        30, 34, 34, 37,  # run 2: base 4 s, fine-tuned 3 s
    ])
    result = compare_latency(lambda p: order.append("base"), lambda p: order.append("tuned"), ["a"], runs=3,
                             warmup=1, clock=clock)
    assert order == ["base", "tuned", "base", "tuned", "tuned", "base", "base", "tuned"]
    assert result["base"]["seconds_per_image_runs"] == [2, 2, 4]
    assert result["finetuned"]["seconds_per_image_runs"] == [3, 3, 3]
    assert result["ratio"] == pytest.approx(3 / 2)
    assert "| base | 2.0000 |" in result["table"] and "**1.500**" in result["table"]
    json.dumps(result)  # JSON-ready


def test_different_schedulers_are_refused():
    class FakePipeline:
        unet = text_encoder = vae = None

        def __init__(self, scheduler):
            self.scheduler = scheduler

        def __call__(self, **kwargs):
            raise AssertionError("must not run")

    class PNDM:
        pass

    class DDIM:
        pass

    with pytest.raises(ValueError, match="different schedulers"):
        compare_latency(FakePipeline(PNDM()), FakePipeline(DDIM()), ["a"], runs=1, warmup=0)


def test_two_random_toy_models_on_the_real_clock():
    base = build_toy_model(sample_size=16, seed=0)
    tuned = build_toy_model(sample_size=16, seed=1)
    result = compare_latency(base, tuned, ["a photo of a circle."], steps=2, runs=2, warmup=1)
    for name in ("base", "finetuned"):
        assert result[name]["runs"] == 2 and result[name]["seconds_per_image"] > 0
    # equal cost is the paper's claim, but a shared CPU makes the ratio noisy: only finite and positive here
    assert math.isfinite(result["ratio"]) and result["ratio"] > 0
    assert result["settings"]["steps"] == 2 and result["settings"]["devices"] == {"base": "cpu", "finetuned": "cpu"}
    assert latency_table(result) == result["table"]


def test_cli_writes_json_and_markdown(tmp_path):
    base = save_toy_model(build_toy_model(sample_size=16, seed=0), tmp_path / "base")
    tuned = build_toy_model(sample_size=16, seed=1).unet
    tuned.save_pretrained(tmp_path / "run" / "unet")  # a bare fine-tuned UNet: put into --base
    out = tmp_path / "latency.json"
    assert cli(["--base", str(base), "--finetuned", str(tmp_path / "run"), "--steps", "1", "--runs", "1",
                "--warmup", "0", "--device", "cpu", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["base"]["runs"] == 1 and written["finetuned_model"] == str(tmp_path / "run")
    assert out.with_suffix(".md").read_text().startswith("| model |")
