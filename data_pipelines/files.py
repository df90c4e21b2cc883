"""Atomic writes, local or on any filesystem epath knows (gs://): a file appears under its
final name complete or not at all, so a crash never leaves half a file behind a name that
a resume, a reader or a user trusts. Every output of electra-jax is written through here.

    with temporary_path(path) as temp: writer_that_wants_a_path(temp)
    with atomic_open(path, "w") as f: f.write(...)
    write_json(path, value); write_text(path, text); write_bytes(path, data); read_json(path)

Also the guards of everything that removes or reuses outputs: `check_spares_inputs` before
any removal, `move_aside` instead of deleting, and `fingerprints` / `sha256` of the inputs
a cached output was made from.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import itertools
import json
import os
import time
from typing import Any, Iterator, Mapping, Sequence

from etils import epath


@contextlib.contextmanager
def temporary_path(path: str | os.PathLike) -> Iterator[str]:
    """A path beside `path` to write to; renamed to `path` when the block ends without an
    error (the parent folder is created first). A directory already at `path` is moved
    aside, and deleted only once the new one is in its place."""
    final = epath.Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.parent / (final.name + ".tmp")
    old = final.parent / (final.name + ".old")
    if old.exists():
        raise FileExistsError(f"{old} is left from a replacement of {final} that did not finish; move or delete it")
    yield os.fspath(temp)
    if final.is_dir():
        final.rename(old)
        temp.replace(final)
        old.rmtree()
    else:
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


def comparable(path: str | os.PathLike) -> str:
    """`path` as compared for overlap: absolute with links resolved; a URL (gs://) as written."""
    text = os.fspath(path)
    return text.rstrip("/") if "://" in text else os.path.realpath(text)


def _fixed_part(pattern: str) -> str:
    """The folder a glob can only match inside: the part before its first wildcard."""
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if glob.has_magic(part):
            return "/".join(parts[:i]) or "."
    return pattern


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def check_spares_inputs(removed: Sequence[str], inputs: Mapping[str, str | Sequence[str]], fix: str) -> None:
    """Raises before anything is removed when a path in `removed` equals, contains or lies
    inside one of `inputs` ({what it is, e.g. a config key: path, glob, or a list of them}),
    naming both and `fix`. Globs are compared by their folder before the first wildcard."""
    for target in removed:
        target_path = comparable(target)
        for what, paths in inputs.items():
            for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths or ():
                if not path:
                    continue
                input_path = comparable(_fixed_part(os.fspath(path)))
                if _inside(input_path, target_path) or _inside(target_path, input_path):
                    relation = (
                        "is"
                        if input_path == target_path
                        else "holds"
                        if _inside(input_path, target_path)
                        else "lies inside"
                    )
                    raise ValueError(f"refusing to remove {target}: it {relation} {what} ({path}), an input. {fix}")


def move_aside(root: str | os.PathLike, patterns: Sequence[str]) -> str | None:
    """Moves what `patterns` (globs) match in `root` into ROOT/replaced-<time>/, never deleting
    or overwriting; returns that folder, or None when nothing matched."""
    matches = [path for pattern in patterns for path in sorted(epath.Path(root).glob(pattern))]
    if not matches:
        return None
    name = time.strftime("replaced-%Y%m%d-%H%M%S")
    aside = epath.Path(root) / name
    for n in itertools.count(1):  # never mix two previous outputs in one folder
        if not aside.exists():
            break
        aside = epath.Path(root) / f"{name}-{n}"
    aside.mkdir(parents=True)
    for path in matches:
        path.rename(aside / path.name)
    return os.fspath(aside)


def fingerprints(paths: Sequence[str], relative_to: str) -> list[dict]:
    """Path (relative to `relative_to`, so that a folder holding both can move), size and
    mtime of each file: an edit in place, or a copy that did not keep the mtime, shows."""
    return [
        {"path": os.path.relpath(p, relative_to), "bytes": os.path.getsize(p), "mtime_ns": os.stat(p).st_mtime_ns}
        for p in paths
    ]


def changed_fingerprints(previous: Sequence[dict], current: Sequence[dict]) -> list[str]:
    """The paths whose fingerprint differs, is new or is gone."""
    before = {f["path"]: f for f in previous}
    now = {f["path"]: f for f in current}
    return sorted(path for path in before.keys() | now.keys() if before.get(path) != now.get(path))


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with epath.Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_undecodable_line(path: str) -> tuple[int, int] | None:
    """(line, byte offset in the file) of the first bytes of `path` that are not UTF-8."""
    offset = 0
    with epath.Path(path).open("rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return number, offset + error.start
            offset += len(line)
    return None


def utf8_lines(f, path: str) -> Iterator[str]:
    """The lines of `f`, `path` opened as UTF-8 text; bytes that are not UTF-8 are an error
    naming the file, the line and the fix (the decoder's own message has neither: it counts
    bytes of a read-ahead buffer)."""
    try:
        yield from f
    except UnicodeDecodeError as error:
        found = _first_undecodable_line(path)
        where = f"{path}:{found[0]}: byte {found[1]}" if found else f"{path}: {error.reason}"
        raise ValueError(
            f"{where} is not UTF-8; re-encode the file as UTF-8, e.g. `iconv -f cp1252 -t utf-8 {path} > NEW_FILE` "
            "for a Windows (cp1252) file"
        ) from None


def csv_records(f, path: str, **reader_args) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of every record of the open CSV/TSV file `f` (`reader_args` as
    csv.reader takes them). A field may be of any length: Python's default limit of 128 KiB
    would refuse a long document. A malformed record, or bytes that are not UTF-8, are an
    error naming `path` and line."""
    csv.field_size_limit(2**31 - 1)  # the largest the C reader accepts on every platform
    reader = csv.reader(utf8_lines(f, path), **reader_args)
    line = 0
    while True:
        start = line + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ValueError(f"{path}:{reader.line_num}: not a valid CSV/TSV record ({error})") from None
        line = reader.line_num
        yield start, fields
