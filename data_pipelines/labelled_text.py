"""Labelled texts in CSV, TSV or JSONL files: the examples of `classify`.

CSV and TSV files need a header row naming the columns; JSONL files hold one JSON object
per line. The columns are `text_column`, optionally `text_pair_column` (sentence pairs) and
`label_column`; labels are strings (or JSON numbers / bools, read as their text), stripped
of surrounding whitespace, with numbers spelled one way ("1", "1 " and 1.0 are one class).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Iterator, Optional

from absl import logging

from data_pipelines import files

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclasses.dataclass(frozen=True)
class Example:
    text: str
    text_pair: Optional[str]
    label: Optional[str]  # None in an unlabelled test file
    line: int  # 1-based line of the row in its file


def _file_format(path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        raise ValueError(f"{path}: unknown extension {extension!r}; use one of {sorted(FORMATS)}")
    return FORMATS[extension]


def _rows(path: str) -> Iterator[tuple[int, dict]]:
    """(line, {column: value}) of every data row of a CSV / TSV (header) / JSONL file."""
    form = _file_format(path)
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a byte-order mark is not a column name
        if form == "jsonl":
            for line_number, line in enumerate(files.utf8_lines(f, path), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(
                        f"{path}:{line_number}: not valid JSON ({e}); a .jsonl file holds one JSON object per line"
                    ) from e
                if not isinstance(row, dict):
                    raise ValueError(
                        f"{path}:{line_number}: a JSON {type(row).__name__}, not an object with named columns"
                    )
                yield line_number, row
            return
        # TSV: fields are literal (no quoting), as GLUE's files; CSV: standard quoting.
        reader_args = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if form == "tsv" else {}
        records = files.csv_records(f, path, **reader_args)
        _, header = next(records, (0, None))
        if header is None:
            return
        for start, fields in records:
            if not fields:
                continue
            if len(fields) != len(header):
                raise ValueError(
                    f"{path}:{start}: {len(fields)} fields but the header names "
                    f"{len(header)} ({header}); quote fields that contain the "
                    "delimiter"
                )
            yield start, dict(zip(header, fields))


def _value(row: dict, column: str, path: str, line: int, text: bool = False) -> str:
    """The row's `column` as a string: a text must be a string; a label may also be a JSON
    number or bool (read as its text), never a list or an object, which would become a
    class of their own."""
    value = row.get(column)
    if value is None:
        raise ValueError(
            f"{path}:{line}: the row has no {column!r} value (columns: "
            f"{sorted(k for k in row if k is not None)}); fill it in, or name the "
            "right column with --config.text_column / text_pair_column / label_column"
        )
    allowed = (str,) if text else (str, int, float, bool)
    if not isinstance(value, allowed):
        wanted = "a string" if text else "a string, number or bool"
        raise ValueError(f"{path}:{line}: {column!r} is the JSON {json.dumps(value)[:80]}; it must be {wanted}")
    if isinstance(value, str) and not value.strip():  # an empty text trains on nothing; an empty label is a class ''
        raise ValueError(
            f"{path}:{line}: the {column!r} value is empty or only whitespace; fill it in, or drop the row"
        )
    return value if isinstance(value, str) else json.dumps(value)


def normalize_label(value: str) -> str:
    """A label as a class name: surrounding whitespace dropped and numbers spelled one way
    ("1", "1 ", "1.0" -> "1"), so that how a file writes a label never splits a class."""
    label = value.strip()
    try:
        number = float(label)
    except ValueError:
        return label
    return str(int(number)) if number.is_integer() else str(number)


def read_examples(path: str, config, labelled: bool = True) -> list[Example]:
    """Every row of `path`; a missing file, an empty one or a row without a needed value
    (empty or whitespace-only counts as missing) is an error naming the file and line; with
    `labelled=False` a row may lack its label. Labels are normalised (`normalize_label`), with a
    warning where two spellings in the file became one class."""
    _file_format(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; check --config.train_file/dev_file/test_file")
    examples, spellings = [], {}
    for line, row in _rows(path):
        text = _value(row, config.text_column, path, line, text=True)
        text_pair = _value(row, config.text_pair_column, path, line, text=True) if config.text_pair_column else None
        raw_label = row.get(config.label_column)
        label = None
        if labelled or (raw_label is not None and str(raw_label).strip()):
            raw = _value(row, config.label_column, path, line)
            label = normalize_label(raw)
            spellings.setdefault(label, set()).add(raw)
        examples.append(Example(text, text_pair, label, line))
    for label, raw in sorted(spellings.items()):
        if len(raw) > 1:
            logging.warning("%s: labels %s are read as one class %r", path, sorted(raw), label)
    if not examples:
        raise ValueError(
            f"{path} holds no examples; it needs a header row and at least one row "
            f"with a {config.text_column!r} column (.jsonl: one JSON object per line)"
        )
    return examples
