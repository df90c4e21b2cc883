"""Atomic writes, local or on any filesystem epath knows (gs://): a file appears under its
final name complete or not at all, so a crash never leaves half a file behind a name that
a resume, a reader or a user trusts. Every output of electra-jax is written through here.

    with temporary_path(path) as temp: writer_that_wants_a_path(temp)
    with atomic_open(path, "w") as f: f.write(...)
    write_json(path, value); write_text(path, text); write_bytes(path, data); read_json(path)
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator

from etils import epath


@contextlib.contextmanager
def temporary_path(path: str | os.PathLike) -> Iterator[str]:
    """A path beside `path` to write to; renamed to `path` when the block ends without an
    error (the parent folder is created first)."""
    final = epath.Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.parent / (final.name + ".tmp")
    yield os.fspath(temp)
    temp.replace(final)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """`open(path, mode)` ("w" text in UTF-8, or "wb") of a file that appears on close."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r}; atomic_open writes whole files: 'w' or 'wb'")
    with temporary_path(path) as temp:
        with epath.Path(temp).open(mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, value: Any, sort_keys: bool = False) -> None:
    with atomic_open(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=sort_keys)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(epath.Path(path).read_text(encoding="utf-8"))
