"""How long a newcomer waits for ``make demo``: from a fresh clone, set-up included (issue 16).

Each run clones the repository's committed HEAD into a new folder beside it (as a user's clone), then times ``make setup`` (a new virtual environment and every package) and ``make demo``
separately. The median of the runs goes to ``benchmarks/results/demo_time.md`` with the machine.

    python benchmarks/demo_time.py --runs 3            # the issue's measurement (three fresh clones)
    python benchmarks/demo_time.py --runs 1 --keep     # one, keeping the clone to look at its report
    python benchmarks/demo_time.py --profile           # cProfile of one demo in this checkout (no clone)

The goal (issue 16): <= 8 minutes set-up included, <= 5 minutes for the demo itself, on the 2-core machine.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
GOAL_TOTAL, GOAL_DEMO = 8.0, 5.0


def _timed(command: list[str], cwd: Path, log: Path) -> float:
    began = time.time()
    with open(log, "a") as handle:
        subprocess.run(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, check=True)
    return (time.time() - began) / 60


def one_run(index: int, keep: bool) -> dict[str, float]:
    """Clone HEAD beside the project, ``make setup`` then ``make demo``; minutes of each."""
    clone = REPO_ROOT.parent / f"demo-time-{os.getpid()}-{index}"
    shutil.rmtree(clone, ignore_errors=True)
    log = REPO_ROOT / "outputs" / f"demo_time_{index}.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text("")
    try:
        subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
        setup = _timed(["make", "setup"], clone, log)
        demo = _timed(["make", "demo"], clone, log)
    finally:
        if not keep:
            shutil.rmtree(clone, ignore_errors=True)
    print(f"run {index}: set-up {setup:.1f} min, demo {demo:.1f} min", flush=True)
    return {"setup": setup, "demo": demo, "total": setup + demo}


def profile(top: int = 25) -> str:
    """cProfile of one ``demo`` in this checkout (its venv): the top functions by cumulative time."""
    from tokencompose.toy.demo import cli

    profiler = cProfile.Profile()
    profiler.enable()
    cli(["--out", str(REPO_ROOT / "outputs" / "demo_profile")])
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(top)
    return stream.getvalue()


def report(runs: list[dict[str, float]], commit: str) -> str:
    median = {key: statistics.median(r[key] for r in runs) for key in ("setup", "demo", "total")}
    rows = [f"| {i} | {r['setup']:.1f} | {r['demo']:.1f} | {r['total']:.1f} |" for i, r in enumerate(runs, 1)]
    verdict = (f"goal (<= {GOAL_TOTAL:g} min set-up included, <= {GOAL_DEMO:g} min demo): "
               + ("**met**" if median["total"] <= GOAL_TOTAL and median["demo"] <= GOAL_DEMO else "**not met**"))
    return "\n".join([
        "# `make demo` from a fresh clone", "",
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()} CPU ({os.cpu_count()} cores), "
        f"Python {platform.python_version()}, commit {commit}, by `python benchmarks/demo_time.py --runs {len(runs)}`."
        " Each run: a new clone, `make setup` (new virtual environment, packages from the package index or its "
        "cache), then `make demo`.", "",
        "<!-- readme:begin -->",
        "| run | set-up (min) | demo (min) | total (min) |", "|---|---|---|---|", *rows,
        f"| median | {median['setup']:.1f} | {median['demo']:.1f} | {median['total']:.1f} |", "",
        verdict, "<!-- readme:end -->", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the clones (their outputs/demo)")
    parser.add_argument("--profile", action="store_true", help="profile one demo here instead of timing clones")
    parser.add_argument("--out", default=str(RESULTS / "demo_time.md"))
    args = parser.parse_args(argv)
    if args.profile:
        print(profile())
        return 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    runs = [one_run(i, args.keep) for i in range(1, args.runs + 1)]
    text = report(runs, commit)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
