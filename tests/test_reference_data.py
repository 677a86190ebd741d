"""data/reference/: the authors' files are carried unmodified (their digests), with the notice their licence asks
for beside them, and nothing in the project reads the workspace's ``../shared`` instead."""

import hashlib
import subprocess
from pathlib import Path

import pytest

from tokencompose.config import REFERENCE_DIR

REPO = Path(__file__).resolve().parents[1]
# the authors' files at github.com/mlpc-ucsd/TokenCompose commit 5633f81, digests taken from that commit
DIGESTS = {
    "coco_obj_comp_5_1k.json": "fdac55817fbab0dc3710e60b82a8b238e41a1ed771660b6050e27ba96dea35cd",
    "ade20k_obj_comp_5_1k.json": "5e30e03d4ce55c2d5bc99e40976ff392c79a8ff5e3f374188b3748da5ad52618",
    "coco_gsam_metadata.jsonl": "6796a8a2b7380973e53e758d6e8bf620a825a918a00a4564e841d7df115f2506",
}


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_the_authors_files_are_carried_unmodified(name):
    assert hashlib.sha256((REFERENCE_DIR / name).read_bytes()).hexdigest() == DIGESTS[name]


def test_the_licence_notice_names_source_licence_and_holders():
    notice = (REFERENCE_DIR / "README.md").read_text()
    for needed in ("github.com/mlpc-ucsd/TokenCompose", "5633f81", "CC BY-NC 4.0",
                   "creativecommons.org/licenses/by-nc/4.0", "unmodified", "Zirui Wang", "Zhuowen Tu",
                   "not under the project's own licence"):
        assert needed in notice, needed
    for name, digest in DIGESTS.items():
        assert f"{digest}  {name}" in notice  # the full digest listed beside each file
    assert (REFERENCE_DIR / "LICENSE-upstream-5633f81.txt").read_text().lstrip().startswith("Apache License")
    assert "data/reference/" in (REPO / "README.md").read_text()  # the project's README says whose folder it is


def test_nothing_in_the_project_reads_the_workspace_folder():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    readers = [name for name in tracked
               if name.endswith((".py", ".ipynb", ".sh", ".toml", ".cfg", ".yml")) or name in ("Makefile", ".ci/run")]
    this = Path(__file__).relative_to(REPO).as_posix()
    offenders = [name for name in readers if name != this
                 and any(s in (REPO / name).read_text(errors="replace") for s in ("../shared", "/work/shared"))]
    assert offenders == []
