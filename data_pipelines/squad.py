"""SQuAD readers: v1.1 and v2.0 from TFDS when prepared, else the official JSON files.

    dataset = load_squad("1.1", "dev", data_dir="../shared/data/squad_v1.1")
    examples = parse_examples(dataset, "dev-v1.1.json")
    examples[0]  # SquadExample(qid='56be4db0acb43e...', question='Which NFL team ...', ...)

Both sources give the official JSON structure (`{"version", "data": [{"title",
"paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text",
"answer_start"}], "is_impossible"?}]}]}]}`), because the official evaluation scripts and
the article-level splits (`select_articles`) work on it. TFDS rows (one per question)
are regrouped into articles and paragraphs in their stored order.

`parse_examples` validates every field: a missing key, an empty context or question, a
duplicated id, or an `answer_start` whose text is not at that position is an error naming
the question id and the fix. Nothing is skipped.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable

VERSIONS = ("1.1", "2.0")
SPLITS = ("train", "dev")
SOURCES = ("auto", "tfds", "json")


@dataclasses.dataclass(frozen=True)
class SquadExample:
    qid: str
    title: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]  # (text, character start in context); all gold answers
    is_impossible: bool  # SQuAD 2.0: no answer in the context (then `answers` is empty)


def check_version(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"SQuAD version {version!r}; use one of {VERSIONS}")


def json_file_name(version: str, split: str) -> str:
    """The official file name: train-v1.1.json, dev-v2.0.json, ..."""
    if split not in SPLITS:
        raise ValueError(f"SQuAD split {split!r}; use one of {SPLITS}")
    return f"{split}-v{version}.json"


def read_json(path: str) -> dict[str, Any]:
    """An official-format SQuAD file, with its top-level structure checked."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"SQuAD file {path} not found; download it from "
            "https://rajpurkar.github.io/SQuAD-explorer/ or set --config.data_dir"
        )
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise ValueError(
            f'SQuAD file {path} is empty; expected the official JSON ({{"version": ..., "data": [articles]}})'
        )
    try:
        dataset = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"SQuAD file {path} is not valid JSON ({e})") from None
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise ValueError(f"SQuAD file {path} has no top-level 'data' list of articles; expected the official format")
    if not dataset["data"]:
        raise ValueError(f"SQuAD file {path} has no articles ('data' is empty)")
    return dataset


def _tfds_builder(version: str, tfds_data_dir: str | None):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    builder = tfds.builder(f"squad/v{version}", data_dir=tfds_data_dir)
    return builder if builder.is_prepared() else None


def _decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def dataset_from_rows(rows: Iterable[dict], version: str) -> dict[str, Any]:
    """TFDS squad rows (one per question, as `tfds.as_numpy` yields them) regrouped into
    the official JSON structure: consecutive rows of one title form an article, of one
    context a paragraph."""
    articles: list[dict] = []
    for row in rows:
        title, context = _decode(row["title"]), _decode(row["context"])
        if not articles or articles[-1]["title"] != title:
            articles.append({"title": title, "paragraphs": []})
        paragraphs = articles[-1]["paragraphs"]
        if not paragraphs or paragraphs[-1]["context"] != context:
            paragraphs.append({"context": context, "qas": []})
        answers = row["answers"]
        qa = {
            "id": _decode(row["id"]),
            "question": _decode(row["question"]),
            "answers": [
                {"text": _decode(t), "answer_start": int(s)} for t, s in zip(answers["text"], answers["answer_start"])
            ],
        }
        if "is_impossible" in row:
            qa["is_impossible"] = bool(row["is_impossible"])
        paragraphs[-1]["qas"].append(qa)
    return {"version": version, "data": articles}


def dataset_from_tfds(builder, split: str) -> dict[str, Any]:
    import tensorflow_datasets as tfds

    rows = tfds.as_numpy(builder.as_dataset(split="validation" if split == "dev" else split))
    return dataset_from_rows(rows, builder.info.config_name.lstrip("v"))


def load_squad(
    version: str,
    split: str,
    *,
    data_file: str = "",
    data_dir: str = "",
    tfds_data_dir: str | None = None,
    source: str = "auto",
) -> dict[str, Any]:
    """The dataset (official JSON structure) of one version and split.

    source="auto": `data_file` if given, else TFDS `squad/v<version>` if prepared, else
    `data_dir/<split>-v<version>.json`; "tfds" / "json" force one.
    """
    check_version(version)
    if source not in SOURCES:
        raise ValueError(f"source={source!r}; use one of {SOURCES}")
    file_name = json_file_name(version, split)
    if data_file:
        return read_json(data_file)
    if source != "json":
        builder = _tfds_builder(version, tfds_data_dir)
        if builder is not None:
            return dataset_from_tfds(builder, split)
        if source == "tfds":
            raise FileNotFoundError(
                f"TFDS squad/v{version} is not prepared in "
                f"{tfds_data_dir or 'the default data_dir'}; run "
                "tfds.builder(...).download_and_prepare() or use source='json'"
            )
    if not data_dir:
        raise ValueError(
            f"TFDS squad/v{version} is not prepared and neither data_dir nor a file "
            f"was given; set --config.data_dir to the folder holding {file_name}"
        )
    return read_json(os.path.join(data_dir, file_name))


def select_articles(dataset: dict[str, Any], article_slice: str) -> dict[str, Any]:
    """The articles `article_slice` ("start:end", Python slice syntax; "" = all) picks, so
    one file can give disjoint training and evaluation articles."""
    if not article_slice:
        return dataset
    parts = article_slice.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        bounds = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError(f"article slice {article_slice!r}; write 'start:end', e.g. '0:40' or '40:'") from None
    selected = dataset["data"][slice(*bounds)]
    if not selected:
        raise ValueError(f"article slice {article_slice!r} selects none of the {len(dataset['data'])} articles")
    return {**dataset, "data": selected}


def _field(record: dict, key: str, kind: type, where: str):
    if not isinstance(record, dict) or key not in record:
        raise ValueError(f"{where}: missing field {key!r}; every SQuAD entry needs it (see the official format)")
    value = record[key]
    if not isinstance(value, kind):
        raise ValueError(f"{where}: field {key!r} is {type(value).__name__}, expected {kind.__name__}")
    return value


def _answers(qa: dict, context: str, where: str) -> tuple[tuple[str, int], ...]:
    answers = []
    for k, answer in enumerate(_field(qa, "answers", list, where)):
        text = _field(answer, "text", str, f"{where} answer {k}")
        start = _field(answer, "answer_start", int, f"{where} answer {k}")
        if not text.strip():
            raise ValueError(f"{where} answer {k}: empty answer text")
        found = context[start : start + len(text)] if start >= 0 else ""
        if found != text:
            first = context.find(text)
            hint = f"the text first occurs at {first}" if first >= 0 else "the text does not occur in the context"
            raise ValueError(
                f"{where} answer {k}: answer_start={start} points at {found!r} but the "
                f"answer text is {text!r}; set answer_start to the character offset "
                f"of the text in the context ({hint})"
            )
        answers.append((text, start))
    return tuple(answers)


def parse_examples(dataset: dict[str, Any], source_name: str) -> list[SquadExample]:
    """Every question of `dataset`, validated (see the module docstring)."""
    examples, seen = [], set()
    for a, article in enumerate(_field(dataset, "data", list, source_name)):
        article_where = f"{source_name} article {a}"
        title = article.get("title", "") if isinstance(article, dict) else ""
        for p, paragraph in enumerate(_field(article, "paragraphs", list, article_where)):
            where = f"{article_where} paragraph {p}"
            context = _field(paragraph, "context", str, where)
            if not context.strip():
                raise ValueError(f"{where}: empty context")
            for q, qa in enumerate(_field(paragraph, "qas", list, where)):
                qid = _field(qa, "id", str, f"{where} question {q}")
                qa_where = f"{source_name} question id={qid}"
                if qid in seen:
                    raise ValueError(f"{qa_where}: duplicate question id; ids must be unique")
                seen.add(qid)
                question = _field(qa, "question", str, qa_where)
                if not question.strip():
                    raise ValueError(f"{qa_where}: empty question")
                answers = _answers(qa, context, qa_where)
                is_impossible = bool(qa.get("is_impossible", False))
                if is_impossible and answers:
                    raise ValueError(
                        f"{qa_where}: is_impossible=true but it has answers; an "
                        "unanswerable question has an empty 'answers' list"
                    )
                if not is_impossible and not answers:
                    raise ValueError(
                        f"{qa_where}: no answers and not is_impossible; add its "
                        "answers or mark it is_impossible (SQuAD 2.0)"
                    )
                examples.append(SquadExample(qid, title, question, context, answers, is_impossible))
    if not examples:
        raise ValueError(f"{source_name} holds no questions")
    return examples
