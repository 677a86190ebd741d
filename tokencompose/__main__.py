"""Command line: ``python -m tokencompose COMMAND [options]`` (``tokencompose COMMAND --help`` for each).

Each command lives in the module that does the work, as a ``cli(argv) -> int`` function with its own
argparse parser (``evaluate``'s subcommands too); ``dispatch`` is the one dispatcher, used here and by
``evaluate``, and imports a command's module only when that command runs. The set-up step
(``setup-tokenizer``) is the package's own and lives here, not in the core module ``tokens.py``.

Errors: ``main`` is the one place that turns an error the user can fix into one line, ``error: <message>``
on stderr, and exit status 2: a ``cli_args.UserError`` or one of the package's named errors
(``USER_ERRORS``), or an ``OSError`` "File name too long" from a path the user typed. A bad flag value is
stopped earlier by argparse (``cli_args`` types), also with status 2. Ctrl-C prints one line, status 130.
Anything else is a bug and keeps its traceback; ``--debug`` (``python -m tokencompose --debug COMMAND``) or
``TOKENCOMPOSE_DEBUG=1`` shows the traceback of the named errors too.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import logging
import os
import sys
from collections.abc import Mapping

from tokencompose.cli_args import ArgumentParser
from tokencompose.tokens import BPE_FILE, clip_tokenizer, offline_tokenizer_dir

#: command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "setup-tokenizer": ("tokencompose.__main__", "setup_tokenizer_cli",
                        "build the offline CLIP tokenizer files into the cache"),
    "toy-data": ("tokencompose.toy.world", "cli", "write a toy-world dataset (authors' format)"),
    "validate": ("tokencompose.data", "cli", "check a dataset folder and report every problem"),
    "prepare": ("tokencompose.prepare", "cli", "captions + images -> nouns -> Grounded-SAM masks -> dataset"),
    "pretrain-toy": ("tokencompose.toy.pretrain", "cli", "train the toy base model (L_LDM only)"),
    "train": ("tokencompose.__main__", "train_cli", "fine-tune a UNet with L_LDM + L_token + L_pixel"),
    "sample": ("tokencompose.sample", "cli", "generate images from prompts"),
    "evaluate": ("tokencompose.evaluate.cli", "cli", "MultiGen, VISOR, latency, segmentation, FID"),
    "demo": ("tokencompose.toy.demo", "cli", "the main job on the toy preset"),
}


#: the package's named errors a user can fix, as (module, class): ``main`` prints them as one line, exit 2.
#: Named, not imported, so that catching them imports nothing (a class whose module never ran was not raised).
USER_ERRORS: frozenset[tuple[str, str]] = frozenset({
    ("tokencompose.cli_args", "UserError"),
    ("tokencompose.data", "DatasetError"),
    ("tokencompose.train", "RunFolderError"),
    ("tokencompose.models", "WeightsNotFoundError"),
    ("tokencompose.objective", "NonFiniteLossError"),
    ("tokencompose.provenance", "StaleResultError"),
    ("tokencompose.nouns", "TaggerUnavailableError"),
    ("tokencompose.grounding", "ModelLoadError"),
    ("tokencompose.tokens", "PhraseNotFoundError"),
    ("tokencompose.evaluate.fid", "FIDUnavailableError"),
})
DEBUG_ENV = "TOKENCOMPOSE_DEBUG"


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is (a subclass of) one of ``USER_ERRORS``."""
    return any((cls.__module__, cls.__qualname__) in USER_ERRORS for cls in type(error).__mro__)


def usage(prog: str, commands: Mapping[str, tuple[str, str, str]]) -> str:
    """The list of ``commands`` with their one-line help."""
    lines = [f"usage: {prog} [--debug] COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<16} {text}" for name, (_, _, text) in commands.items()]
    return "\n".join(lines)


def dispatch(argv: list[str], commands: Mapping[str, tuple[str, str, str]], prog: str) -> int:
    """Run ``commands[argv[0]]``'s function on the rest of ``argv``; usage on ``-h``; 2 on an unknown name."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog, commands))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in commands:
        close = difflib.get_close_matches(name, list(commands), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"unknown command {name!r}{hint}\n\n{usage(prog, commands)}", file=sys.stderr)
        return 2
    module_name, function_name, _ = commands[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            print(f"command {name!r} is not available in this version yet ({module_name} missing)", file=sys.stderr)
            return 2
        raise
    return int(getattr(module, function_name)(rest) or 0)


def setup_tokenizer_cli(argv: list[str]) -> int:
    """``python -m tokencompose setup-tokenizer [--bpe FILE]``: build the offline tokenizer into the cache."""
    parser = ArgumentParser(prog="tokencompose setup-tokenizer", description=setup_tokenizer_cli.__doc__)
    parser.add_argument("--bpe", help=f"path to {BPE_FILE} (default: installed open_clip/clip, else PyPI)")
    args = parser.parse_args(argv)
    folder = offline_tokenizer_dir(args.bpe)
    ids = clip_tokenizer()("a photo of a cat.")["input_ids"]
    logging.getLogger("tokencompose.tokens").info("offline CLIP tokenizer ready in %s; 'a photo of a cat.' -> %s",
                                                  folder, ids)
    return 0


def train_cli(argv: list[str]) -> int:
    """``python -m tokencompose train [flags]``: the loop's flags (``train.build_parser``) and the toy world's
    scene flags (``toy.world.add_scene_arguments``: ``--toy-scenes``, ``--toy-objects``) and own-sample flags
    (``toy.own_samples.add_own_sample_arguments``: ``--own-samples``). The command line is where the two meet:
    the loop takes its batches and its objective from here and knows no world."""
    from tokencompose import train  # imported when the command runs, as ``dispatch`` does for the others
    from tokencompose.cli_args import UserError
    from tokencompose.toy import own_samples, world

    parser = train.build_parser()
    world.add_scene_arguments(parser)
    own_samples.add_own_sample_arguments(parser)
    args = parser.parse_args(argv)
    try:
        own_batches, own_objective = own_samples.own_samples_from_args(args)
    except ValueError as error:
        raise UserError(f"tokencompose train: {error}") from error
    if own_batches is not None:
        if args.train_data_dir:
            parser.error("--own-samples trains on toy scenes and the model's own samples, not on --train-data-dir")
        return train.run_from_args(args, own_batches, own_objective)
    return train.run_from_args(args, world.scene_batches_from_args(args))


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its module's ``cli`` function; returns the exit status.

    ``--debug`` before or after the command (or ``TOKENCOMPOSE_DEBUG=1``) re-raises the errors that are otherwise
    printed as ``error: <message>`` with status 2 (module docstring). argparse's exits become return values.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    if "--debug" in argv[: argv.index("--") if "--" in argv else len(argv)]:  # before or after the command
        debug, argv = True, [arg for arg in argv if arg != "--debug"]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv:
        print(usage("python -m tokencompose", COMMANDS))
        return 0
    try:
        return dispatch(argv, COMMANDS, "python -m tokencompose")
    except SystemExit as exit_:  # argparse (--help, a bad flag): it has printed its message already
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: the user's choice, not a bug
        if debug:
            raise
        print("interrupted (Ctrl-C). Finished results stay on disk: sample and evaluate skip them when run "
              "again; train continues with --resume latest", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        if is_user_error(error):
            print(f"error: {error}", file=sys.stderr)
            return 2
        if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:
            # a path flag without a cli_args type (a prompt file, a model folder, --resume): the user's to fix
            name = str(error.filename or "")
            print(f"error: a file name is too long for the file system ({name[:80]!r}...: {error.strerror}); "
                  "pass a shorter path", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
