"""Provenance: what made a result, so that a result is never read back for another model or setting.

``weights_digest(folder)`` is a SHA-256 over a model folder's weights and configs (``*.safetensors``,
``*.json``, sorted by relative path, each file's path and bytes hashed): a retrained or swapped model gives a
new digest, an unchanged copy elsewhere the same. A result file that stores the digest of the model it
measured can be checked against the folder before it is reused (``benchmarks/toy_base_gates.py``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def weights_digest(folder: str | Path, length: int = 16) -> str:
    """Hex SHA-256 (first ``length`` characters) of every ``*.safetensors`` and ``*.json`` file under
    ``folder`` (path and content); ``FileNotFoundError`` when there is none."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json"))
    if not files:
        raise FileNotFoundError(f"no weights or configs (*.safetensors, *.json) under {folder}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:length]
