"""GLUE's official metrics, in NumPy, and the GLUE score.

Per task (as the GLUE benchmark defines them): CoLA Matthews correlation; SST-2, QNLI,
RTE, WNLI, MNLI-m and MNLI-mm accuracy; MRPC and QQP F1 (positive class 1) and accuracy;
STS-B Pearson and Spearman correlation. All are reported x100, as the leaderboard does.
"""

from __future__ import annotations

import numpy as np

# task -> the metrics GLUE reports for it, in leaderboard order
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "qqp": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}
# The single metric the ELECTRA paper averages per task on dev (Sec. 3.1: Spearman for
# STS, Matthews for CoLA, accuracy for the rest; MNLI matched only; WNLI left out).
ELECTRA_PAPER_METRIC = {
    task: ("spearman" if task == "stsb" else "mcc" if task == "cola" else "accuracy")
    for task in TASK_METRICS
    if task not in ("wnli", "mnli_mismatched")
}


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(predictions)))


def _confusion(labels: np.ndarray, predictions: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) of binary labels, class 1 positive."""
    labels, predictions = np.asarray(labels) == 1, np.asarray(predictions) == 1
    return (
        int(np.sum(labels & predictions)),
        int(np.sum(~labels & predictions)),
        int(np.sum(labels & ~predictions)),
        int(np.sum(~labels & ~predictions)),
    )


def f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """F1 of class 1; 0 when there are no true positives (sklearn's zero_division=0)."""
    tp, fp, fn, _ = _confusion(labels, predictions)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews_corrcoef(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Binary Matthews correlation; 0 when a row or column of the confusion matrix is empty."""
    tp, fp, fn, tn = _confusion(labels, predictions)
    denominator = np.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denominator) if denominator else 0.0


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties sharing their mean rank (what Spearman's rho needs)."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Each run of equal values gets the mean of the positions it spans.
    run_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_ends = np.r_[run_starts[1:], len(values)]
    run_ranks = (run_starts + run_ends + 1) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(run_ranks, run_ends - run_starts)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(_average_ranks(x), _average_ranks(y))


_METRIC_FNS = {"accuracy": accuracy, "f1": f1, "mcc": matthews_corrcoef, "pearson": pearson, "spearman": spearman}


def task_metrics(task: str, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """GLUE's metrics of one task (MNLI: 'mnli_matched' / 'mnli_mismatched'), x100."""
    if task not in TASK_METRICS:
        raise ValueError(f"no GLUE metrics for {task!r}; use one of {sorted(TASK_METRICS)}")
    if len(labels) != len(predictions) or not len(labels):
        raise ValueError(
            f"{task}: {len(labels)} labels but {len(predictions)} predictions; "
            "score a non-empty split with one prediction per example"
        )
    return {name: 100.0 * _METRIC_FNS[name](labels, predictions) for name in TASK_METRICS[task]}


def task_score(metrics: dict[str, float]) -> float:
    """One number per task, as the GLUE leaderboard: the mean of the task's metrics."""
    return float(np.mean(list(metrics.values())))


def glue_score(results: dict[str, dict[str, float]]) -> float:
    """The GLUE score: the mean of the task scores, MNLI-m and MNLI-mm counted as one task
    (their mean), as the leaderboard averages nine tasks. `results`: task -> metrics."""
    scores = {task: task_score(metrics) for task, metrics in results.items()}
    mnli = [scores.pop(split) for split in ("mnli_matched", "mnli_mismatched") if split in scores]
    if mnli:
        scores["mnli"] = float(np.mean(mnli))
    if not scores:
        raise ValueError("glue_score needs the metrics of at least one task")
    return float(np.mean(list(scores.values())))


def electra_paper_score(results: dict[str, dict[str, float]]) -> float:
    """The ELECTRA paper's dev average: one metric per task (ELECTRA_PAPER_METRIC)."""
    used = [results[task][metric] for task, metric in ELECTRA_PAPER_METRIC.items() if task in results]
    if not used:
        raise ValueError(f"none of {sorted(ELECTRA_PAPER_METRIC)} in the results")
    return float(np.mean(used))
