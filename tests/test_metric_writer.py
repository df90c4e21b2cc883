"""metrics.jsonl of a resumed run: the rows of replayed steps are dropped, not doubled."""

import json

from electra_jax import metric_writer


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_a_resumed_run_replaces_the_rows_of_the_steps_it_replays(tmp_path):
    first = metric_writer.MetricWriter(str(tmp_path), tensorboard=False, start_step=0)
    for step in range(1, 6):
        first.write(step, "train", {"loss": 10.0 - step})
    first.write(4, "eval", {"mlm_accuracy": 0.4})
    first.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "split": "tr')  # the line a kill cut short
    # The checkpoint of step 3 is the newest: the run resumes there and replays steps 4-6.
    resumed = metric_writer.MetricWriter(str(tmp_path), tensorboard=False, start_step=3)
    resumed.write(4, "train", {"loss": 5.5})
    resumed.close()
    assert [(r["step"], r["split"], r.get("loss")) for r in rows(tmp_path / "metrics.jsonl")] == [
        (1, "train", 9.0),
        (2, "train", 8.0),
        (3, "train", 7.0),
        (4, "train", 5.5),
    ]
    # A new run (start_step 0) starts the file afresh.
    metric_writer.MetricWriter(str(tmp_path), tensorboard=False, start_step=0).close()
    assert rows(tmp_path / "metrics.jsonl") == []


def test_nested_metrics_become_slash_named_scalars():
    assert metric_writer.flat_scalars({"mnli_m": {"accuracy": 80}, "loss": 0.5}) == {
        "mnli_m/accuracy": 80.0,
        "loss": 0.5,
    }
