"""Pretraining that starts from other weights (config.init): transformers directories that
transformers itself builds (random weights, odd sizes, a 1.0 and a 0.25 generator), an
earlier electra-jax run (phase 2 at a longer length), and what is refused."""

import json
import os
import shutil

import helpers
import jax
import numpy as np
import pytest

from configs import pretrain as recipes
from data_pipelines import input_pipeline, prepare_data
from electra_jax import export, init_from, presets, pretrain, sharding

pytestmark = pytest.mark.usefixtures("compile_cache")  # conftest: one XLA cache per module

SEQ, BATCH = 32, 8
# An odd discriminator: 3 heads of 16, embeddings 24 projected to 48.
DISC = dict(embedding_size=24, hidden_size=48, num_layers=2, num_heads=3, intermediate_size=96)


def hf_pair(root, vocab_path: str, vocab_size: int, generator_hidden: int, seed: int) -> tuple[str, str]:
    """ElectraForPreTraining + ElectraForMaskedLM with random weights and one set of
    embeddings (copied into both, as google's released pairs), saved by transformers."""
    import torch
    import transformers

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        embedding_size=DISC["embedding_size"],
        num_hidden_layers=DISC["num_layers"],
        max_position_embeddings=64,
        initializer_range=0.2,  # large weights: logits far from uniform, a real comparison
    )
    disc = transformers.ElectraForPreTraining(
        transformers.ElectraConfig(
            **common,
            hidden_size=DISC["hidden_size"],
            num_attention_heads=DISC["num_heads"],
            intermediate_size=DISC["intermediate_size"],
        )
    )
    gen = transformers.ElectraForMaskedLM(
        transformers.ElectraConfig(
            **common,
            hidden_size=generator_hidden,
            num_attention_heads=max(1, generator_hidden // 64),
            intermediate_size=4 * generator_hidden,
        )
    )
    gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    dirs = str(root / "discriminator"), str(root / "generator")
    for network, out in zip((disc, gen), dirs):
        network.eval()
        network.save_pretrained(out, safe_serialization=True)
        shutil.copy(vocab_path, os.path.join(out, "vocab.txt"))
    return dirs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """WordPiece shards at 32 and 64 tokens, built by prepare_data with an existing vocab."""
    root = tmp_path_factory.mktemp("init_data")
    corpus = str(root / "corpus.txt")
    helpers.write_corpus(corpus)
    vocab = str(root / "vocab.txt")
    vocab_size = helpers.write_vocab(vocab, [w.lower() for w in helpers.WORDS] + ["."])
    prepared = {
        seq: prepare_data.prepare_data(
            str(root / f"seq{seq}"),
            inputs=corpus,
            tokenizer=vocab,
            max_seq_length=seq,
            num_shards=2,
            show_progress=False,
        )
        for seq in (SEQ, 2 * SEQ)
    }
    return {"root": root, "vocab": vocab, "vocab_size": vocab_size, "prepared": prepared}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, data):
    """generator fraction -> (discriminator dir, generator dir)."""
    return {
        fraction: hf_pair(
            tmp_path_factory.mktemp(f"hf_{fraction}"),
            data["vocab"],
            data["vocab_size"],
            int(DISC["hidden_size"] * fraction),
            seed=int(fraction * 4),
        )
        for fraction in (1.0, 0.25)
    }


def make_config(data, seq=SEQ, variant="init", **changes):
    config = recipes.pretraining_config("tiny", variant)
    prepared = data["prepared"][seq]
    settings = {
        "train.max_seq_length": seq,
        "train.batch_size": BATCH,
        "train.num_steps": 4,
        "train.log_every": 1,
        "train.eval_every": 0,
        "train.eval_steps": 2,
        "train.checkpoint_every": 2,
        "train.tensorboard": False,
        "objective.max_predictions_per_seq": presets.max_predictions_per_seq(0.15, seq),
        "optim.warmup_steps": 1,
        "data.source": "tfrecord",
        "data.train_files": prepared["train_files"],
        "data.eval_files": prepared["eval_files"],
        "data.shuffle_buffer": 16,
        **changes,
    }
    for key, value in settings.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def test_step_zero_metrics_equal_transformers_on_the_same_masked_batch(data, pairs):
    """The 0.25 generator: held-out MLM and RTD losses before any step, ours vs a
    transformers forward of the source directories on the same masked, corrupted batch."""
    import torch
    import transformers

    disc_dir, gen_dir = pairs[0.25]
    config = init_from.resolve_config(make_config(data, **{"init.discriminator": disc_dir, "init.generator": gen_dir}))
    assert (config.model.hidden_size, config.model.num_heads, config.model.generator_hidden_fraction) == (48, 3, 0.25)
    assert config.data.tokenizer == os.path.join(disc_dir, "vocab.txt")  # the vocabulary came along
    trainer = pretrain.make_pretrainer(config)
    state = pretrain.start_from_source(trainer, pretrain.init_train_state(trainer))
    assert int(state.step) == 0
    batches = list(input_pipeline.eval_batches(config, sharding.batch_sharding(trainer.mesh)))
    ours = pretrain.evaluate(trainer, state, batches, eval_seed=7)

    gen = transformers.ElectraForMaskedLM.from_pretrained(gen_dir).eval()
    disc = transformers.ElectraForPreTraining.from_pretrained(disc_dir).eval()
    mlm_nll = mlm_count = disc_bce = tokens = 0.0
    for index, batch in enumerate(batches):
        inputs = jax.device_get(pretrain.eval_inputs(config, batch, 7, index))
        attention = torch.tensor(np.asarray(inputs["attention_mask"]))
        segments = torch.tensor(np.asarray(inputs["token_type_ids"]))
        with torch.no_grad():
            logits = gen(torch.tensor(np.asarray(inputs["masked_input_ids"])), attention, segments).logits.numpy()
        positions = np.asarray(inputs["masked_positions"])
        at_masks = np.take_along_axis(logits, positions[..., None], axis=1)  # [B, P, V]
        top = at_masks.max(-1, keepdims=True)
        log_probs = at_masks - top - np.log(np.exp(at_masks - top).sum(-1, keepdims=True))
        nll = -np.take_along_axis(log_probs, np.asarray(inputs["masked_ids"])[..., None], axis=-1)[..., 0]
        weights = np.asarray(inputs["masked_weights"])
        mlm_nll += float((nll * weights).sum())
        mlm_count += float(weights.sum())
        corrupted, is_replaced = pretrain.corrupt(config, inputs, jax.numpy.asarray(at_masks))
        with torch.no_grad():
            disc_logits = disc(torch.tensor(np.asarray(corrupted)), attention, segments).logits.numpy()
        labels = np.asarray(is_replaced, np.float64)
        bce = np.logaddexp(0, disc_logits) - labels * disc_logits
        mask = np.asarray(inputs["attention_mask"])
        disc_bce += float((bce * mask).sum())
        tokens += float(mask.sum())
    assert ours["mlm_loss"] == pytest.approx(mlm_nll / mlm_count, rel=1e-4)
    assert ours["disc_loss"] == pytest.approx(disc_bce / tokens, rel=1e-4)
    assert ours["replaced_fraction"] > 0.05  # the corruption compared was not empty


@pytest.fixture(scope="module")
def lr_zero_run(tmp_path_factory, data, pairs):
    """Two optimizer steps at learning rate 0 from the 1.0 pair, through train_and_evaluate."""
    disc_dir, gen_dir = pairs[1.0]
    workdir = str(tmp_path_factory.mktemp("lr_zero"))
    config = make_config(
        data, **{"init.discriminator": disc_dir, "init.generator": gen_dir, "optim.learning_rate": 0.0}
    )
    result = pretrain.train_and_evaluate(config, workdir, stop_at_step=2)
    return {"workdir": workdir, "result": result, "discriminator": disc_dir, "generator": gen_dir}


def assert_holds_source_weights(hf_dir, source_dir) -> None:
    got, want = helpers.read_safetensors(hf_dir), helpers.read_safetensors(source_dir)
    tied = {"generator_lm_head.weight"}  # transformers' tied copy of the word embeddings
    for key in sorted(set(want) - tied):
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"{hf_dir}: {key}")


def test_a_run_at_learning_rate_zero_exports_the_input_weights(tmp_path, lr_zero_run):
    """End to end through train_and_evaluate and export: 2 optimizer steps at lr 0 leave
    every tensor as the directories hold it, and transformers opens the export."""
    import transformers

    workdir = lr_zero_run["workdir"]
    assert lr_zero_run["result"]["step"] == 2 and np.isfinite(lr_zero_run["result"]["train"]["loss"])
    saved = json.loads(open(os.path.join(workdir, "config.json")).read())
    assert saved["init"]["discriminator"] == lr_zero_run["discriminator"]
    assert saved["model"]["generator_hidden_fraction"] == 1.0
    export.export_checkpoint(workdir, str(tmp_path / "hf"))
    for kind in ("discriminator", "generator"):
        assert_holds_source_weights(tmp_path / "hf" / kind, lr_zero_run[kind])
    transformers.ElectraForPreTraining.from_pretrained(str(tmp_path / "hf" / "discriminator"))
    transformers.ElectraForMaskedLM.from_pretrained(str(tmp_path / "hf" / "generator"))


def test_phase_two_at_a_longer_length_starts_from_a_runs_weights_and_resume_wins(tmp_path, data, lr_zero_run):
    """Phase 2 at 64 tokens from the 32-token run above (init.workdir, its own seed):
    after 2 steps at lr 0 its weights are still the source run's, i.e. the transformers
    directories'. Running the same command again resumes instead."""
    phase1, phase2 = lr_zero_run["workdir"], str(tmp_path / "phase2")
    settings = {"init.workdir": phase1, "optim.learning_rate": 0.0, "train.seed": 1}
    pretrain.train_and_evaluate(make_config(data, seq=2 * SEQ, **settings), phase2, stop_at_step=2)
    saved = json.loads(open(os.path.join(phase2, "config.json")).read())
    assert saved["train"]["max_seq_length"] == 64 and saved["data"]["tokenizer"].endswith("vocab.txt")
    export.export_checkpoint(phase2, str(tmp_path / "hf"))
    for kind in ("discriminator", "generator"):
        assert_holds_source_weights(tmp_path / "hf" / kind, lr_zero_run[kind])

    # Again, naming another source: the run resumes at step 2, and config.json keeps its init.
    again = make_config(data, seq=2 * SEQ, **{**settings, "init.workdir": str(tmp_path / "elsewhere")})
    assert pretrain.train_and_evaluate(again, phase2, stop_at_step=3)["step"] == 3
    assert json.loads(open(os.path.join(phase2, "config.json")).read())["init"]["workdir"] == phase1

    too_long = make_config(data, seq=2 * SEQ, **{"init.workdir": phase1, "train.max_seq_length": 128})
    with pytest.raises(ValueError, match="train.max_seq_length=128 exceeds model.max_position_embeddings=64"):
        pretrain.make_pretrainer(init_from.resolve_config(too_long))


def test_discriminator_only_keeps_its_weights_and_starts_a_fresh_generator(data, pairs):
    disc_dir, _ = pairs[1.0]
    config = make_config(
        data,
        **{"init.discriminator": disc_dir, "init.discriminator_only": True, "model.generator_hidden_fraction": 0.5},
    )
    config = init_from.resolve_config(config)
    trainer = pretrain.make_pretrainer(config)
    fresh = jax.device_get(pretrain.init_train_state(trainer).params)
    params, report = init_from.initial_params(config, fresh)
    assert "generator" in report["fresh"]
    assert params["generator"]["electra"]["encoder"]["layer_0"]["output_dense"]["kernel"].shape == (96, 24)
    want = helpers.read_safetensors(disc_dir)
    np.testing.assert_array_equal(
        params["embeddings"]["word_embeddings"]["embedding"], want["electra.embeddings.word_embeddings.weight"]
    )
    np.testing.assert_array_equal(
        params["discriminator"]["electra"]["encoder"]["layer_1"]["output_dense"]["kernel"],
        want["electra.encoder.layer.1.output.dense.weight"].T,
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        ({}, r"model.embedding_size=128 \(the transformers directories .*: 24\), model.hidden_size=128 \(.*: 48\)"),
        ({"init.generator": ""}, "without init.generator; set --config.init.generator=DIR"),
        ({"init.workdir": "somewhere"}, "start from one source"),
        ({"init.step": 3}, "init.step=3 needs init.workdir"),
        ({"data.source": "default"}, "built with the source's vocabulary|prepare_data"),
    ],
)
def test_what_init_cannot_honour_is_refused_by_name(data, pairs, changes, message):
    disc_dir, gen_dir = pairs[1.0]
    config = make_config(data, variant=None, **{"init.discriminator": disc_dir, "init.generator": gen_dir, **changes})
    with pytest.raises(ValueError, match=message):
        init_from.resolve_config(config)


def test_the_init_variant_without_a_source_names_the_unset_fields(data):
    with pytest.raises(ValueError, match="model.vocab_size, model.embedding_size.* unset"):
        init_from.resolve_config(make_config(data))


def test_prepare_data_with_an_existing_vocabulary_records_and_uses_it(data):
    prepared = data["prepared"][SEQ]
    assert prepared["vocab_size"] == data["vocab_size"]
    assert open(prepared["tokenizer"]).read() == open(data["vocab"]).read()
    assert f"--config.model.vocab_size={data['vocab_size']}" in prepared["config_flags"]
