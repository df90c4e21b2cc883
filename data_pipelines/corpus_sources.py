"""Where corpus text comes from: input patterns, mixture weights, file formats and TFDS.

`text_files` turns what this module reads into documents; this module only finds the
inputs and takes the text out of each format. Inputs are a comma-separated string (or a
list) of sources, each one of:

* a local or gs:// path or glob (``corpus/*.txt``, ``gs://bucket/c4/*.json.gz``);
* ``tfds:NAME[/CONFIG][:VERSION]:SPLIT``, a prepared TFDS dataset read from
  ``tfds_data_dir`` (never downloaded: ``tfds build NAME`` prepares it).

A source may end in ``@WEIGHT`` (a positive number) to sample a mixture:
``web/*.jsonl.gz@0.8,books/*.txt@0.2`` draws each next document from web with
probability 0.8 (seeded), until one source runs out (see `text_files.iter_documents`).
Only a final ``@NUMBER`` is a weight (``c@v2.txt`` is a name), and ``:`` is never a
separator, so gs:// URIs and TFDS specs keep theirs. Either every source has a weight or
none does.

Formats, by file name (a ``.gz`` or ``.zst`` suffix is decompressed first):

* ``.jsonl`` / ``.json``: JSON Lines, one object per line; the text is its ``text_field``.
* ``.parquet``: the string column ``text_field``, read in batches of PARQUET_BATCH_ROWS
  rows (never a whole file in memory).
* anything else: plain UTF-8 text.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import importlib
import io
import json
import os
import re
from typing import IO, Iterator, Sequence

from etils import epath

from data_pipelines import files

TFDS_PREFIX = "tfds:"
# NAME[/CONFIG][:VERSION]:SPLIT; a split may itself hold a colon (train[:10%]).
_TFDS_SPEC = re.compile(r"tfds:(?P<name>[^:]+(?::\d+\.\d+\.\d+)?):(?P<split>.+)")
_WEIGHT = re.compile(r"@(?P<weight>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")
JSON_LINES_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
PARQUET_BATCH_ROWS = 1024


@dataclasses.dataclass(frozen=True)
class Source:
    """One input pattern, the inputs it matched (files, or a TFDS spec), and its mixture
    weight (None: the sources are read one after another)."""

    pattern: str
    paths: tuple[str, ...]
    weight: float | None = None


@dataclasses.dataclass(frozen=True)
class Record:
    """One JSON line, Parquet row or TFDS example: its text, or why it has none. `where`
    names it (file:line, file row N, spec example N); `size` is its bytes, for the loss count."""

    where: str
    text: str | None
    problem: str | None = None
    size: int = 0


def _import(module: str, what: str):
    """`module`, or an error naming the package that `what` needs."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise ImportError(f"{what} needs the {package} package: pip install {package} (or pip install -e '.[corpus]')")


def _split_weight(source: str) -> tuple[str, float | None]:
    match = _WEIGHT.search(source)
    if not match:
        return source, None
    weight = float(match.group("weight"))
    if weight <= 0:
        raise ValueError(f"input {source!r} has weight {weight}; a mixture weight must be > 0")
    return source[: match.start()], weight


def _expand_pattern(pattern: str) -> list[str]:
    """Sorted files of a local or gs:// glob, or the TFDS spec itself."""
    if pattern.startswith(TFDS_PREFIX):
        parse_tfds_spec(pattern)
        return [pattern]
    if "://" in pattern:
        parts = pattern.split("/")
        first_wildcard = next((i for i, part in enumerate(parts) if glob.has_magic(part)), None)
        if first_wildcard is None:
            return [pattern] if epath.Path(pattern).is_file() else []
        folder = epath.Path("/".join(parts[:first_wildcard]))
        return sorted(os.fspath(p) for p in folder.glob("/".join(parts[first_wildcard:])))
    return sorted(m for m in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(m))


def resolve_inputs(inputs: str | Sequence[str] | Sequence[Source]) -> tuple[Source, ...]:
    """The sources of a comma-separated string or a list of patterns, in the given order;
    each pattern's matches sorted, an input matched twice kept the first time. A pattern
    matching nothing is an error, so a typo never silently shrinks the corpus. Sources
    resolved before are kept as they are (a glob read again could match files written since)."""
    if not isinstance(inputs, str) and inputs and all(isinstance(source, Source) for source in inputs):
        return tuple(inputs)
    if isinstance(inputs, str):
        inputs = inputs.split(",")
    patterns = [p.strip() for p in inputs if p.strip()]
    if not patterns:
        raise ValueError("no input files given; pass one or more paths or globs, e.g. 'corpus/*.txt'")
    sources, seen = [], set()
    for pattern_and_weight in patterns:
        pattern, weight = _split_weight(pattern_and_weight)
        matches = _expand_pattern(pattern)
        if not matches:
            raise FileNotFoundError(f"input pattern {pattern!r} matches no file; check the path or glob")
        paths = tuple(m for m in matches if m not in seen)
        if weight is not None and not paths:
            raise ValueError(f"mixture source {pattern!r} matches only inputs of an earlier source; give it others")
        seen.update(paths)
        sources.append(Source(pattern, paths, weight))
    weighted = [s.weight is not None for s in sources]
    if any(weighted) and not all(weighted):
        unweighted = [s.pattern for s in sources if s.weight is None]
        raise ValueError(f"inputs {unweighted} have no @WEIGHT while others do; give every source a weight, or none")
    return tuple(sources)


def all_paths(sources: Sequence[Source]) -> list[str]:
    return [path for source in sources for path in source.paths]


def record_format(path: str) -> str | None:
    """How an input holds its text: "tfds", "jsonl", "parquet", or None for plain text
    (by the file name, a .gz / .zst suffix aside)."""
    name = path.lower().removesuffix(".gz").removesuffix(".zst")
    if path.startswith(TFDS_PREFIX):
        return "tfds"
    if name.endswith(JSON_LINES_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def open_bytes(path: str) -> IO[bytes]:
    """The file's bytes, decompressed when its name ends in .gz or .zst (local or gs://)."""
    raw = epath.Path(path).open("rb")
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if path.endswith(".zst"):
        return io.BufferedReader(_ZstdReader(raw, _import("zstandard", f"reading {path}")), buffer_size=1 << 20)
    return raw


class _ZstdReader(io.RawIOBase):
    """The decompressed bytes of a .zst stream of one or more frames. Data that ends inside a
    frame is a zstandard.ZstdError: zstandard's own stream_reader returns what it has, silently."""

    def __init__(self, raw: IO[bytes], zstandard):
        self._raw, self._zstandard = raw, zstandard
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = None  # the decompressor of the frame being read
        self._pending, self._offset = b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._offset == len(self._pending):
            leftover = b""
            if self._frame is not None and self._frame.eof:
                leftover, self._frame = self._frame.unused_data, None
            data = leftover or self._raw.read(1 << 20)
            if not data:
                if self._frame is not None:
                    raise self._zstandard.ZstdError("the data ends inside a frame")
                return 0
            self._frame = self._frame or self._decompressor.decompressobj()
            self._pending, self._offset = self._frame.decompress(data), 0
        size = min(len(buffer), len(self._pending) - self._offset)
        buffer[:size] = self._pending[self._offset : self._offset + size]
        self._offset += size
        return size

    def close(self) -> None:
        self._raw.close()
        super().close()


def _decompression_errors(path: str) -> tuple[type[Exception], ...]:
    if path.endswith(".gz"):
        return (EOFError, gzip.BadGzipFile)
    if path.endswith(".zst"):
        return (_import("zstandard", f"reading {path}").ZstdError,)
    return ()


def iter_raw_lines(path: str) -> Iterator[bytes]:
    """The lines of a file (endings kept); damaged compressed data is named, not a traceback."""
    try:
        with open_bytes(path) as f:
            yield from f
    except _decompression_errors(path) as error:
        raise ValueError(f"{path}: damaged or truncated compressed data ({error}); fetch or compress it anew") from None


def iter_records(path: str, text_field: str, tfds_data_dir: str = "") -> Iterator[Record]:
    """The records of a JSON Lines file, a Parquet file or a TFDS spec (`record_format`)."""
    kind = record_format(path)
    if kind == "jsonl":
        return _json_lines(path, text_field)
    if kind == "parquet":
        return _parquet_rows(path, text_field)
    if kind == "tfds":
        return _tfds_examples(path, text_field, tfds_data_dir)
    raise ValueError(f"{path} is plain text, not records; read it with text_files.iter_lines")


def _json_lines(path: str, text_field: str) -> Iterator[Record]:
    for line_number, raw_line in enumerate(iter_raw_lines(path), start=1):
        if not raw_line.strip():
            continue
        where, size = f"{path}:{line_number}", len(b"".join(raw_line.split()))
        try:
            value = json.loads(raw_line)
        except UnicodeDecodeError as error:
            yield Record(where, None, f"invalid UTF-8 ({error.reason}); re-encode the file to UTF-8", size)
            continue
        except json.JSONDecodeError as error:
            yield Record(where, None, f"not a JSON line ({error.msg}); give one JSON object per line", size)
            continue
        if not isinstance(value, dict):
            yield Record(where, None, f"a JSON {type(value).__name__}, not an object; give one object per line", size)
        elif text_field not in value:
            keys = ", ".join(sorted(value)[:10])
            problem = f"no field {text_field!r} (it has: {keys}); set --config.text_field to the text's field"
            yield Record(where, None, problem, size)
        elif not isinstance(value[text_field], str):
            problem = f"field {text_field!r} is {type(value[text_field]).__name__}, not a string"
            yield Record(where, None, problem, size)
        else:
            yield Record(where, value[text_field], None, size)


def _parquet_rows(path: str, text_field: str) -> Iterator[Record]:
    pa = _import("pyarrow", f"reading {path}")
    pq = _import("pyarrow.parquet", f"reading {path}")
    with epath.Path(path).open("rb") as f:
        parquet = pq.ParquetFile(f)
        schema = parquet.schema_arrow
        if text_field not in schema.names:
            raise ValueError(
                f"{path}: no column {text_field!r} (columns: {', '.join(schema.names)}); "
                "set --config.text_field to the text's column"
            )
        column_type = schema.field(text_field).type
        if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
            raise ValueError(f"{path}: column {text_field!r} holds {column_type}, not strings; name a text column")
        row = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field]):
            for text in batch.column(0).to_pylist():
                where = f"{path}: row {row}"
                row += 1
                if text is None:
                    yield Record(where, None, f"column {text_field!r} is null", 0)
                else:
                    yield Record(where, text)


def parse_tfds_spec(spec: str) -> tuple[str, str]:
    """(NAME[/CONFIG][:VERSION], SPLIT) of 'tfds:NAME[/CONFIG][:VERSION]:SPLIT'."""
    match = _TFDS_SPEC.fullmatch(spec)
    if not match:
        raise ValueError(
            f"input {spec!r}: write a TFDS source as tfds:NAME[/CONFIG][:VERSION]:SPLIT (tfds:c4/en:train)"
        )
    return match.group("name"), match.group("split")


def tfds_builder(spec: str, tfds_data_dir: str):
    """The prepared builder of a TFDS spec; one that is not prepared is an error (we never
    download: corpora are big, and a build belongs in its own step)."""
    import tensorflow_datasets as tfds

    name, split = parse_tfds_spec(spec)
    where = tfds_data_dir or "TFDS's default data_dir"
    try:
        builder = tfds.builder(name, data_dir=tfds_data_dir or None)
    except Exception as error:  # tfds raises DatasetNotFoundError and friends, not one type
        raise ValueError(f"input {spec!r}: no TFDS dataset {name!r} in {where} ({error}); check the name") from None
    if not builder.is_prepared():
        raise ValueError(
            f"input {spec!r}: {name} is not prepared in {where}; run `tfds build {name}` "
            "(with --data_dir) first, or set --config.tfds_data_dir to where it is"
        )
    return builder


def _tfds_examples(spec: str, text_field: str, tfds_data_dir: str) -> Iterator[Record]:
    import tensorflow_datasets as tfds

    builder = tfds_builder(spec, tfds_data_dir)
    _, split = parse_tfds_spec(spec)
    features = builder.info.features
    if text_field not in features:
        raise ValueError(
            f"input {spec!r}: no feature {text_field!r} (features: {', '.join(features)}); "
            "set --config.text_field to the text's feature"
        )
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    for index, example in enumerate(tfds.as_numpy(dataset)):
        value, where = example[text_field], f"{spec} example {index}"
        if not isinstance(value, bytes):
            yield Record(where, None, f"feature {text_field!r} is {type(value).__name__}, not text")
            continue
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as error:
            yield Record(where, None, f"feature {text_field!r} is not UTF-8 ({error.reason})", len(value))
            continue
        yield Record(where, text, None, len(value))


def fingerprints(sources: Sequence[Source], relative_to: str, tfds_data_dir: str = "") -> list[dict]:
    """What identifies each input's content: a local file's path (relative to `relative_to`),
    size and mtime; a gs:// file's size and mtime; a TFDS split's full name and example
    count. A mixture's weight is part of each of its inputs'."""
    result = []
    for source in sources:
        for path in source.paths:
            if path.startswith(TFDS_PREFIX):
                builder = tfds_builder(path, tfds_data_dir)
                _, split = parse_tfds_spec(path)
                examples = builder.info.splits[split].num_examples
                entry = {"path": path, "dataset": builder.info.full_name, "examples": examples}
            elif "://" in path:
                stat = epath.Path(path).stat()
                entry = {"path": path, "bytes": stat.length, "mtime": stat.mtime}
            else:
                entry = files.fingerprints([path], relative_to)[0]
            result.append({**entry, "weight": source.weight} if source.weight is not None else entry)
    return result
