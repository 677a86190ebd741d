"""Command line: ``python -m tokencompose COMMAND [options]`` (``tokencompose COMMAND --help`` for each).

Each command lives in the module that does the work, as a ``cli(argv) -> int`` function with its own
argparse parser; this file only dispatches, so importing one command never imports the others' weight.
"""

from __future__ import annotations

import importlib
import logging
import sys

#: command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "setup-tokenizer": ("tokencompose.tokens", "cli", "build the offline CLIP tokenizer files into the cache"),
    "toy-data": ("tokencompose.toyworld", "cli", "write a toy-world dataset (authors' format)"),
    "validate": ("tokencompose.data", "cli", "check a dataset folder and report every problem"),
    "prepare": ("tokencompose.prepare", "cli", "captions + images -> nouns -> Grounded-SAM masks -> dataset"),
    "pretrain-toy": ("tokencompose.pretrain", "cli", "train the toy base model (L_LDM only)"),
    "train": ("tokencompose.train", "cli", "fine-tune a UNet with L_LDM + L_token + L_pixel"),
    "sample": ("tokencompose.sample", "cli", "generate images from prompts"),
    "evaluate": ("tokencompose.evaluate.cli", "cli", "MultiGen, VISOR, latency, segmentation"),
    "demo": ("tokencompose.demo", "cli", "the main job on the toy preset"),
}


def _usage() -> str:
    lines = ["usage: python -m tokencompose COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<16} {text}" for name, (_, _, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its module's ``cli`` function; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            print(f"command {name!r} is not available in this version yet ({module_name} missing)", file=sys.stderr)
            return 2
        raise
    return int(getattr(module, function_name)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
