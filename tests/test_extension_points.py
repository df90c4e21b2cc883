"""Where a new piece goes (README): a toy objective, data source and fine-tuning task, each
added in one place (its code plus one registry line), run through the real pretraining and
fine-tuning programs. This module is itself the toy task's module (`run`, `report`)."""

import json
import os
import types

import helpers
import numpy as np
import pytest

from configs import pretrain as recipes
from data_pipelines import input_pipeline
from data_pipelines.pretraining import FEATURE_KEYS
from electra_jax import objective, pretrain
from electra_jax.finetune import __main__ as finetune_cli
from electra_jax.finetune import common

# ---------------------------------------------------------------------------- pretraining


def double_mlm_objective(networks, batch, totals, disc_weight):
    """A toy objective: the generator's masked-LM loss, counted twice."""
    loss, sums = objective.mlm_objective(networks, batch, totals, disc_weight)
    return 2 * loss, sums


class ToyIterator:
    """A toy data source: batch k of random regular tokens between [CLS] and [SEP], from
    numpy's generator seeded with k; resumable through its step."""

    def __init__(self, config):
        self.shape = (config.train.batch_size, config.train.max_seq_length)
        self.vocab_size = config.model.vocab_size
        self.step = 0

    def __iter__(self):
        return self

    def __next__(self):
        input_ids = np.random.default_rng(self.step).integers(5, self.vocab_size, self.shape).astype(np.int32)
        input_ids[:, 0], input_ids[:, -1] = 2, 3
        self.step += 1
        return {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids), "token_type_ids": 0 * input_ids}

    def save(self, directory):
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "toy_iterator.json")
        with open(path, "w") as f:
            json.dump({"step": self.step}, f)
        return path

    def restore(self, directory):
        with open(os.path.join(directory, "toy_iterator.json")) as f:
            self.step = json.load(f)["step"]


def test_a_toy_objective_and_a_toy_data_source_each_plug_in_with_one_registry_line(tmp_path, monkeypatch):
    monkeypatch.setitem(objective.OBJECTIVES, "double_mlm", objective.Objective(("generator",), double_mlm_objective))
    monkeypatch.setitem(
        input_pipeline.SOURCES, "toy", input_pipeline.Source(ToyIterator, ToyIterator, lambda config, workdir: config)
    )
    config = recipes.pretraining_config("tiny")
    config.objective.kind = "double_mlm"
    config.data.source = "toy"
    config.train.update(num_steps=2, batch_size=8, max_seq_length=16, log_every=1, eval_every=2, eval_steps=1)
    config.train.tensorboard = False
    config.objective.max_predictions_per_seq = 3
    result = pretrain.train_and_evaluate(config, str(tmp_path / "run"))
    assert result["step"] == 2
    assert result["train"]["loss"] == pytest.approx(2 * result["train"]["mlm_loss"], rel=1e-6)
    assert "disc_loss" not in result["train"] and "mlm_accuracy" in result["eval"]  # the generator alone
    with pytest.raises(ValueError, match=r"objective.kind='nope'; choose one of \[.*'double_mlm'"):
        objective.named("nope")


# ---------------------------------------------------------------------------- fine-tuning

WORDS = "one two three four five".split()
TEXTS = ["one", "one two", "one two three", "two", "three four", "five", "four five one", "two three"]


def run(config, workdir):
    """The toy task: is the number of words in a text odd? Trained and scored on TEXTS."""
    pretrained = common.open_run(config, workdir)
    features = common.encode_text_pairs(
        pretrained.tokenizer, [(text, None) for text in TEXTS], config.max_seq_length, "head", "toy"
    )
    features["labels"] = np.array([len(text.split()) % 2 for text in TEXTS], np.int32)

    def accuracy(predict, params):
        return {"accuracy": 100 * float(np.mean(np.argmax(predict(params, features), -1) == features["labels"]))}

    setup = common.Setup(
        name="toy",
        net=common.sequence_classifier(config, pretrained, 2),
        loss=lambda logits, batch: common.cross_entropy(logits, batch["labels"]),
        train=features,
        batch_keys=(*FEATURE_KEYS, "labels"),
        default_num_epochs=2.0,
        evaluate=accuracy,
        dev_score=lambda dev: dev["accuracy"],
        after_run=lambda run_dir, params, predict: {},
        out_dir=workdir,
    )
    results, _ = common.run_seeds(config, pretrained, setup)
    return results


def report(config, workdir):
    return common.json_report(run(config, workdir), ("median", "hyperparameters"))


def test_a_toy_fine_tuning_task_plugs_in_with_one_registry_line(tmp_path, monkeypatch, capsys):
    init = str(tmp_path / "init")
    os.makedirs(init)
    helpers.write_hf_model(init, WORDS, seed=0)
    monkeypatch.setitem(finetune_cli.TASKS, "toy", __name__)
    config = common.base_config()
    common.add_classifier_head(config)
    config.update(program="toy", init=init, batch_size=8, eval_batch_size=8, max_seq_length=8, save_models=False)
    config.update(optim=dict(learning_rate=1e-3, layerwise_lr_decay=1.0), tensorboard=False, seeds=2)
    flag = types.SimpleNamespace
    finetune_cli.main(["finetune"], flag(value=config), flag(value=str(tmp_path / "out")), flag(value=False))
    printed = json.loads(capsys.readouterr().out)
    assert printed["hyperparameters"]["num_train_steps"] == 2  # 8 texts x 2 epochs / batch 8
    assert set(printed["median"]) == {"accuracy"}
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "seed_0", "seed_1"]
    with pytest.raises(Exception, match=r"config.program='nope'; a fine-tuning config names one of \[.*'toy'"):
        config.program = "nope"
        finetune_cli.main(["finetune"], flag(value=config), flag(value=str(tmp_path / "out")), flag(value=False))
