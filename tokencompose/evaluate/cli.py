"""``python -m tokencompose evaluate multigen|visor|latency|segmentation|fid [options]``.

Each subcommand writes a JSON file, a markdown table and a figure into ``--out``:

- ``multigen``: ``multigen.json``, ``multigen.md`` (the authors' table: Model, MG_1.., Num_Imgs,
  det_threshold), ``multigen.png`` (MG bars with 95% intervals clustered by prompt; ``--compare`` adds earlier
  runs side by side) and ``examples.png`` (images with their detections drawn);
- ``visor``: ``visor.json``, ``visor.md``, ``examples.png``;
- ``latency`` and ``segmentation``: see ``tokencompose.evaluate.latency`` / ``.segmentation``.

Examples::

    python -m tokencompose evaluate multigen --prompts coco_obj_comp_5_1k.json --model sd14 --out runs/mg_sd14
    python -m tokencompose evaluate multigen --prompts toy --num-prompts 60 --model toy --out runs/mg_toy
    python -m tokencompose evaluate multigen --prompts coco_obj_comp_5_1k.json --images sample_imgs/ --name SD14 --out runs/mg
    python -m tokencompose evaluate visor --model sd14 --limit 500 --out runs/visor_sd14
    accelerate launch -m tokencompose evaluate multigen ...   # prompts split across GPUs
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from tokencompose.__main__ import dispatch
from tokencompose.attend_excite import SAMPLING_METHODS
from tokencompose.cli_args import (
    ArgumentParser,
    UserError,
    device,
    finite_float,
    input_folder,
    non_negative_float,
    non_negative_int,
    output_folder,
    positive_int,
    probability,
    prompt_count,
    read_json_file,
    result_file,
    sampling_steps,
)
from tokencompose.evaluate import multigen, segmentation, visor
from tokencompose.evaluate.detectors import OwlDetector
from tokencompose.heatmaps import PROTOCOLS
from tokencompose.models import Components, WeightsNotFoundError
from tokencompose.provenance import check_folder, check_outputs, record_written, result_and_table
from tokencompose.sample import (
    DTYPES,
    Generator,
    load_model,
    parse_seeds,
    prepare_for_sampling,
    read_prompts,
    sampling_mode_arg,
    sampling_settings,
)
from tokencompose.toy.detector import ToyDetector, ToySegmenter
from tokencompose.toy.world import TOY_CATEGORIES, model_colour_mode, multigen_template, random_toy_prompts

logger = logging.getLogger(__name__)


def _add_common(parser: argparse.ArgumentParser, detector: str, images_per_prompt: int) -> None:
    parser.add_argument("--out", required=True, type=output_folder,
                        help="output folder (images/, detections/, results)")
    parser.add_argument("--overwrite", action="store_true",
                        help="no effect, kept for scripts: the results this project wrote in --out are replaced as "
                             "needed; files it did not write are never replaced")
    parser.add_argument("--model", help="model to sample from: toy, sd14, sd21, a folder or hub id")
    parser.add_argument("--base", help="for a fine-tuned UNet folder: the model it was fine-tuned from")
    parser.add_argument("--images", type=input_folder,
                        help="evaluate images already generated ({index}_{seed}.png) instead")
    parser.add_argument("--name", help="model name in the tables (default: --model or the images folder)")
    parser.add_argument("--detector", default=detector,
                        help=f"owlv2, owlvit, toy, a hub id or a folder (default {detector})")
    parser.add_argument("--threshold", type=probability, default=0.1, help="detection score threshold (0.1)")
    parser.add_argument("--n-images", type=positive_int, default=images_per_prompt,
                        help=f"images a prompt, seeds 0..N-1 (default {images_per_prompt})")
    parser.add_argument("--steps", type=sampling_steps, default=50, help="sampling steps (50)")
    parser.add_argument("--guidance", type=non_negative_float, default=None, help="guidance scale (toy 3.0, SD 7.5)")
    parser.add_argument("--mode", type=sampling_mode_arg, default="fast", metavar="{fast,authors}",
                        help="how --model samples: fast (default: batched, float16 on CUDA, float32 on CPU, SDPA "
                             "attention) or authors (batch 1, float32, as their multigen/gen_image_dist.py)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="images a generation batch (fast mode; default 16 on CUDA, 8 on CPU; authors: 1)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="weights' dtype (fast mode; default float16 on CUDA, float32 on CPU; authors: float32)")
    parser.add_argument("--compile", action="store_true", help="fast mode on CUDA: torch.compile the UNet")
    parser.add_argument("--method", choices=SAMPLING_METHODS, default="plain",
                        help="plain (default) or attend-and-excite (Chefer et al. 2023, the paper's strongest Table 1 "
                             "baseline: latent updates toward each named object's attention; ~3x the sampling time)")
    parser.add_argument("--device", type=device, default="auto",
                        help="auto, cpu, cuda, ... (under accelerate: its device)")
    parser.add_argument("--num-categories", type=positive_int, default=None,
                        help=f"toy world: use the first K of its {len(TOY_CATEGORIES)} categories (as the toy model "
                             "was trained)")
    parser.add_argument("--examples", type=non_negative_int, default=8, help="images drawn in examples.png (0: none)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _device(state: Any, requested: str) -> str:
    if requested != "auto":
        return requested
    return str(getattr(state, "device", "cpu"))


def _toy_categories(num_categories: int | None) -> list:
    return list(TOY_CATEGORIES[:num_categories] if num_categories else TOY_CATEGORIES)


def make_detector(name: str, device: str, num_categories: int | None = None, colour_mode: str = "identity") -> Any:
    """``ToyDetector`` for "toy" (of the toy world ``colour_mode``), else ``OwlDetector.from_pretrained(name)``
    on ``device``."""
    if name == "toy":
        return ToyDetector(_toy_categories(num_categories), colour_mode=colour_mode)
    return OwlDetector.from_pretrained(name, device=device)


#: the files ``evaluate multigen`` / ``visor`` write into ``--out`` themselves (figures; the generated prompt set),
#: beside the result files of ``multigen.RESULT_FILES``
FIGURE_FILES: dict[str, tuple[str, ...]] = {"multigen": ("multigen.png", "examples.png"), "visor": ("examples.png",)}


def _out_files(evaluation: str, prompt_file: Path | None = None) -> tuple[str, ...]:
    """Every file name ``evaluate EVALUATION`` writes into ``--out`` (not counting images/ and detections/)."""
    return (*multigen.RESULT_FILES[evaluation], *FIGURE_FILES[evaluation], *([prompt_file.name] if prompt_file else []))


def _check_out(args: argparse.Namespace, out: Path, names: tuple[str, ...]) -> None:
    """Before anything is read or any model loads: ``--out``'s images and detections, and the files ``names`` it
    will write, hold no file this project did not write (the output-folder rule, ``provenance``)."""
    if not args.images:
        check_folder(out / "images", ("*_*.png",))
    check_folder(out / "detections", ("[0-9]*.json",))
    multigen.check_result_files(out, names)


def make_generate_fn(args: argparse.Namespace, device: str, subjects: dict[str, list[str]] | None = None) -> Any:
    """``sample.Generator`` of ``--model`` in ``--mode`` (``sample.sampling_settings``; its ``provenance`` keys the
    images it makes) and ``--method``, or None. Sets ``args.batch_size`` to the mode's batch when the flag was
    not given. ``subjects``: prompt text -> the objects it names, Attend-and-Excite's subjects."""
    if not args.model:
        return None
    settings = sampling_settings(args.mode, device=device, dtype=args.dtype, batch_size=args.batch_size,
                                 compile_unet=args.compile)
    args.batch_size = settings.batch_size  # the mode's default where --batch-size was not given
    model = load_model(args.model, base=args.base, dtype=settings.dtype, device=settings.device)
    nouns_of = (lambda text: subjects[text]) if subjects is not None else None
    return Generator(prepare_for_sampling(model, settings), steps=args.steps, guidance=args.guidance,
                     mode=settings.mode, method=getattr(args, "method", "plain"), nouns_of=nouns_of)


def _check_source(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks of the common flags that argparse's types cannot make alone."""
    if bool(args.model) == bool(args.images):
        parser.error("pass either --model (generate images) or --images (a folder of generated images)")
    try:  # the authors' mode with --batch-size, --dtype or --compile: refused before any model loads
        sampling_settings(args.mode, device="cpu", dtype=args.dtype, batch_size=args.batch_size,
                          compile_unet=args.compile)
    except ValueError as error:
        parser.error(str(error))
    if args.num_categories is not None and args.num_categories > len(TOY_CATEGORIES):
        parser.error(f"--num-categories must be in 1..{len(TOY_CATEGORIES)} (the toy world's categories), got "
                     f"{args.num_categories}")


def _check_toy_names(args: argparse.Namespace, names: list[str], where: str) -> None:
    """Before any image is made: the toy detector finds only the toy world's categories (``UserError``)."""
    if args.detector != "toy":
        return
    known = [c.name for c in _toy_categories(args.num_categories)]
    unknown = sorted(set(names) - set(known))
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        raise UserError(f"the toy detector knows only the toy world's categories ({', '.join(known)}), but {where} "
                        f"names {shown}; pass toy prompts (--prompts toy / --categories toy) or a real detector "
                        "(--detector owlv2 / owlvit)")


def _generate_fn(args: argparse.Namespace, device: str, subjects: dict[str, list[str]] | None = None) -> Any:
    """``make_generate_fn`` with a model that cannot be loaded as a ``UserError`` (a bad --model / --base)."""
    try:
        return make_generate_fn(args, device, subjects)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(f"cannot load --model {args.model!r}: {error}") from error


def _examples(args: argparse.Namespace, out: Path, images_dir: Path, keys: list[str]) -> None:
    if args.examples <= 0 or not keys:
        return
    detections = multigen.load_detections(out / "detections")
    keys = [k for k in keys if k in detections][:args.examples]
    if keys:
        multigen.example_figure(images_dir, detections, keys, out / "examples.png", threshold=args.threshold)


def multigen_cli(argv: list[str]) -> int:
    """``evaluate multigen``: MultiGen MG1-5 (authors' prompt file, or prompts generated from a category list)."""
    parser = ArgumentParser(prog="tokencompose evaluate multigen", description=multigen_cli.__doc__)
    parser.add_argument("--prompts", required=True,
                        help="a MultiGen prompt file (authors' JSON), or 'coco' / 'toy' / a category list "
                             "file to generate --num-prompts prompts from")
    parser.add_argument("--num-prompts", type=prompt_count, default=100, help="prompts to generate (default 100)")
    parser.add_argument("--num-objects", default=None,
                        help="objects a generated prompt: '5', or a cycled list '2,3,4' (default: 5; toy: 2,3,4)")
    parser.add_argument("--prompt-seed", type=non_negative_int, default=0, help="seed of the prompt generator")
    parser.add_argument("--limit", type=positive_int, default=None, help="score only the first N prompts (quick run)")
    parser.add_argument("--compare", nargs="*", default=[], help="earlier multigen.json files for the figure")
    _add_common(parser, detector="owlv2", images_per_prompt=10)
    args = parser.parse_args(argv)
    _check_source(parser, args)
    out = Path(args.out)
    source = Path(args.prompts)
    generated_prompts = out / "prompts.json" if source.suffix != ".json" else None
    _check_out(args, out, _out_files("multigen", generated_prompts))
    if source.suffix.lower() == ".json" and not source.is_file():
        parser.error(f"prompt file {source} not found (the authors' files: coco_obj_comp_5_1k.json, "
                     "ade20k_obj_comp_5_1k.json, are in data/reference/ of a clone of this repository)")
    counts_text = args.num_objects if args.num_objects is not None else "2,3,4" if args.prompts == "toy" else "5"
    try:
        counts = [positive_int(k) for k in counts_text.split(",")]
    except argparse.ArgumentTypeError:
        parser.error(f"--num-objects must be whole numbers >= 1 separated by commas, e.g. 2,3,4; got {counts_text!r}")
    earlier = [read_json_file(path, "--compare file") for path in args.compare]  # now, not after the images
    colour_mode = model_colour_mode(args.model)
    prompt_file = None
    try:
        if multigen.is_prompt_set(source):  # by suffix (any case) or content, not a category list
            read_json_file(source, "MultiGen prompt file")  # a malformed file is named with its line
            prompts = multigen.load_prompts(source)
        else:
            toy = args.prompts == "toy"
            categories = ([c.name for c in _toy_categories(args.num_categories)] if toy
                          else multigen.load_categories(args.prompts))
            template = multigen_template(colour_mode) if toy else "authors"
            prompts = multigen.make_prompts(categories, args.num_prompts, counts, seed=args.prompt_seed,
                                            template=template)
            prompt_file = out / "prompts.json"
            if prompt_file.is_file() and multigen.load_prompts(prompt_file) != prompts:
                parser.error(f"{prompt_file} holds other prompts than this command makes; use another --out or "
                             "pass --prompts with that file to resume it")
    except (ValueError, FileNotFoundError) as error:
        if isinstance(error, UserError):
            raise
        raise UserError(f"--prompts {args.prompts!r}: {error}") from error
    used = prompts[:args.limit] if args.limit else prompts
    _check_toy_names(args, [name for prompt in used for name in prompt.objects], f"--prompts {args.prompts!r}")
    state = multigen.process_state()
    device = _device(state, args.device)
    # model and detector before --out exists: one that cannot load (offline, a bad path) leaves nothing behind
    generate_fn = _generate_fn(args, device, {p.text: list(p.objects) for p in used})
    detector = make_detector(args.detector, device, args.num_categories, colour_mode)
    out.mkdir(parents=True, exist_ok=True)
    if state.is_main_process:  # checked above: absent or this project's
        record_written(out, dict.fromkeys(_out_files("multigen", prompt_file)))
    if prompt_file is not None:
        multigen.save_prompts(prompts, prompt_file)
    prompts = used
    name = args.name or args.model or Path(args.images).name
    result = multigen.run_multigen(prompts, detector, out, generate_fn=generate_fn,
                                   images_dir=args.images, images_per_prompt=args.n_images, model_name=name,
                                   threshold=args.threshold, generate_batch_size=args.batch_size or 1,  # None: --images, nothing generated
                                   progress=not args.quiet, state=state)
    if state.is_main_process:
        results = [*earlier, result]
        (out / "multigen.md").write_text(multigen.multigen_table(results) + "\n", encoding="utf-8")
        multigen.plot_multigen(results, out / "multigen.png")
        images_dir = Path(args.images) if args.images else out / "images"
        _examples(args, out, images_dir, [f"{i}_0" for i in range(len(prompts))])
        print(multigen.multigen_table(results))
    return 0


def visor_cli(argv: list[str]) -> int:
    """``evaluate visor``: VISOR object accuracy (both objects of "a A <relation> a B" detected)."""
    parser = ArgumentParser(prog="tokencompose evaluate visor", description=visor_cli.__doc__)
    parser.add_argument("--categories", default="coco", help="coco (VISOR's), toy, or a file of names")
    parser.add_argument("--limit", type=positive_int, default=None, help="score a random subset of N prompts")
    parser.add_argument("--sample-seed", type=non_negative_int, default=0, help="seed of the --limit subset")
    _add_common(parser, detector="owlvit", images_per_prompt=4)
    args = parser.parse_args(argv)
    _check_source(parser, args)
    out = Path(args.out)
    _check_out(args, out, _out_files("visor"))
    try:
        categories = ([c.name for c in _toy_categories(args.num_categories)] if args.categories == "toy"
                      else multigen.load_categories(args.categories))
        full = len(visor.visor_prompts(categories))
    except (ValueError, FileNotFoundError) as error:
        if isinstance(error, UserError):
            raise
        raise UserError(f"--categories {args.categories!r}: {error}") from error
    _check_toy_names(args, categories, f"--categories {args.categories!r}")
    prompts = visor.visor_prompts(categories, limit=args.limit, seed=args.sample_seed)
    note = (f"random {len(prompts)} of {full} prompts (seed {args.sample_seed})" if len(prompts) < full
            else f"all {full} prompts")
    state = multigen.process_state()
    device = _device(state, args.device)
    subjects = {p["text"]: [p["obj_1_attributes"][0], p["obj_2_attributes"][0]] for p in prompts}
    generate_fn = _generate_fn(args, device, subjects)  # before --out exists, as in multigen_cli
    detector = make_detector(args.detector, device, args.num_categories, model_colour_mode(args.model))
    out.mkdir(parents=True, exist_ok=True)
    if state.is_main_process:  # checked above: absent or this project's
        record_written(out, dict.fromkeys(_out_files("visor")))
    name = args.name or args.model or Path(args.images).name
    result = visor.run_visor(prompts, detector, out, generate_fn=generate_fn,
                             images_dir=args.images, images_per_prompt=args.n_images, model_name=name,
                             threshold=args.threshold, subset_note=note, generate_batch_size=args.batch_size or 1,  # None: --images, nothing generated
                             progress=not args.quiet, state=state)
    if state.is_main_process:
        images_dir = Path(args.images) if args.images else out / "images"
        _examples(args, out, images_dir, [f"{p['unique_id']}_0" for p in prompts])
        print(visor.visor_table([result]))
    return 0


def _is_pixel_space(model: Any) -> bool:
    return isinstance(model, Components) and model.vae is None


def segmentation_cli(argv: list[str]) -> int:
    """``python -m tokencompose evaluate segmentation``: attention heat maps vs masks of generated images (mIoU)."""
    parser = ArgumentParser(prog="tokencompose evaluate segmentation", description=segmentation_cli.__doc__)
    parser.add_argument("--model", default="toy", help="toy, sd14, sd21, a folder or hub id (sample.load_model)")
    parser.add_argument("--base", default=None, help="the base model of a bare fine-tuned UNet folder")
    parser.add_argument("--prompts", default=None, help="file or text; toy default: --n-prompts random scenes")
    parser.add_argument("--n-prompts", type=prompt_count, default=20, help="toy: random 2-3 object prompts to draw")
    parser.add_argument("--prompt-seed", type=non_negative_int, default=0, help="toy: seed of the random prompts")
    parser.add_argument("--seeds", default="0", help="seeds of every prompt, e.g. 0-4")
    parser.add_argument("--masks", type=input_folder, default=None, help="SD: folder of {prompt_index}_{seed}/mask_{noun}.png")
    parser.add_argument("--threshold", type=probability, default=segmentation.DEFAULT_THRESHOLD)
    parser.add_argument("--protocol", choices=PROTOCOLS, default=segmentation.DEFAULT_PROTOCOL,
                        help="heat maps as DAAM's code makes them (daam: down + up layers, each head upsampled and "
                             "clamped, scored at image size; the default) or the earlier variant (layer-mean: mid + "
                             "up layers, heads then layers averaged, scored at latent size)")
    parser.add_argument("--steps", type=sampling_steps, default=50)
    parser.add_argument("--guidance", type=finite_float, default=None)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--interval", choices=["normal", "bootstrap"], default="normal")
    parser.add_argument("--device", type=device, default="auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--out", type=result_file, default=None,
                        help="write the result as JSON here (and a .md table beside it)")
    args = parser.parse_args(argv)
    written = result_and_table(args.out)
    if args.out:  # the output-folder rule: both names absent or this project's, before any model loads
        check_outputs(Path(args.out).parent, written)
    try:
        model = load_model(args.model, base=args.base, dtype=DTYPES[args.dtype], device=args.device)
        seeds = parse_seeds(args.seeds)
        if args.prompts is not None:
            prompts = read_prompts(args.prompts)
        else:
            prompts = random_toy_prompts(args.n_prompts, seed=args.prompt_seed)
        # reference masks: the folder given, else (a toy model) the toy world's colour segmentation
        reference = args.masks or (ToySegmenter.for_model(args.model) if _is_pixel_space(model) else None)
        result = segmentation.segmentation_transfer(model, prompts, seeds, reference=reference, steps=args.steps,
                                       guidance=args.guidance, threshold=args.threshold, batch_size=args.batch_size,
                                       interval=args.interval, protocol=args.protocol)
    except (ValueError, FileNotFoundError, WeightsNotFoundError) as error:
        parser.error(str(error))
    table = segmentation.segmentation_table(result)
    logger.info("segmentation transfer of %s:\n%s", args.model, table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        record_written(out.parent, dict.fromkeys(written))
        out.write_text(json.dumps(dict(result, model=str(args.model), prompts=prompts), indent=1))
        out.with_suffix(".md").write_text(table + "\n")
    if result["interval"] is None:  # written (the missing counts say why), but not a score: say so in the status
        logger.error("nothing was scored: no generated image had a reference mask for its nouns (%d missing); "
                     "more --steps or other prompts give the model a chance to draw the objects", result["missing"])
        return 1
    return 0

#: evaluation -> (module, function, one-line help), run by the package's one dispatcher
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "multigen": ("tokencompose.evaluate.cli", "multigen_cli", "MultiGen MG1-5 (the paper's composition metric)"),
    "visor": ("tokencompose.evaluate.cli", "visor_cli", "VISOR object accuracy (both objects detected)"),
    "latency": ("tokencompose.evaluate.latency", "cli", "seconds an image, fine-tuned vs base"),
    "segmentation": ("tokencompose.evaluate.cli", "segmentation_cli", "segmentation transfer of the attention maps"),
    "fid": ("tokencompose.evaluate.fid", "cli", "FID against a folder of reference images"),
}


def cli(argv: list[str]) -> int:
    """Dispatch ``evaluate SUBCOMMAND [options]`` (``__main__.dispatch``)."""
    return dispatch(list(argv), SUBCOMMANDS, "python -m tokencompose evaluate")
