"""Text classification on your own CSV / TSV / JSONL files with an ELECTRA discriminator.

    config = get_config()  # configs/classify.py
    config.init = PRETRAIN_WORKDIR_OR_HF_DIR
    config.train_file, config.dev_file = "train.csv", "dev.csv"
    results = run(config, workdir)

CSV and TSV files need a header row naming the columns; JSONL files hold one JSON object
per line. The columns are `text_column`, optionally `text_pair_column` (sentence pairs) and
`label_column`; labels are strings (or JSON numbers / bools, read as their text), stripped
of surrounding whitespace, with numbers spelled one way ("1", "1 " and 1.0 are one class).

Long texts (reviews) are cut to `max_seq_length` by `truncation`: `head` keeps the
beginning, `tail` the end, `head_tail` the first quarter and the last three quarters of
the budget (Sun et al. 2019, "How to Fine-Tune BERT for Text Classification", found
head+tail best on IMDb). Pairs lose tokens from the longer text first.

Scored by accuracy and macro-F1 (x100) on the dev file; each run is exported as a
transformers `ElectraForSequenceClassification` with id2label (`WORKDIR/seed_<k>/`), and
`label_map.json` holds label -> id.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from data_pipelines import files
from data_pipelines.labelled_text import Example, normalize_label, read_examples
from data_pipelines.pretraining import FEATURE_KEYS
from electra_jax import loading
from electra_jax.finetune import common

DEFAULT_NUM_EPOCHS = 3.0


def label_list(config, train: list[Example]) -> list[str]:
    """The classes in id order: config.labels, else the training labels sorted; at least 2
    (a 1-class head learns nothing and scores 100)."""
    if config.labels:
        labels = [normalize_label(label) for label in config.labels.split(",")]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated or "" in labels:
            what = f"names {', '.join(repeated)} more than once" if repeated else "has an empty label"
            raise ValueError(f"--config.labels={config.labels!r} {what}; give each class once, in id order")
        where = f"--config.labels={config.labels!r}"
    else:
        labels = sorted({e.label for e in train})
        rows = f" (its first {config.max_train_examples} rows)" if config.max_train_examples else ""
        where = f"{config.train_file}{rows}"
    if len(labels) < 2:
        raise ValueError(
            f"{where} has {len(labels)} class(es) {labels}; a classifier needs at least 2: "
            "add training rows of the other classes"
        )
    return labels


# ---------------------------------------------------------------------------- features


def encode_examples(
    tokenizer, examples: list[Example], label_ids: dict[str, int], config, path: str
) -> dict[str, np.ndarray]:
    """Model inputs [N, max_seq_length] and `labels` [N] (-1 for unlabelled rows)."""
    for e in examples:
        if e.label is not None and e.label not in label_ids:
            raise ValueError(
                f"{path}:{e.line}: label {e.label!r} is not one of {list(label_ids)} "
                "(the training labels); add it to --config.labels or fix the row"
            )
    pairs = [(e.text, e.text_pair) for e in examples]
    features = common.encode_text_pairs(tokenizer, pairs, config.max_seq_length, config.truncation, path)
    features["labels"] = np.array([-1 if e.label is None else label_ids[e.label] for e in examples], np.int32)
    return features


# ---------------------------------------------------------------------------- metrics


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 (the unweighted mean over classes of per-class F1; a class
    never gold nor predicted counts 0, as sklearn's zero_division=0), both x100."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    f1s = []
    for c in range(num_labels):
        true_positives = np.sum((predictions == c) & (labels == c))
        denominator = np.sum(predictions == c) + np.sum(labels == c)
        f1s.append(2 * true_positives / denominator if denominator else 0.0)
    return {"accuracy": 100 * float(np.mean(labels == predictions)), "macro_f1": 100 * float(np.mean(f1s))}


# ---------------------------------------------------------------------------- fine-tuning


def classification_loss(logits, batch):
    return common.cross_entropy(logits, batch["labels"])


def export_classifier(pretrained: loading.Network, params: dict, labels: list[str], out_dir: str) -> None:
    common.export_model(
        pretrained,
        params,
        out_dir,
        "sequence_classification",
        {
            "id2label": {str(i): label for i, label in enumerate(labels)},
            "label2id": {label: i for i, label in enumerate(labels)},
            "problem_type": "single_label_classification",
        },
    )


@common.on_process_zero
def write_predictions(path: str, examples: list[Example], predicted: list[str]) -> None:
    """One JSON object per line: the row's line in its file and the predicted label."""
    with files.atomic_open(path) as f:
        f.writelines(json.dumps({"line": e.line, "label": label}) + "\n" for e, label in zip(examples, predicted))


def run(config, workdir: str) -> dict[str, Any]:
    """Fine-tunes `config.seeds` runs; writes results.json, label_map.json, the exported
    models and (with a test file) test_predictions.jsonl of the median run into `workdir`."""
    common.require_files(config, ("train_file", "dev_file"), ".csv/.tsv/.jsonl file")
    common.require_separate_dev_file(config)
    pretrained = common.open_run(config, workdir)
    tokenizer = pretrained.tokenizer
    train_examples = read_examples(config.train_file, config)
    if config.max_train_examples:
        train_examples = train_examples[: config.max_train_examples]
    dev_examples = read_examples(config.dev_file, config)
    labels = label_list(config, train_examples)
    label_ids = {label: i for i, label in enumerate(labels)}
    common.write_json(os.path.join(workdir, "label_map.json"), label_ids)
    train = encode_examples(tokenizer, train_examples, label_ids, config, config.train_file)
    dev = encode_examples(tokenizer, dev_examples, label_ids, config, config.dev_file)
    test_examples = read_examples(config.test_file, config, labelled=False) if config.test_file else []
    test = encode_examples(tokenizer, test_examples, label_ids, config, config.test_file) if test_examples else None

    def after_run(run_dir: str, params: dict, predict) -> dict:
        if config.save_models:
            export_classifier(pretrained, params, labels, run_dir)
        return {"test_predictions": np.argmax(predict(params, test), axis=-1)} if test else {}

    setup = common.Setup(
        name="classify",
        net=common.sequence_classifier(config, pretrained, len(labels)),
        loss=classification_loss,
        train=train,
        batch_keys=(*FEATURE_KEYS, "labels"),
        default_num_epochs=DEFAULT_NUM_EPOCHS,
        evaluate=lambda predict, params: classification_metrics(
            dev["labels"], np.argmax(predict(params, dev), axis=-1), len(labels)
        ),
        dev_score=lambda dev_metrics: dev_metrics["accuracy"],
        after_run=after_run,
        out_dir=workdir,
    )
    outcome, chosen = common.run_seeds(config, pretrained, setup)
    results = {"init": config.init, "config": config.to_dict(), "labels": labels, **outcome}
    if test:
        predicted = [labels[i] for i in chosen["test_predictions"]]
        write_predictions(os.path.join(workdir, "test_predictions.jsonl"), test_examples, predicted)
        if np.all(test["labels"] >= 0):
            results["test"] = classification_metrics(test["labels"], chosen["test_predictions"], len(labels))
    common.write_json(os.path.join(workdir, "results.json"), results)
    return results


def report(config, workdir: str) -> str:
    """The CLI's program: `run`, its median dev metrics and test summary as JSON."""
    return common.json_report(run(config, workdir))
