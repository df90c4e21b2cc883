"""config.json's paths: inside the workdir relative to it, elsewhere absolute."""

import os

import pytest

from electra_jax import run_paths


@pytest.fixture
def start(tmp_path, monkeypatch):
    """A quick-start-like layout: START/runs/w/default_data/{spm.model,shards/} and START/heldout/."""
    data = tmp_path / "start" / "runs" / "w" / "default_data"
    (data / "shards").mkdir(parents=True)
    (data / "spm.model").write_text("")
    (data / "shards" / "train-00000.tfrecord").write_text("")
    (tmp_path / "start" / "heldout").mkdir()
    (tmp_path / "start" / "heldout" / "eval-00000.tfrecord").write_text("")
    monkeypatch.chdir(tmp_path / "start")
    return tmp_path / "start"


AS_GIVEN = {
    "data": {
        "train_files": "runs/w/default_data/shards/train-*.tfrecord",
        "eval_files": "heldout/eval-*.tfrecord",
        "tokenizer": "runs/w/default_data/spm.model",
        "source": "tfrecord",
    },
    "init": {"workdir": "", "discriminator": "gs://bucket/electra-small"},
    "model": {"hidden_size": 128},
}


def test_stored_paths_are_workdir_relative_inside_it_and_absolute_outside(start):
    stored = run_paths.stored(run_paths.absolute(AS_GIVEN), "runs/w")
    assert stored["data"] == {
        "train_files": "default_data/shards/train-*.tfrecord",
        "eval_files": str(start / "heldout" / "eval-*.tfrecord"),
        "tokenizer": "default_data/spm.model",
        "source": "tfrecord",
    }
    assert stored["init"]["discriminator"] == "gs://bucket/electra-small"  # URLs as given
    assert stored["model"] == AS_GIVEN["model"]  # nothing else touched
    # Read back from anywhere: all absolute, inside the workdir it was read from.
    os.chdir("/")
    back = run_paths.resolved(stored, str(start / "runs" / "w"))
    assert back["data"]["tokenizer"] == str(start / "runs" / "w" / "default_data" / "spm.model")
    assert back["data"]["eval_files"] == str(start / "heldout" / "eval-*.tfrecord")


def test_a_run_moved_aside_points_back_at_the_data_that_stayed(start):
    stored = run_paths.stored(run_paths.absolute(AS_GIVEN), "runs/w")
    aside = run_paths.stored(run_paths.resolved(stored, "runs/w"), "runs/w/replaced-1", within="runs/w")
    assert aside["data"]["tokenizer"] == "../default_data/spm.model"
    (start / "runs" / "w" / "replaced-1").mkdir()
    assert run_paths.resolved(aside, "runs/w/replaced-1")["data"]["tokenizer"] == str(
        start / "runs" / "w" / "default_data" / "spm.model"
    )


def test_a_fine_tuning_workdir_given_to_a_pretraining_program_is_named(tmp_path):
    # evaluate, export and train raised an AttributeError in the path mapping.
    from configs import glue as glue_configs
    from electra_jax import checkpoints
    from electra_jax.finetune import __main__ as finetune_cli

    finetune_cli.claim_workdir(glue_configs.get_config(), str(tmp_path), fresh=False)
    with pytest.raises(ValueError, match=r"config.json is the config of a fine-tuning run \(program='glue'\): train"):
        checkpoints.load_run_config(str(tmp_path))
