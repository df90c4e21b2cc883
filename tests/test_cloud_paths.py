"""Workdirs on gs://: every file the run writes itself (config.json, metrics.jsonl, the
--fresh move-aside, synthetic iterator state) goes through etils.epath, never a local-only
call. etils' own test hook routes the gs:// backend to a local folder here; a local-only
call (open, os.makedirs, ...) would instead receive the raw gs:// string, which the guard
below turns into a failure (unguarded, it would silently create a local ./gs: folder).

Not covered here (no GCS offline): orbax/tensorstore writing the arrays to GCS, the
TensorFlow iterator checkpoint and TensorBoard through TensorFlow's GCS filesystem.
"""

import builtins
import json
import os

import pytest
from etils import epath
from etils.epath import testing as epath_testing

from configs import pretrain as recipes
from data_pipelines import pretraining as data
from electra_jax import checkpoints

WORKDIR = "gs://my-bucket/runs/base"


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    """gs://BUCKET/... lives in tmp_path/gcs/BUCKET/...; local calls on gs:// paths fail."""
    root = str(tmp_path / "gcs")

    def local(path):
        path = os.fspath(path)
        return os.path.join(root, path[len("gs://") :]) if path.startswith("gs://") else path

    def translated(fn, path, *args, **kwargs):
        return fn(local(path), *args, **kwargs)

    def translated_two(fn, path, dst, *args, **kwargs):
        return fn(local(path), local(dst), *args, **kwargs)

    def glob(fn, pattern):
        return ["gs://" + os.path.relpath(p, root) for p in fn(local(pattern))]

    def refuse_uri(fn):
        def guarded(path, *args, **kwargs):
            if "gs:/" in os.fspath(path):
                raise AssertionError(f"local-only {fn.__name__}() got {path}")
            return fn(path, *args, **kwargs)

        return guarded

    for module, name in [
        (builtins, "open"),
        (os, "makedirs"),
        (os, "replace"),
        (os, "listdir"),
        (os.path, "exists"),
        (os.path, "isdir"),
    ]:
        monkeypatch.setattr(module, name, refuse_uri(getattr(module, name)))
    monkeypatch.chdir(tmp_path)
    # mock_epath swaps the per-scheme backends, but with tensorflow installed epath picks its
    # tf backend for URIs before looking at them; make it look.
    monkeypatch.setattr(epath.gpath, "_is_tf_installed", lambda: False)
    mocks = {
        name: translated
        for name in ("open", "exists", "isdir", "listdir", "makedirs", "mkdir", "remove", "rmtree", "stat", "walk")
    }
    with epath_testing.mock_epath(
        **mocks, glob=glob, rename=translated_two, replace=translated_two, copy=translated_two
    ):
        yield local
    assert not os.path.exists(tmp_path / "gs:"), "a gs:// path was written as a local folder"


def config_json(hidden_size=128):
    config = recipes.pretraining_config("tiny")
    config.model.hidden_size = hidden_size
    return config.to_json_best_effort(sort_keys=True)


def test_run_config_is_written_and_checked_on_gcs(fake_gcs):
    checkpoints.check_run_config(WORKDIR, config_json(), fresh=False)
    with open(fake_gcs(f"{WORKDIR}/config.json")) as f:
        assert json.load(f)["model"]["hidden_size"] == 128
    assert checkpoints.load_run_config(WORKDIR).model.hidden_size == 128
    assert checkpoints.absolute_workdir(WORKDIR) == WORKDIR
    # a run with another model in a workdir with checkpoints: refused, then moved aside
    os.makedirs(fake_gcs(f"{WORKDIR}/checkpoints/3"))
    with pytest.raises(ValueError, match="model.hidden_size: saved 128 vs 256"):
        checkpoints.check_run_config(WORKDIR, config_json(256), fresh=False)
    checkpoints.check_run_config(WORKDIR, config_json(256), fresh=True)
    [aside] = [p for p in epath.Path(WORKDIR).iterdir() if p.name.startswith("replaced-")]
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoints", "config.json"]
    assert checkpoints.load_run_config(WORKDIR).model.hidden_size == 256
    assert checkpoints.load_run_config(os.fspath(aside)).model.hidden_size == 128


def test_metrics_are_appended_on_gcs(fake_gcs):
    from electra_jax import metric_writer

    epath.Path(WORKDIR).mkdir(parents=True)  # as train_and_evaluate does first
    for step in (1, 2):  # two writers, as a resumed run appends to the first run's file
        writer = metric_writer.MetricWriter(WORKDIR, tensorboard=False, start_step=step - 1)
        writer.write(step, "train", {"loss": 1.0 / step})
        writer.close()
    with open(fake_gcs(f"{WORKDIR}/metrics.jsonl")) as f:
        assert [json.loads(line) for line in f] == [
            {"step": 1, "split": "train", "loss": 1.0},
            {"step": 2, "split": "train", "loss": 0.5},
        ]


def test_synthetic_iterator_state_round_trips_on_gcs(fake_gcs):
    kwargs = dict(batch_size=2, seq_length=8, vocab_size=50, seed=3, process_index=1, process_count=2)
    it = data.make_synthetic_iterator(**kwargs)
    next(it), next(it)
    it.save(f"{WORKDIR}/data_state/2")
    expected = next(it)
    resumed = data.make_synthetic_iterator(**kwargs)
    resumed.restore(f"{WORKDIR}/data_state/2")
    assert all((resumed.__next__()[k] == expected[k]).all() for k in expected)
    assert os.listdir(fake_gcs(f"{WORKDIR}/data_state/2")) == ["data_iterator.process_00001-of-00002.json"]


def test_the_guard_catches_a_local_only_call(fake_gcs):
    with pytest.raises(AssertionError, match="local-only open"):
        open(f"{WORKDIR}/metrics.jsonl", "a")
