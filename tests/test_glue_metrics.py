"""GLUE metrics against scikit-learn / scipy on random predictions, for every task."""

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from data_pipelines import glue as glue_data
from electra_jax.finetune import common, glue, metrics


def reference_metrics(task_key, labels, predictions):
    """What GLUE's own scorer computes, from sklearn / scipy (x100)."""
    if task_key == "cola":
        return {"mcc": 100 * sklearn.metrics.matthews_corrcoef(labels, predictions)}
    if task_key in ("mrpc", "qqp"):
        return {
            "f1": 100 * sklearn.metrics.f1_score(labels, predictions),
            "accuracy": 100 * sklearn.metrics.accuracy_score(labels, predictions),
        }
    if task_key == "stsb":
        return {
            "pearson": 100 * scipy.stats.pearsonr(labels, predictions).statistic,
            "spearman": 100 * scipy.stats.spearmanr(labels, predictions).statistic,
        }
    return {"accuracy": 100 * sklearn.metrics.accuracy_score(labels, predictions)}


def random_labels_and_predictions(task_key, seed, n=200):
    rng = np.random.default_rng(seed)
    task = "mnli" if task_key.startswith("mnli") else task_key
    if glue_data.LABELS[task] is None:
        # STS-B gold scores come in steps of 0.2 (many ties), predictions are floats
        labels = rng.integers(0, 26, n) / 5.0
        return labels, labels + rng.normal(0, 1.5, n)
    num_classes = glue_data.num_labels(task)
    labels = rng.integers(0, num_classes, n)
    # correlated with the labels, so the metrics are not all near zero
    predictions = np.where(rng.random(n) < 0.6, labels, rng.integers(0, num_classes, n))
    return labels, predictions


@pytest.mark.parametrize("task_key", sorted(metrics.TASK_METRICS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_task_metrics_match_sklearn_and_scipy(task_key, seed):
    labels, predictions = random_labels_and_predictions(task_key, seed)
    ours = metrics.task_metrics(task_key, labels, predictions)
    reference = reference_metrics(task_key, labels, predictions)
    assert list(ours) == list(reference)
    for name in reference:
        assert ours[name] == pytest.approx(reference[name], abs=1e-9), name


def test_every_glue_split_has_metrics_and_a_submission_file():
    dev_keys = {key for task in glue_data.TASKS for key, _ in glue.DEV_SPLITS[task]}
    test_keys = {key for task in glue_data.TASKS for key, _, _ in glue.TEST_SPLITS[task]}
    assert dev_keys == set(metrics.TASK_METRICS)
    assert dev_keys | test_keys == set(glue.SUBMISSION_FILES)
    assert test_keys - dev_keys == {"ax"}  # the diagnostic set: predicted, never scored


def test_hand_computed_confusion_cases():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    predictions = np.array([1, 1, 0, 0, 0, 1, 0, 0])
    # tp=2 fp=1 fn=2 tn=3: F1 = 4 / 7, MCC = (6 - 2) / sqrt(3 * 4 * 4 * 5)
    assert metrics.f1(labels, predictions) == pytest.approx(4 / 7)
    assert metrics.matthews_corrcoef(labels, predictions) == pytest.approx(4 / np.sqrt(240))
    # degenerate cases score 0 (as sklearn), never NaN
    assert metrics.matthews_corrcoef(labels, np.ones_like(labels)) == 0.0
    assert metrics.f1(labels, np.zeros_like(labels)) == 0.0
    assert metrics.pearson([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == 0.0


def test_glue_score_averages_tasks_with_mnli_counted_once():
    results = {
        "cola": {"mcc": 60.0},
        "mrpc": {"f1": 90.0, "accuracy": 86.0},
        "stsb": {"pearson": 88.0, "spearman": 86.0},
        "mnli_matched": {"accuracy": 84.0},
        "mnli_mismatched": {"accuracy": 82.0},
    }
    # task scores: 60, 88, 87, (84 + 82) / 2 = 83
    assert metrics.glue_score(results) == pytest.approx((60 + 88 + 87 + 83) / 4)
    # the ELECTRA paper's dev average: MCC, accuracy, Spearman, MNLI-m
    assert metrics.electra_paper_score({**results, "wnli": {"accuracy": 10.0}}) == pytest.approx(
        (60 + 86 + 86 + 84) / 4
    )


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        metrics.task_metrics("rte", [0, 1, 0], [0, 1])
    with pytest.raises(ValueError, match="no GLUE metrics for 'mnli'"):
        metrics.task_metrics("mnli", [0], [0])


def test_median_seed_and_median_metrics():
    runs = [{"rte": {"accuracy": a}} for a in (60.0, 70.0, 50.0, 65.0, 55.0)]
    assert common.median_metrics(runs) == {"rte": {"accuracy": 60.0}}
    assert common.median_run([60.0, 70.0, 50.0, 65.0, 55.0]) == 0
    assert common.median_run([60.0, 70.0, 50.0, 65.0]) == 0  # the lower of the two middle runs
