"""GLUE readers: the nine tasks from TFDS when it is prepared, else from GLUE's TSV folders.

    examples = load_glue("mrpc", "dev", data_dir="../shared/data/glue")
    examples[0]  # GlueExample(guid='dev-0', idx=0, text_a='He said ...', text_b='"The ...', label=1)

Both sources give the same list of `GlueExample`s: `idx` is the row number of the split
(or the file's index column where it has one, e.g. on test files), labels are ints indexing
`LABELS[task]` (the TFDS ClassLabel order), a float for STS-B, and None on test splits.

Splits: "train", "dev", "test"; MNLI has "train", "dev_matched", "dev_mismatched",
"test_matched", "test_mismatched". "ax", the diagnostic set, has "test" only.

TSV layout (`data_dir/<Folder>/<file>`, as GLUE's download script writes it) is read with
QUOTE_NONE (sentences contain bare double quotes) and utf-8-sig (MRPC's header has a BOM).
CoLA train/dev have no header. MRPC train/dev are built from `msr_paraphrase_train.txt`
and `dev_ids.tsv` when `train.tsv`/`dev.tsv` are absent (the split GLUE's script makes).
A row with the wrong number of columns or an unknown label is an error naming file and line.
"""

import csv
import dataclasses
import math
import os
from typing import Iterator

from data_pipelines import files

SOURCES = ("auto", "tfds", "tsv")


@dataclasses.dataclass(frozen=True)
class GlueExample:
    guid: str  # "<split>-<idx>"
    idx: int
    text_a: str
    text_b: str | None
    label: int | float | None  # class index, STS-B score, or None on test


@dataclasses.dataclass(frozen=True)
class TsvLayout:
    """Where one split lives in a GLUE task folder and which columns hold what."""

    file_name: str
    has_header: bool
    num_columns: int
    text_a: int
    text_b: int | None = None
    label: int | None = None
    idx: int | None = None  # index column; None: the data row number


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    folder: str
    labels: tuple[str, ...] | None  # None: regression (STS-B)
    tfds_text_a: str
    tfds_text_b: str | None
    layouts: dict[str, TsvLayout]  # split -> layout


def _pair_task(folder, labels, tfds_a, tfds_b, train_file="train.tsv"):
    """Tasks whose files are `index, text_a, text_b, label` (QNLI, RTE, WNLI)."""
    return TaskSpec(
        folder,
        labels,
        tfds_a,
        tfds_b,
        {
            "train": TsvLayout(train_file, True, 4, text_a=1, text_b=2, label=3, idx=0),
            "dev": TsvLayout("dev.tsv", True, 4, text_a=1, text_b=2, label=3, idx=0),
            "test": TsvLayout("test.tsv", True, 3, text_a=1, text_b=2, idx=0),
        },
    )


_BINARY = ("0", "1")
SCORE_RANGE = (0.0, 5.0)  # STS-B's similarity scale, the one regression task
_NLI_2 = ("entailment", "not_entailment")
TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec(
        "CoLA",
        _BINARY,
        "sentence",
        None,
        {
            "train": TsvLayout("train.tsv", False, 4, text_a=3, label=1),
            "dev": TsvLayout("dev.tsv", False, 4, text_a=3, label=1),
            "test": TsvLayout("test.tsv", True, 2, text_a=1, idx=0),
        },
    ),
    "sst2": TaskSpec(
        "SST-2",
        _BINARY,
        "sentence",
        None,
        {
            "train": TsvLayout("train.tsv", True, 2, text_a=0, label=1),
            "dev": TsvLayout("dev.tsv", True, 2, text_a=0, label=1),
            "test": TsvLayout("test.tsv", True, 2, text_a=1, idx=0),
        },
    ),
    "mrpc": TaskSpec(
        "MRPC",
        _BINARY,
        "sentence1",
        "sentence2",
        {
            "train": TsvLayout("train.tsv", True, 5, text_a=3, text_b=4, label=0),
            "dev": TsvLayout("dev.tsv", True, 5, text_a=3, text_b=4, label=0),
            "test": TsvLayout("test.tsv", True, 5, text_a=3, text_b=4, idx=0),
        },
    ),
    "qqp": TaskSpec(
        "QQP",
        _BINARY,
        "question1",
        "question2",
        {
            "train": TsvLayout("train.tsv", True, 6, text_a=3, text_b=4, label=5),
            "dev": TsvLayout("dev.tsv", True, 6, text_a=3, text_b=4, label=5),
            "test": TsvLayout("test.tsv", True, 3, text_a=1, text_b=2, idx=0),
        },
    ),
    "stsb": TaskSpec(
        "STS-B",
        None,
        "sentence1",
        "sentence2",
        {
            "train": TsvLayout("train.tsv", True, 10, text_a=7, text_b=8, label=9, idx=0),
            "dev": TsvLayout("dev.tsv", True, 10, text_a=7, text_b=8, label=9, idx=0),
            "test": TsvLayout("test.tsv", True, 9, text_a=7, text_b=8, idx=0),
        },
    ),
    "mnli": TaskSpec(
        "MNLI",
        ("entailment", "neutral", "contradiction"),
        "premise",
        "hypothesis",
        {
            "train": TsvLayout("train.tsv", True, 12, text_a=8, text_b=9, label=11, idx=0),
            "dev_matched": TsvLayout("dev_matched.tsv", True, 16, text_a=8, text_b=9, label=15, idx=0),
            "dev_mismatched": TsvLayout("dev_mismatched.tsv", True, 16, text_a=8, text_b=9, label=15, idx=0),
            "test_matched": TsvLayout("test_matched.tsv", True, 10, text_a=8, text_b=9, idx=0),
            "test_mismatched": TsvLayout("test_mismatched.tsv", True, 10, text_a=8, text_b=9, idx=0),
        },
    ),
    "qnli": _pair_task("QNLI", _NLI_2, "question", "sentence"),
    "rte": _pair_task("RTE", _NLI_2, "sentence1", "sentence2"),
    "wnli": _pair_task("WNLI", _BINARY, "sentence1", "sentence2"),
}
# GLUE's diagnostic set (AX): MNLI-style pairs with a test split only. The leaderboard
# expects its predictions from the MNLI model (TFDS glue/ax; TSV diagnostic/diagnostic.tsv).
DIAGNOSTIC = TaskSpec(
    "diagnostic",
    TASKS["mnli"].labels,
    "premise",
    "hypothesis",
    {"test": TsvLayout("diagnostic.tsv", True, 3, text_a=1, text_b=2, idx=0)},
)
# every readable set: the nine tasks and "ax"
_SPECS: dict[str, TaskSpec] = {**TASKS, "ax": DIAGNOSTIC}
# Label names per set, in the order of the integer labels (TFDS ClassLabel order);
# None for the regression task STS-B.
LABELS: dict[str, tuple[str, ...] | None] = {task: spec.labels for task, spec in _SPECS.items()}


def _task_spec(task: str, split: str) -> TaskSpec:
    if task not in _SPECS:
        raise ValueError(f"unknown GLUE task {task!r}; use one of {sorted(_SPECS)}")
    spec = _SPECS[task]
    if split not in spec.layouts:
        raise ValueError(f"unknown split {split!r} for {task}; use one of {list(spec.layouts)}")
    return spec


def _tfds_split(split: str) -> str:
    return split.replace("dev", "validation")


def _tfds_builder(task: str, tfds_data_dir: str | None):
    """The prepared TFDS builder for glue/<task>, or None if TFDS or its data is missing."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    builder = tfds.builder(f"glue/{task}", data_dir=tfds_data_dir)
    return builder if builder.is_prepared() else None


def _decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _examples_from_tfds(builder, task: str, split: str) -> list[GlueExample]:
    import tensorflow_datasets as tfds

    spec = _SPECS[task]
    is_test = split.startswith("test")
    examples = []
    for row in tfds.as_numpy(builder.as_dataset(split=_tfds_split(split))):
        if is_test:
            label = None
        elif spec.labels is None:
            # TFDS stores STS-B scores as float32 (3.8 -> 3.7999999523); the TSV has at most
            # 3 decimals, so rounding gives the same Python float either way.
            label = round(float(row["label"]), 6)
        else:
            label = int(row["label"])
        idx = int(row["idx"])
        examples.append(
            GlueExample(
                f"{split}-{idx}",
                idx,
                _decode(row[spec.tfds_text_a]),
                _decode(row[spec.tfds_text_b]) if spec.tfds_text_b else None,
                label,
            )
        )
    return sorted(examples, key=lambda e: e.idx)  # TFDS may shard/reorder; GLUE order is by idx


def _read_tsv(path: str, layout: TsvLayout) -> Iterator[tuple[int, list[str]]]:
    """(line number, columns) of the data rows, checking every row's column count."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        for line, row in files.csv_records(f, path, delimiter="\t", quoting=csv.QUOTE_NONE):
            if not row:  # a blank line, e.g. a trailing one
                continue
            if len(row) != layout.num_columns:
                raise ValueError(
                    f"{path}:{line}: expected {layout.num_columns} tab-separated "
                    f"columns, found {len(row)}; fix or drop that line"
                )
            if layout.has_header and line == 1:
                continue
            yield line, row


def _parse_label(spec: TaskSpec, value: str, path: str, line: int) -> int | float:
    if spec.labels is None:
        try:
            score = float(value)
        except ValueError:
            raise ValueError(f"{path}:{line}: score {value!r} is not a number") from None
        if not math.isfinite(score):  # a NaN target makes every loss and weight NaN
            raise ValueError(f"{path}:{line}: score {value!r} is not a finite number; fix or drop that line")
        low, high = SCORE_RANGE
        if not low <= score <= high:
            raise ValueError(
                f"{path}:{line}: score {value!r} is outside STS-B's {low:g}-{high:g} similarity scale; "
                "fix or drop that line"
            )
        return score
    if value not in spec.labels:
        raise ValueError(f"{path}:{line}: label {value!r} is not one of {list(spec.labels)}")
    return spec.labels.index(value)


def _mrpc_rows_from_msr(folder: str, split: str) -> list[tuple[str, int, list[str]]]:
    """MRPC train/dev rows split out of msr_paraphrase_train.txt by dev_ids.tsv."""
    msr_path, ids_path = os.path.join(folder, "msr_paraphrase_train.txt"), os.path.join(folder, "dev_ids.tsv")
    with open(ids_path, encoding="utf-8") as f:
        dev_ids = {tuple(line.split()) for line in f if line.strip()}
    layout = TASKS["mrpc"].layouts["train"]
    return [
        (msr_path, line, row)
        for line, row in _read_tsv(msr_path, layout)
        if ((row[1], row[2]) in dev_ids) == (split == "dev")
    ]


class MissingSplitError(FileNotFoundError):
    """A task split that neither TFDS nor data_dir holds; `expected` names where it was
    looked for (a file, or TFDS glue/<task>)."""

    def __init__(self, message: str, expected: str):
        super().__init__(message)
        self.expected = expected


def _tsv_file(data_dir: str, task: str, split: str) -> str:
    """The file `task` `split` is read from: GLUE's TSV or, for MRPC train/dev without
    it, the MSR file that dev_ids.tsv splits."""
    spec = _SPECS[task]
    layout = spec.layouts[split]
    folder = os.path.join(data_dir, spec.folder)
    path = os.path.join(folder, layout.file_name)
    if os.path.exists(path):
        return path
    if task == "mrpc" and split in ("train", "dev") and os.path.exists(os.path.join(folder, "dev_ids.tsv")):
        return os.path.join(folder, "msr_paraphrase_train.txt")
    raise MissingSplitError(
        f"GLUE file {path} not found; download GLUE into {data_dir} "
        f"(layout {spec.folder}/{layout.file_name}) or prepare TFDS glue/{task}",
        expected=path,
    )


def _examples_from_tsv(data_dir: str, task: str, split: str) -> list[GlueExample]:
    spec = _SPECS[task]
    layout = spec.layouts[split]
    path = _tsv_file(data_dir, task, split)
    if os.path.basename(path) == layout.file_name:
        rows = [(path, line, row) for line, row in _read_tsv(path, layout)]
    else:
        rows = _mrpc_rows_from_msr(os.path.dirname(path), split)
    if not rows:  # found before training, not when the budget is spent and dev is scored
        raise ValueError(f"{path} holds no {split} examples (header or blank lines only); restore the GLUE file")
    examples = []
    for row_number, (source, line, row) in enumerate(rows):
        idx = int(row[layout.idx]) if layout.idx is not None else row_number
        label = _parse_label(spec, row[layout.label], source, line) if layout.label is not None else None
        text_b = row[layout.text_b] if layout.text_b is not None else None
        examples.append(GlueExample(f"{split}-{idx}", idx, row[layout.text_a], text_b, label))
    return examples


def load_glue(
    task: str, split: str, *, data_dir: str | None = None, tfds_data_dir: str | None = None, source: str = "auto"
) -> list[GlueExample]:
    """Examples of one GLUE task split, from where `locate` finds it."""
    builder = locate(task, split, data_dir=data_dir, tfds_data_dir=tfds_data_dir, source=source)
    if builder is not None:
        return _examples_from_tfds(builder, task, split)
    return _examples_from_tsv(data_dir, task, split)


def locate(
    task: str, split: str, *, data_dir: str | None = None, tfds_data_dir: str | None = None, source: str = "auto"
):
    """The prepared TFDS builder of `task`, or None when `split` is read from its TSV file
    under `data_dir`; MissingSplitError when neither holds it (nothing is read).

    source="auto" reads TFDS `glue/<task>` if it is prepared (in `tfds_data_dir`, or the
    TFDS default), else the TSV files under `data_dir`; "tfds" / "tsv" force one.
    """
    _task_spec(task, split)
    if source not in SOURCES:
        raise ValueError(f"source={source!r}; use one of {SOURCES}")
    if source != "tsv":
        builder = _tfds_builder(task, tfds_data_dir)
        if builder is not None:
            return builder
        if source == "tfds":
            raise MissingSplitError(
                f"TFDS glue/{task} is not prepared in {tfds_data_dir or 'the default data_dir'}; "
                "run tfds.builder(...).download_and_prepare() or use source='tsv'",
                expected=f"TFDS glue/{task}",
            )
    if data_dir is None:
        raise ValueError(
            f"TFDS glue/{task} is not prepared and no data_dir was given; "
            "pass data_dir=<folder holding CoLA/, SST-2/, ...>"
        )
    _tsv_file(data_dir, task, split)
    return None


def num_labels(task: str) -> int:
    """Output size of the task head: number of classes, or 1 for STS-B regression."""
    _task_spec(task, "train")
    return len(LABELS[task]) if LABELS[task] is not None else 1
