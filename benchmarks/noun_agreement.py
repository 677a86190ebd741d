"""How often our offline tagger's noun phrases agree with the ones flair gave the authors.

The reference is the authors' training metadata (4526 COCO captions, each with the noun phrases that
flair's ``flair/pos-english`` and their chunking rule produced), kept beside the repository at
``data/reference/coco_gsam_metadata.jsonl``. For each caption we compare phrase
sets (exact, case-sensitive strings) and micro-average precision, recall and F1 over all captions.

usage: python benchmarks/noun_agreement.py [--tagger perceptron] [--limit N] [--examples 8]
Prints a table and writes benchmarks/results/noun_agreement.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

from tokencompose.nouns import Agreement, get_tagger, phrase_agreement, read_reference_phrases

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = REPO_ROOT / "data" / "reference" / "coco_gsam_metadata.jsonl"
OUTPUT = REPO_ROOT / "benchmarks" / "results" / "noun_agreement.md"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _machine() -> str:
    return (
        f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}, nltk {_version('nltk')}, textblob-aptagger {_version('textblob-aptagger')}"
    )


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(
        f"| {name:<{width}} | {value} |"
        for name, value in [("measure", "value"), ("-" * width, "---")] + rows
    )


def _rows(agreement: Agreement, load_seconds: float, n_reference: int, n_ours: int) -> list[tuple[str, str]]:
    return [
        ("captions", f"{agreement.n_captions}"),
        ("reference phrases (flair)", f"{n_reference}"),
        ("our phrases", f"{n_ours}"),
        ("true positives", f"{agreement.true_positives}"),
        ("false positives (ours only)", f"{agreement.false_positives}"),
        ("false negatives (theirs only)", f"{agreement.false_negatives}"),
        ("precision", f"{agreement.precision:.4f}"),
        ("recall", f"{agreement.recall:.4f}"),
        ("F1", f"{agreement.f1:.4f}"),
        ("captions with identical phrase sets", f"{agreement.exact_captions / agreement.n_captions:.1%}"),
        ("tagger load time, first call in the process (s)", f"{load_seconds:.2f}"),
        ("tokenise + tag + chunk time (s)", f"{agreement.seconds:.2f}"),
        ("captions per second", f"{agreement.n_captions / agreement.seconds:.0f}"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tagger", default="perceptron", help="tagger name (perceptron, flair, auto)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N captions")
    parser.add_argument("--examples", type=int, default=8, help="example disagreements in the report")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="authors' metadata.jsonl")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="markdown report to write")
    args = parser.parse_args(argv)

    if not args.reference.is_file():
        print(
            f"error: reference file {args.reference} not found. It is the authors' coco_gsam_metadata.jsonl "
            "(github.com/mlpc-ucsd/TokenCompose), carried at data/reference/ in this repository; "
            "pass another copy with --reference PATH.",
            file=sys.stderr,
        )
        return 2

    examples = read_reference_phrases(args.reference, limit=args.limit)
    started = time.perf_counter()
    tagger = get_tagger(args.tagger)
    load_seconds = time.perf_counter() - started
    agreement = phrase_agreement(examples, tagger=tagger)

    n_reference = sum(len(set(phrases)) for _, phrases in examples)
    n_ours = agreement.true_positives + agreement.false_positives
    rows = _rows(agreement, load_seconds, n_reference, n_ours)
    table = _table(rows)
    print(table)

    missing = Counter(phrase for d in agreement.disagreements for phrase in d.missing)
    extra = Counter(phrase for d in agreement.disagreements for phrase in d.extra)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Noun-phrase agreement with the authors' flair phrases",
        "",
        f"`python benchmarks/noun_agreement.py --tagger {args.tagger}"
        + (f" --limit {args.limit}" if args.limit else "")
        + "`",
        "",
        f"- date: {date}",
        f"- machine: {_machine()}",
        f"- tagger: {args.tagger} ({tagger!r})",
        f"- reference: `{args.reference.name}`, the authors' COCO training captions with the phrases flair "
        "(`flair/pos-english`) and their chunking gave; comparison of phrase sets per caption, exact "
        "case-sensitive strings, micro-averaged",
        "",
        table,
        "",
        "## Most frequent differences",
        "",
        "| theirs only (missed) | count | ours only (extra) | count |",
        "|---|---|---|---|",
    ]
    for (miss, miss_count), (more, more_count) in zip(
        missing.most_common(10), extra.most_common(10), strict=False
    ):
        lines.append(f"| {miss} | {miss_count} | {more} | {more_count} |")
    lines += [
        "",
        f"## Example disagreements (the first {args.examples} in file order)",
        "",
        "| caption | flair (authors) | ours |",
        "|---|---|---|",
    ]
    for disagreement in agreement.disagreements[: args.examples]:
        caption = disagreement.caption.strip().replace("|", "\\|")
        theirs = sorted(disagreement.theirs, key=disagreement.caption.find)  # their list is in set order
        lines.append(f"| {caption} | {', '.join(theirs)} | {', '.join(disagreement.ours)} |")
    lines.append("")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
