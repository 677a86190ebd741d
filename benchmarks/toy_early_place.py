"""Early-place probe of toy models: does a noun's attention know where its object will be, early in sampling?

For 128 held-out 4-object prompts (seen combinations, one image each, DDIM 25 steps, CFG 3), each noun's
cross-attention map (mid + up, heads and layers averaged) summed over the first 2, 5, 10 and all 25 steps:
its peak share (mass on its top 10% of pixels; a flat map: 0.10), its overlap with the most similar other
noun's map (histogram intersection) and, for the objects the toy detector finds at the end, its density on
the object's final region against elsewhere; split by drawn vs missing nouns, 95% intervals clustered by
prompt (``tokencompose.toy.probes.early_place``).

Models: the shipped base, and with ``--finetune`` the ablation's L_LDM-only and both-losses fine-tunes of one
seed (its cpu preset: 400 steps, batch 16, grounding weights at r = 0.3 of L_LDM, ``ablation.loss_scales``),
trained here. Results are cached under each model's weights digest, so a rerun measures only what changed.

    python benchmarks/toy_early_place.py                       # the base: ~2 CPU minutes
    python benchmarks/toy_early_place.py --finetune --seed 0   # + two fine-tunes (~6 min each on 2 cores)
    python benchmarks/toy_early_place.py --model "L_LDM only=outputs/toy_window_high/ldm_seed0/train"  # any model
    python benchmarks/toy_early_place.py --smoke --out /tmp/x  # tiny sizes (tests)
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tokencompose.config import TOY_BASE_DIR  # noqa: E402
from tokencompose.provenance import weights_digest  # noqa: E402
from tokencompose.results import repository_path  # noqa: E402
from tokencompose.toy.ablation import (  # noqa: E402
    ABLATION_PRESETS,
    AblationSettings,
    finetune,
    loss_scales,
    weights_for_ratio,
)
from tokencompose.toy.probes import early_place, early_place_markdown  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
RATIO = 0.3  # the ablation's measured weight ratio (benchmarks/toy_ablation_notes.md)


def measure(model: Path, args: argparse.Namespace, cache: Path) -> dict:
    """``early_place`` of ``model``, cached by its weights digest and the probe's settings."""
    settings = dict(n=args.n, count=4, unseen=False, seed=1234, steps=args.steps, guidance=3.0)
    key = f"{weights_digest(model)}_{'_'.join(f'{k}{v}' for k, v in settings.items())}"
    path = cache / f"{key}.json"
    if path.is_file():
        return dict(json.loads(path.read_text()), cached=True)
    started = time.perf_counter()
    result = early_place(model, batch_size=32, **settings)
    result["seconds"] = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetune", action="store_true", help="also fine-tune and probe L_LDM only and both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=FOLDER",
                        help="also probe this trained model folder (e.g. a job's train/ of benchmarks/toy_ablation.py)")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "outputs" / "toy_early_place")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: 4 prompts, 10 steps, 2 fine-tune steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.steps = 4, 10
    torch.set_num_threads(min(2, torch.get_num_threads()))
    models = {"base (no fine-tuning)": Path(TOY_BASE_DIR)}
    for item in args.model:
        label, sep, folder = item.rpartition("=")  # a label may hold "=" ("r = 0.3"), a folder name rarely does
        if not sep or not (Path(folder) / "unet").is_dir():
            parser.error(f"--model {item!r}: expected LABEL=FOLDER with a trained model in FOLDER (its unet/)")
        models[label] = Path(folder)
    if args.finetune:
        preset = dict(ABLATION_PRESETS["smoke" if args.smoke else "cpu"])
        scales = loss_scales(TOY_BASE_DIR, batches=1 if args.smoke else 8, batch_size=preset["batch_size"])
        token_weight, pixel_weight = weights_for_ratio(scales, RATIO)
        settings = AblationSettings(steps=preset["steps"], batch_size=preset["batch_size"], token_weight=token_weight,
                                    pixel_weight=pixel_weight)
        for variant, label in (("ldm", "L_LDM only"), ("both", f"+ L_token + L_pixel (r = {RATIO})")):
            folder = args.work / f"{variant}_seed{args.seed}"
            result = finetune(variant, args.seed, settings, folder)
            models[f"{label}, {settings.steps} steps, seed {args.seed}"] = Path(result.output_dir)
    started = time.perf_counter()
    results = {name: measure(path, args, args.work / "cache") for name, path in models.items()}
    minutes = (time.perf_counter() - started) / 60
    cached = sum(bool(r.pop("cached", False)) for r in results.values())
    lines = ["# Early place: does a noun's attention know where its object will be?", "",
             __doc__.split("\n\n")[1].replace("\n", " "), ""]
    for name, result in results.items():
        lines += [f"## {name}: `{repository_path(models[name])}`", "",
                  f"{result['drawn_share'] * 100:.1f}% of the named objects drawn; probe time "
                  f"{result.get('seconds', float('nan')) / 60:.1f} min.", "", early_place_markdown(result), ""]
    lines += [f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} CPU, torch {torch.__version__}, "
              f"{torch.get_num_threads()} torch threads; this invocation {minutes:.1f} min ({cached} of {len(results)} models "
              f"read from the cache; each model's own probe time is above). Produced by "
              f"`{' '.join(['python', 'benchmarks/toy_early_place.py', *map(shlex.quote, (argv if argv is not None else sys.argv[1:]))])}`."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "toy_early_place.md").write_text("\n".join(lines) + "\n")
    (args.out / "toy_early_place.json").write_text(json.dumps(
        {name: dict(result, model=repository_path(models[name])) for name, result in results.items()}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
