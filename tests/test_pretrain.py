"""The jitted, mesh-sharded ELECTRA train step on 8 host CPU devices."""

import re

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import pretrain as recipes
from data_pipelines import pretraining as data
from electra_jax import presets, pretrain

SEQ_LEN, BATCH = 32, 16


def tiny_config(**mesh):
    config = recipes.pretraining_config("tiny")
    config.train.max_seq_length = SEQ_LEN
    config.train.batch_size = BATCH
    config.objective.max_predictions_per_seq = presets.max_predictions_per_seq(0.15, SEQ_LEN)
    config.optim.warmup_steps = 2
    config.optim.learning_rate = 1e-3
    config.train.num_steps = 100
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = (
        mesh.get("data", 1),
        mesh.get("fsdp", 1),
        mesh.get("tensor", 1),
    )
    return config


def batches(config, num):
    it = data.make_synthetic_iterator(
        batch_size=config.train.batch_size, seq_length=SEQ_LEN, vocab_size=config.model.vocab_size, seed=3
    )
    return [next(it) for _ in range(num)]


def run_steps(config, num_steps, devices=None, deterministic=False):
    mesh_devices = jax.devices()[: np.prod([config.mesh.data, config.mesh.fsdp, config.mesh.tensor])]
    trainer = pretrain.make_pretrainer(config, pretrain.sharding.make_mesh(config.mesh, mesh_devices))
    state = pretrain.init_train_state(trainer)
    step = pretrain.jit_train_step(trainer, deterministic=deterministic)
    losses = []
    for batch in batches(config, num_steps):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return trainer, state, np.array(losses)


MESHES = {
    "single": dict(),
    "data8": dict(data=8),
    "dp2_fsdp2_tp2": dict(data=2, fsdp=2, tensor=2),
    "fsdp8": dict(fsdp=8),
}


@pytest.fixture(scope="module")
def mesh_runs():
    return {name: run_steps(tiny_config(**mesh), 3) for name, mesh in MESHES.items()}


@pytest.mark.parametrize("name", ["data8", "dp2_fsdp2_tp2", "fsdp8"])
def test_meshes_give_the_same_training(mesh_runs, name):
    # Sharded reductions sum in a different order: float32 round-off only (~1e-7 relative),
    # which Adam's normalised updates can lift to ~lr * 1e-3 on near-zero gradients.
    _, ref_state, ref_losses = mesh_runs["single"]
    _, state, losses = mesh_runs[name]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    diffs = jax.tree_util.tree_map(
        lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), state.params, ref_state.params
    )
    assert max(jax.tree_util.tree_leaves(diffs)) < 1e-5


def test_params_are_sharded_as_the_rules_say(mesh_runs):
    _, state, _ = mesh_runs["dp2_fsdp2_tp2"]
    layer = state.params["discriminator"]["electra"]["encoder"]["layer_0"]
    assert layer["attention_self"]["query"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert layer["output_dense"]["kernel"].sharding.spec == P("tensor", "fsdp")
    word = state.params["embeddings"]["word_embeddings"]["embedding"]
    assert word.sharding.spec == P("tensor", "fsdp")
    assert word.addressable_shards[0].data.shape == (word.shape[0] // 2, word.shape[1] // 2)
    _, fsdp_state, _ = mesh_runs["fsdp8"]
    kernel = fsdp_state.params["discriminator"]["electra"]["encoder"]["layer_0"]["intermediate_dense"]["kernel"]
    assert kernel.addressable_shards[0].data.shape == (kernel.shape[0] // 8, kernel.shape[1])
    # Adam moments follow their parameter
    mu_leaves = [
        leaf for leaf in jax.tree_util.tree_leaves(fsdp_state.opt_state) if getattr(leaf, "shape", None) == kernel.shape
    ]
    assert mu_leaves and all(leaf.sharding.spec == kernel.sharding.spec for leaf in mu_leaves)


def test_losses_are_finite(mesh_runs):
    _, _, losses = mesh_runs["single"]
    assert np.all(np.isfinite(losses))


def repeated_token_batches(config, num, seed, period=64):
    """A corpus with learnable structure: every real token of a row is the same id (one of
    `period`), so a masked token follows from any other token and a replacement stands out."""
    rng = np.random.default_rng(seed)
    first_regular = max(config.objective.special_token_ids) + 1
    half = SEQ_LEN // 2
    for _ in range(num):
        row_ids = first_regular + rng.integers(0, period, (config.train.batch_size, 1))
        ids = np.repeat(row_ids, SEQ_LEN, axis=1)
        ids[:, 0], ids[:, half], ids[:, -1] = 2, 3, 3  # [CLS] A [SEP] B [SEP]
        types = np.zeros_like(ids)
        types[:, half + 1 :] = 1
        yield {
            "input_ids": ids.astype(np.int32),
            "attention_mask": np.ones_like(ids, np.int32),
            "token_type_ids": types.astype(np.int32),
        }


@pytest.mark.slow
def test_tiny_model_learns_a_structured_corpus():
    config = tiny_config()
    config.train.num_steps = 600
    config.optim.warmup_steps = 60
    trainer = pretrain.make_pretrainer(config, pretrain.sharding.make_mesh(config.mesh, jax.devices()[:1]))
    state = pretrain.init_train_state(trainer)
    step = pretrain.jit_train_step(trainer)
    for batch in repeated_token_batches(config, config.train.num_steps, seed=0):
        state, _ = step(state, batch)
    held_out = list(repeated_token_batches(config, 4, seed=1))
    metrics = pretrain.evaluate(trainer, state, held_out, eval_seed=7)
    print(f"after {config.train.num_steps} steps:", metrics)
    # Chance for the generator is 1/64 (one of 64 ids); the all-"original" discriminator
    # scores 1 - replaced_fraction. Seen on a CPU over 5 train seeds: at 300 steps the MLM
    # accuracy still ranged 0.13-0.32 (the knee: the discriminator's gradient through the
    # shared embeddings wins first); at 600 steps MLM 0.71-0.98, discriminator >= 0.988 vs
    # a baseline of ~0.89.
    assert metrics["mlm_accuracy"] > 0.4
    assert metrics["disc_accuracy"] > 1 - metrics["replaced_fraction"] + 0.05


def test_each_held_out_batch_gets_its_own_fixed_masking_draw():
    """The held-out corruption is a function of (eval seed, batch index) alone: repeatable,
    different from batch to batch (one draw repeated over 20 batches scored 2.4 points of
    MLM accuracy apart between eval seeds), and blind to the training seed."""
    config = tiny_config()
    batch = batches(config, 1)[0]

    def positions(seed, index):
        return np.asarray(pretrain.eval_inputs(config, batch, seed, index)["masked_positions"])

    first = positions(0, 0)
    np.testing.assert_array_equal(positions(0, 0), first)
    assert not np.array_equal(positions(0, 1), first)  # the same text, as the next batch
    assert not np.array_equal(positions(1, 0), first)
    config.train.seed = 5
    np.testing.assert_array_equal(positions(0, 0), first)


def test_gradient_accumulation_matches_full_batch():
    full = tiny_config()
    accumulated = tiny_config()
    accumulated.train.grad_accum_steps = 4
    _, full_state, full_losses = run_steps(full, 2, deterministic=True)
    _, acc_state, acc_losses = run_steps(accumulated, 2, deterministic=True)
    np.testing.assert_allclose(acc_losses, full_losses, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(acc_state.params), jax.tree_util.tree_leaves(full_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_resumed_steps_replay_bit_exactly():
    config = tiny_config(data=2)
    trainer, straight, _ = run_steps(config, 4)
    step = pretrain.jit_train_step(trainer)
    state = pretrain.init_train_state(trainer)
    feed = batches(config, 4)
    for batch in feed[:2]:
        state, _ = step(state, batch)
    saved = jax.device_get(state)  # what a checkpoint holds
    state = jax.device_put(saved, trainer.state_sharding)
    for batch in feed[2:]:
        state, _ = step(state, batch)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(straight)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_batch_that_does_not_split_over_the_mesh_is_refused():
    config = tiny_config(data=8)
    config.train.batch_size = 12
    with pytest.raises(ValueError, match="train.batch_size=12 does not divide over the mesh.s 8 .*multiple of 8"):
        pretrain.make_pretrainer(config, pretrain.sharding.make_mesh(config.mesh))
    # The same check when the trainer builds its own mesh (the CLI's path).
    with pytest.raises(ValueError, match="train.batch_size=12 does not divide over the mesh.s 8"):
        pretrain.make_pretrainer(config)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("train.batch_size", -4, "train.batch_size=-4; it must be >= 1"),
        ("train.batch_size", 0, "train.batch_size=0; it must be >= 1"),
        ("train.num_steps", -1, "train.num_steps=-1; it must be >= 0"),
        ("model.dtype", "foo", "dtype='foo'; choose one of"),
        ("model.generator_hidden_fraction", 0.0, "model.generator_hidden_fraction=0.0; it must be > 0.0"),
        ("model.hidden_dropout", 1.5, "model.hidden_dropout=1.5; it must be in [0.0, 0.9]"),
        ("objective.disc_weight", -5.0, "objective.disc_weight=-5.0; it must be >= 0.0"),
        ("objective.temperature", 0.0, "objective.temperature=0.0; it must be > 0.0 (--config.objective.temperature)"),
    ],
)
def test_bad_numbers_and_dtypes_are_refused_by_name(field, value, message):
    config = tiny_config(data=8)
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        pretrain.make_pretrainer(config)


def test_padded_vocabulary_rows_are_never_used_in_training():
    # 8000 tokens in a table of 8064 rows (vocab_pad_multiple=128), vocab sharded over
    # tensor=2. No weight decay, so a row or bias entry with zero gradient stays exactly as
    # initialised (Adam's update is 0 / (0 + eps)): a sampled padding id would be looked up
    # by the discriminator and get a gradient, a padding logit with probability > 0 would
    # give the bias one.
    config = tiny_config(tensor=2)
    config.model.vocab_size, config.model.vocab_pad_multiple = 8000, 128
    config.optim.weight_decay = 0.0
    trainer = pretrain.make_pretrainer(config, pretrain.sharding.make_mesh(config.mesh, jax.devices()[:2]))
    state = pretrain.init_train_state(trainer)
    before = jax.device_get(state.params)
    step = pretrain.jit_train_step(trainer)
    for batch in batches(config, 3):
        state, metrics = step(state, batch)
        assert np.isfinite(float(metrics["loss"]))
    after = jax.device_get(state.params)
    word_before, word_after = (p["embeddings"]["word_embeddings"]["embedding"] for p in (before, after))
    bias_before, bias_after = (p["generator"]["generator_lm_head"]["bias"] for p in (before, after))
    assert word_after.shape == (8064, config.model.embedding_size) and bias_after.shape == (8064,)
    np.testing.assert_array_equal(word_after[8000:], word_before[8000:])
    np.testing.assert_array_equal(bias_after[8000:], bias_before[8000:])
    assert np.all(bias_after[:8000] != bias_before[:8000])  # every real column learned


def test_a_vocabulary_that_does_not_split_over_tensor_is_refused_until_padded():
    config = tiny_config(tensor=4)
    config.model.vocab_size = 8190  # 8190 = 2 x 4095: not a multiple of 4
    mesh = pretrain.sharding.make_mesh(config.mesh, jax.devices()[:4])
    with pytest.raises(
        ValueError,
        match=r"\['embeddings'\]\['word_embeddings'\]\['embedding'\] "
        r"\(8190, 128\): 8190 over tensor=4.*vocab_pad_multiple",
    ):
        pretrain.make_pretrainer(config, mesh)
    config.model.vocab_pad_multiple = 128
    trainer = pretrain.make_pretrainer(config, mesh)
    word = trainer.state_sharding.params["embeddings"]["word_embeddings"]["embedding"]
    assert word.shard_shape((8192, 128)) == (2048, 128)


def test_mlm_only_step_trains_one_masked_lm_whose_loss_matches_numpy():
    """objective.kind='mlm' (the BERT-style baseline): one masked LM at the discriminator's
    size, no discriminator; its loss is the cross-entropy at the masked positions."""
    import scipy.special

    from electra_jax import model

    config = tiny_config()
    config.objective.kind = "mlm"
    trainer = pretrain.make_pretrainer(config, pretrain.sharding.make_mesh(config.mesh, jax.devices()[:1]))
    state = pretrain.init_train_state(trainer)
    assert sorted(state.params) == ["embeddings", "generator"]
    params = jax.device_get(state.params)
    layer = params["generator"]["electra"]["encoder"]["layer_0"]
    assert layer["intermediate_dense"]["kernel"].shape == (128, 512)  # the discriminator's width
    batch = batches(config, 1)[0]
    _, metrics = pretrain.jit_train_step(trainer, deterministic=True)(state, batch)
    assert "disc_loss" not in metrics and "disc_auc" not in metrics

    masked = pretrain.mask_batch(config, batch, pretrain.step_rngs(config.train.seed, 0)["mask"])
    standalone = model.split_pretraining_params(params)["generator"]
    logits = np.asarray(
        model.Generator(trainer.net.generator_config).apply(
            {"params": standalone},
            masked.masked_input_ids,
            batch["attention_mask"],
            batch["token_type_ids"],
            masked_positions=masked.masked_positions,
        ),
        np.float64,
    )
    log_probs = scipy.special.log_softmax(logits, -1)
    nll = -np.take_along_axis(log_probs, np.asarray(masked.masked_ids)[..., None], -1)[..., 0]
    weights = np.asarray(masked.masked_weights)
    expected = (nll * weights).sum() / weights.sum()
    np.testing.assert_allclose(float(metrics["mlm_loss"]), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)  # no disc term


def test_unknown_objective_is_named():
    config = tiny_config()
    config.objective.kind = "bert"
    with pytest.raises(ValueError, match="objective.kind='bert'; choose one of"):
        pretrain.make_pretrainer(config, pretrain.sharding.make_mesh(config.mesh, jax.devices()[:1]))


@pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 (host CPU) devices")
def test_lamb_trains_the_pretraining_step_with_fsdp_sharded_state():
    config = tiny_config(fsdp=2)
    config.optim.optimizer = "lamb"
    _, state, losses = run_steps(config, 3)
    _, adamw_state, adamw_losses = run_steps(tiny_config(fsdp=2), 3)
    assert np.all(np.isfinite(losses)) and losses[0] == adamw_losses[0]  # same start, same batch
    kernel = state.params["discriminator"]["electra"]["encoder"]["layer_0"]["output_dense"]["kernel"]
    assert not kernel.sharding.is_fully_replicated  # the update ran on fsdp shards
    adamw_kernel = adamw_state.params["discriminator"]["electra"]["encoder"]["layer_0"]["output_dense"]["kernel"]
    assert not np.allclose(np.asarray(kernel), np.asarray(adamw_kernel))  # the trust ratio changed the steps


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("objective.kind", "bert", r"objective.kind='bert'; choose one of \['electra', 'mlm'\]"),
        ("objective.sampler", "top_k", r"objective.sampler='top_k'; choose one of \('gumbel', 'inverse_cdf'\)"),
        ("optim.learning_rate", -1.0, r"optim.learning_rate=-1.0; it must be >= 0.0"),
        ("data.source", "parquet", r"data.source='parquet'; choose one of \['default', 'synthetic', 'tfrecord'\]"),
        ("train.max_seq_length", 1024, "train.max_seq_length=1024 exceeds model.max_position_embeddings=512"),
    ],
)
def test_a_config_that_cannot_run_is_refused_before_its_workdir_exists(tmp_path, key, value, message):
    config = tiny_config()
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=message):
        pretrain.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
