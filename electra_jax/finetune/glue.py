"""GLUE fine-tuning of an ELECTRA discriminator: the paper's recipe, official metrics.

    config = get_config()  # configs/glue.py
    config.task = "mrpc"; config.init = PRETRAIN_WORKDIR_OR_HF_DIR
    config.data_dir = GLUE_DIR
    results = run(config, workdir)

`init` is either a pretraining workdir of `electra_jax.train` (the discriminator of its
latest checkpoint, or `init_step`) or a transformers ELECTRA directory (google's released
`electra-*-discriminator`, or one of our exports). The tokenizer comes with it: the
workdir's `data.tokenizer`, or the `vocab.txt` / `*.model` inside the HF directory.

Each task is fine-tuned `seeds` times; the median of every metric is reported (as the
ELECTRA paper does), each run is exported as a transformers `ElectraForSequenceClassification`
directory (`WORKDIR/<task>/seed_<k>/`, tokenizer included), and the run with the median dev
score writes the test-set predictions in the GLUE leaderboard's format
(`WORKDIR/submission/<Task>.tsv`; MNLI's also predicts the diagnostic set, AX.tsv).
`WORKDIR/results.json` and `results.md` hold the numbers.

The paper's trick for RTE, STS-B and MRPC, starting from the MNLI-fine-tuned model, is
`init=WORKDIR/mnli/seed_<median_seed>`: its encoder under a new head.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from data_pipelines import files
from data_pipelines import glue as glue_data
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.pretraining import FEATURE_KEYS
from electra_jax import heads, loading
from electra_jax.finetune import common
from electra_jax.finetune import metrics as glue_metrics

DEFAULT_NUM_EPOCHS = 3.0
NUM_EPOCHS = {"rte": 10.0, "stsb": 10.0}  # the small tasks train longer
# Sentence-pair tasks trained on both orders by default, as the original's double_unordered
# (symmetric tasks: a paraphrase or a similarity score does not depend on the order).
DOUBLE_UNORDERED_TASKS = ("mrpc", "stsb")

# task -> (metrics key, split) of the dev and test sets it is scored / predicted on
DEV_SPLITS = {
    task: (("mnli_matched", "dev_matched"), ("mnli_mismatched", "dev_mismatched"))
    if task == "mnli"
    else ((task, "dev"),)
    for task in glue_data.TASKS
}
# task -> (key, GLUE set read, split) of the test sets it predicts: MNLI's model also
# predicts the diagnostic set (AX), as the leaderboard expects
TEST_SPLITS = {
    task: (
        ("mnli_matched", "mnli", "test_matched"),
        ("mnli_mismatched", "mnli", "test_mismatched"),
        ("ax", "ax", "test"),
    )
    if task == "mnli"
    else ((task, task, "test"),)
    for task in glue_data.TASKS
}
# metrics key -> the file name the GLUE leaderboard expects in a submission zip
SUBMISSION_FILES = {
    "cola": "CoLA.tsv",
    "sst2": "SST-2.tsv",
    "mrpc": "MRPC.tsv",
    "qqp": "QQP.tsv",
    "stsb": "STS-B.tsv",
    "mnli_matched": "MNLI-m.tsv",
    "mnli_mismatched": "MNLI-mm.tsv",
    "qnli": "QNLI.tsv",
    "rte": "RTE.tsv",
    "wnli": "WNLI.tsv",
    "ax": "AX.tsv",
}
STSB_RANGE = (0.0, 5.0)  # STS-B gold scores; predictions are clipped to it for submission


# ---------------------------------------------------------------------------- data


def is_regression(task: str) -> bool:
    return glue_data.LABELS[task] is None


def encode_examples(
    tokenizer: tokenizer_lib.Tokenizer, examples: list, max_seq_length: int, regression: bool, where: str = "GLUE"
) -> dict[str, np.ndarray]:
    """Model inputs [N, max_seq_length], `labels` [N] (0 / NaN on test splits) and `idx` [N]."""
    pairs = [(e.text_a, e.text_b) for e in examples]
    features = common.encode_text_pairs(tokenizer, pairs, max_seq_length, "head", where)
    missing = np.nan if regression else 0
    features["labels"] = np.array(
        [missing if e.label is None else e.label for e in examples], np.float32 if regression else np.int32
    )
    features["idx"] = np.array([e.idx for e in examples], np.int64)
    return features


def double_unordered(config, task: str) -> bool:
    if config.double_unordered is None:
        return task in DOUBLE_UNORDERED_TASKS
    return config.double_unordered


def with_swapped_pairs(examples: list) -> list:
    """`examples`, then each again with its sentences swapped (as the original appends them)."""
    return examples + [dataclasses.replace(e, text_a=e.text_b, text_b=e.text_a) for e in examples]


def load_split(config, task: str, split: str, tokenizer) -> dict[str, np.ndarray]:
    examples = glue_data.load_glue(
        task, split, data_dir=config.data_dir or None, tfds_data_dir=config.tfds_data_dir or None, source=config.source
    )
    if split == "train" and config.max_train_examples:
        examples = examples[: config.max_train_examples]
    if split == "train" and double_unordered(config, task):
        if examples and examples[0].text_b is None:
            raise ValueError(f"double_unordered=True but {task} has one sentence per example; drop it")
        examples = with_swapped_pairs(examples)
    return encode_examples(tokenizer, examples, config.max_seq_length, is_regression(task), f"{task} {split}")


# ---------------------------------------------------------------------------- model and optimizer


def num_epochs(task: str) -> float:
    """The paper's epochs for `task` (what config.num_epochs=0 means)."""
    return NUM_EPOCHS.get(task, DEFAULT_NUM_EPOCHS)


def task_loss(logits: jax.Array, labels: jax.Array, regression: bool) -> jax.Array:
    """Mean cross-entropy, or mean squared error on the raw score for regression (HF's
    MSELoss; the original TF code regresses score / 5)."""
    if regression:
        return jnp.mean(jnp.square(logits[:, 0].astype(jnp.float32) - labels))
    return common.cross_entropy(logits, labels)


def predictions_from_logits(logits: np.ndarray, regression: bool) -> np.ndarray:
    return logits[:, 0] if regression else np.argmax(logits, axis=-1)


# ---------------------------------------------------------------------------- one task


def _label_config(task: str) -> dict[str, Any]:
    """config.json entries transformers needs for a GLUE head."""
    labels = glue_data.LABELS[task] or ("score",)
    return {
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
        "problem_type": "regression" if is_regression(task) else "single_label_classification",
        "finetuning_task": task,
    }


def export_classifier(pretrained: loading.Network, params: dict, task: str, out_dir: str) -> None:
    """A transformers ElectraForSequenceClassification dir, with the tokenizer file beside it."""
    common.export_model(pretrained, params, out_dir, "sequence_classification", _label_config(task))


def score_splits(
    task: str, logits_by_key: dict[str, np.ndarray], labels_by_key: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    regression = is_regression(task)
    return {
        key: glue_metrics.task_metrics(key, labels_by_key[key], predictions_from_logits(logits, regression))
        for key, logits in logits_by_key.items()
    }


def submission_path(task_key: str, workdir: str) -> str:
    return os.path.join(workdir, "submission", SUBMISSION_FILES[task_key])


@common.on_process_zero
def write_submission(path: str, idx: np.ndarray, predictions: np.ndarray, task: str) -> None:
    """`index<TAB>prediction` rows as the GLUE leaderboard reads them: label names for
    classification, STS-B scores clipped to [0, 5]."""
    labels = glue_data.LABELS[task]
    with files.atomic_open(path) as f:
        f.write("index\tprediction\n")
        for index, prediction in zip(idx, predictions):
            value = f"{float(np.clip(prediction, *STSB_RANGE)):.3f}" if labels is None else labels[int(prediction)]
            f.write(f"{int(index)}\t{value}\n")


def _load_test_splits(config, task: str, tokenizer) -> dict[str, dict[str, np.ndarray]]:
    """key -> features of each test set of `task` that is available (a missing one is logged)."""
    if not config.predict_test:
        return {}
    test = {}
    for key, source, split in TEST_SPLITS[task]:
        try:
            test[key] = load_split(config, source, split, tokenizer)
        except FileNotFoundError as e:
            logging.warning("%s: no %s %s split (%s); no %s written", task, source, split, e, SUBMISSION_FILES[key])
    return test


def median_seed_run(runs: list[dict]) -> dict:
    """The run whose dev score (`task_score`) is the median: it writes the submission and
    names `median_seed`."""
    return runs[common.median_run([task_score(run["dev"]) for run in runs])]


def finetune_task(config, pretrained: loading.Network, task: str, workdir: str) -> dict[str, Any]:
    """Fine-tunes `task` `config.seeds` times; returns its results entry."""
    tokenizer = pretrained.tokenizer
    train = load_split(config, task, "train", tokenizer)
    dev = {key: load_split(config, task, split, tokenizer) for key, split in DEV_SPLITS[task]}
    test = _load_test_splits(config, task, tokenizer)
    regression = is_regression(task)

    def evaluate(predict, params):
        logits = {key: predict(params, dev[key]) for key in dev}
        return score_splits(task, logits, {key: dev[key]["labels"] for key in dev})

    def after_run(run_dir: str, params: dict, predict) -> dict:
        if config.save_models:
            export_classifier(pretrained, params, task, run_dir)
        return {"test_logits": {key: predict(params, test[key]) for key in test}}

    setup = common.Setup(
        name=task,
        net=common.sequence_classifier(config, pretrained, glue_data.num_labels(task)),
        loss=lambda logits, batch: task_loss(logits, batch["labels"], regression),
        train=train,
        batch_keys=(*FEATURE_KEYS, "labels"),
        default_num_epochs=num_epochs(task),
        evaluate=evaluate,
        dev_score=task_score,
        after_run=after_run,
        out_dir=os.path.join(workdir, task),
    )
    outcome, chosen = common.run_seeds(config, pretrained, setup)
    submission = []
    for key, logits in chosen["test_logits"].items():
        submission.append(submission_path(key, workdir))
        write_submission(submission[-1], test[key]["idx"], predictions_from_logits(logits, regression), task)
    return {"task": task, **outcome, "submission_files": submission}


def task_score(dev_metrics: dict[str, dict[str, float]]) -> float:
    """A run's dev score: the mean of its splits' task scores (MNLI: matched and mismatched)."""
    return float(np.mean([glue_metrics.task_score(m) for m in dev_metrics.values()]))


# ---------------------------------------------------------------------------- the suite


def results_table(results: dict[str, Any]) -> str:
    """Markdown table of the median dev metrics, one row per scored split."""
    rows = ["| task | metric | median dev | runs |", "|---|---|---|---|"]
    for task_result in results["tasks"].values():
        for key, task_metrics in task_result["median"].items():
            for name, value in task_metrics.items():
                per_run = ", ".join(f"{run['dev'][key][name]:.1f}" for run in task_result["runs"])
                rows.append(f"| {key} | {name} | {value:.2f} | {per_run} |")
    rows.append(f"| **GLUE score** | mean of task scores | {results['glue_score']:.2f} | |")
    if results.get("electra_paper_score") is not None:
        rows.append(
            f"| ELECTRA-paper dev average | one metric per task, no WNLI | {results['electra_paper_score']:.2f} | |"
        )
    return "\n".join(rows) + "\n"


def tasks_of(config) -> list[str]:
    if config.task == "all":
        return list(glue_data.TASKS)
    if config.task not in glue_data.TASKS:
        raise ValueError(f"config.task={config.task!r}; use one of {sorted(glue_data.TASKS)} or 'all'")
    return [config.task]


def check_data_present(config, tasks: list[str]) -> None:
    """Refuses, before any training, a task list some of whose train or dev sets are
    missing: a 'GLUE score' of the tasks found would read as the suite's."""
    missing = {}
    for task in tasks:
        for split in ("train", *(split for _, split in DEV_SPLITS[task])):
            try:
                glue_data.locate(
                    task,
                    split,
                    data_dir=config.data_dir or None,
                    tfds_data_dir=config.tfds_data_dir or None,
                    source=config.source,
                )
            except glue_data.MissingSplitError as e:
                missing.setdefault(task, []).append(e.expected)
    if missing:
        present = [task for task in tasks if task not in missing]
        raise FileNotFoundError(
            f"task={config.task} but {len(missing)} of {len(tasks)} tasks have no data: "
            + "; ".join(f"{task} ({', '.join(paths)})" for task, paths in missing.items())
            + f". Download GLUE into --config.data_dir (or prepare TFDS glue/<task>), or fine-tune the tasks "
            f"you have one per run: --config.task=<one of {present}>"
        )


def suite_scores(task_results: dict[str, dict]) -> dict[str, Any]:
    """The GLUE score and the ELECTRA paper's dev average of the tasks' medians."""
    medians = {key: m for r in task_results.values() for key, m in r["median"].items()}
    has_paper_task = any(key in glue_metrics.ELECTRA_PAPER_METRIC for key in medians)
    return {
        "glue_score": glue_metrics.glue_score(medians),
        "electra_paper_score": glue_metrics.electra_paper_score(medians) if has_paper_task else None,
    }


def merge_seed_splits(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One results.json from `run`s of the same tasks and recipe whose seeds were split
    over processes (`seed`, `seeds` apart): runs in seed order, medians, median seed and
    scores recomputed over all of them. Test-set submissions stay with their process (the
    median run of the whole may lie in any of them), so the merge lists none."""
    recipes = [{k: v for k, v in p["config"].items() if k not in ("seed", "seeds")} for p in parts]
    if any(r != recipes[0] for r in recipes) or any(p["tasks"].keys() != parts[0]["tasks"].keys() for p in parts):
        raise ValueError("merge_seed_splits: the parts differ in tasks or in config beyond seed/seeds")
    seeds = sorted(run["seed"] for p in parts for run in next(iter(p["tasks"].values()))["runs"])
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"merge_seed_splits: seeds {seeds} overlap; give each part its own seed range")
    tasks = {}
    for task, first in parts[0]["tasks"].items():
        runs = sorted((run for p in parts for run in p["tasks"][task]["runs"]), key=lambda run: run["seed"])
        tasks[task] = {
            **first,
            "median": common.median_metrics([run["dev"] for run in runs]),
            "runs": runs,
            "median_seed": median_seed_run(runs)["seed"],
            "submission_files": [],
        }
    config = {**parts[0]["config"], "seed": seeds[0], "seeds": len(seeds)}
    return {"init": parts[0]["init"], "config": config, "tasks": tasks, **suite_scores(tasks)}


def run(config, workdir: str) -> dict[str, Any]:
    """Fine-tunes every task of `config.task`; writes results.json, results.md and the
    leaderboard files into `workdir`. Every task's train and dev data must be there before
    the first one trains."""
    tasks = tasks_of(config)
    check_data_present(config, tasks)
    pretrained = common.open_run(config, workdir)
    results: dict[str, Any] = {"init": config.init, "config": config.to_dict(), "tasks": {}}
    for task in tasks:
        results["tasks"][task] = finetune_task(config, pretrained, task, workdir)
    results.update(suite_scores(results["tasks"]))
    common.write_json(os.path.join(workdir, "results.json"), results)
    common.write_text(os.path.join(workdir, "results.md"), results_table(results))
    return results


def evaluate_finetuned(config, workdir: str) -> dict[str, Any]:
    """Scores the fine-tuned transformers directory `config.init` on `config.eval_split`
    (metrics if it has labels; a leaderboard file if it is a test split)."""
    if config.task == "all":
        raise ValueError("eval_only scores one task; set --config.task to it")
    task = tasks_of(config)[0]
    pretrained = loading.load_network(config.init, None, config.tokenizer, "encoder")
    if pretrained.classifier_params is None:
        raise ValueError(
            f"{config.init} has no classification head; eval_only needs a "
            "fine-tuned model (a WORKDIR/<task>/seed_<k> directory)"
        )
    trained_task = (pretrained.hf_config or {}).get("finetuning_task")
    if trained_task not in (None, task):
        raise ValueError(
            f"{config.init} was fine-tuned on {trained_task!r}, not {task!r}; set --config.task={trained_task}"
        )
    split = config.eval_split
    # eval_split -> (key, GLUE set, its split); AX is MNLI's eval_split "ax"
    choices = {s: (key, task, s) for key, s in DEV_SPLITS[task]}
    choices |= {s if source == task else source: (key, source, s) for key, source, s in TEST_SPLITS[task]}
    if split not in choices:
        raise ValueError(f"eval_split={split!r} for {task}; use one of {list(choices)}")
    key, source, source_split = choices[split]
    features = load_split(config, source, source_split, pretrained.tokenizer)
    net = heads.SequenceClassifier(pretrained.model_config, glue_data.num_labels(task))
    params = {"electra": pretrained.encoder_params, "classifier": pretrained.classifier_params}
    logits = common.predict_outputs(
        common.make_predict_fn(net, common.make_placement(config, net)), params, features, config.eval_batch_size
    )
    predictions = predictions_from_logits(logits, is_regression(task))
    result: dict[str, Any] = {"init": config.init, "task": task, "split": split, "num_examples": len(predictions)}
    if source_split.startswith("test"):
        result["submission_file"] = submission_path(key, workdir)
        write_submission(result["submission_file"], features["idx"], predictions, task)
    else:
        result["metrics"] = glue_metrics.task_metrics(key, features["labels"], predictions)
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    common.write_json(os.path.join(workdir, f"eval_{task}_{split}.json"), result)
    return result


def report(config, workdir: str) -> str:
    """The CLI's program: `evaluate_finetuned` (as JSON) with eval_only, else `run` (as the
    results table)."""
    if config.eval_only:
        return json.dumps(evaluate_finetuned(config, workdir), indent=2)
    results = run(config, workdir)
    logging.info("GLUE results written to %s/results.json", workdir)
    return results_table(results)
