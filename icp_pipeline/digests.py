"""Digests of what decides a step's output: when one changes, the step's kept work is done again."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path


def code_digest(sources: Iterable[Path], libraries: Iterable[str], prefix: str = "") -> str:
    """sha256 of `prefix`, the source files' bytes and the installed versions of the libraries."""
    digest = hashlib.sha256(prefix.encode())
    for source in sources:
        digest.update(source.read_bytes())
    for library in libraries:
        digest.update(f"{library}={metadata.version(library)}".encode())
    return digest.hexdigest()
