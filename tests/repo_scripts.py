"""Load a repository script (``benchmarks/*.py``, ``scripts/*.py``) as a module, so tests can call its functions."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """The script at ``ROOT / relative`` (e.g. ``"benchmarks/toy_ablation.py"``), executed as a fresh module."""
    path = ROOT / relative
    if not path.is_file():
        raise FileNotFoundError(f"no script {path}: was it moved? update the test that loads it")
    spec = importlib.util.spec_from_file_location(path.stem + "_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
