"""Fine-tuning on a device mesh: 8 CPU devices (data x fsdp) train as one device does on the
same batches, and the parameters and Adam moments are sharded as the logical-axis rules say."""

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from electra_jax import heads, model, optim
from electra_jax.finetune import classify, common

STEPS, BATCH, SEQ = 4, 16, 12


def _config(data: int, fsdp: int) -> ml_collections.ConfigDict:
    config = common.base_config()
    config.update(dict(batch_size=BATCH, eval_batch_size=BATCH, max_seq_length=SEQ, dropout=0.0))
    config.mesh.update(dict(data=data, fsdp=fsdp))
    return config


def _batches(vocab_size: int):
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        ids = rng.integers(5, vocab_size, (BATCH, SEQ), dtype=np.int32)
        yield {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids),
            "labels": rng.integers(0, 3, (BATCH,), dtype=np.int32),
        }


def _train(config, net, devices):
    placement = common.make_placement(config, net, devices)
    hyper = {"learning_rate": 1e-3, "layerwise_lr_decay": 0.8}
    tx, schedule = common.make_optimizer(config, hyper, net.config.num_layers, STEPS)
    step = common.make_train_step(net, classify.classification_loss, tx, schedule, placement)
    params = model.init_params(net, jax.random.PRNGKey(0), SEQ)
    state = jax.device_put(optim.TrainState.create(params, tx), placement.state_sharding(tx))
    losses = []
    for batch in _batches(net.config.vocab_size):
        state, metrics = step(state, batch, jax.random.PRNGKey(1))
        losses.append(float(metrics["loss"]))
    return placement, state, losses


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (host CPU) devices")
def test_eight_devices_match_one_and_shard_as_the_rules_say():
    cfg = model.ElectraConfig(
        vocab_size=64,
        embedding_size=16,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    net = heads.SequenceClassifier(cfg, 3)
    _, one_state, one_losses = _train(_config(data=1, fsdp=1), net, jax.devices()[:1])
    placement, state, losses = _train(_config(data=4, fsdp=2), net, jax.devices())
    np.testing.assert_allclose(losses, one_losses, rtol=1e-5)
    assert losses[-1] != losses[0]  # it trained
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
        jax.device_get(state.params),
        jax.device_get(one_state.params),
    )

    # every parameter and both Adam moments carry the sharding the rules give it, and the
    # fsdp axis really splits some of them (the embeddings' "embed" axis among them)
    expected = placement.params_sharding
    jax.tree_util.tree_map(
        lambda leaf, sharding: (
            (leaf.sharding.spec == sharding.spec) or pytest.fail(f"{leaf.sharding.spec} != {sharding.spec}")
        ),
        state.params,
        expected,
    )
    word_embeddings = state.params["electra"]["embeddings"]["word_embeddings"]["embedding"]
    assert tuple(word_embeddings.sharding.spec) == ("tensor", "fsdp")  # (vocab, embed) by the rules
    assert word_embeddings.addressable_shards[0].data.shape[1] == cfg.embedding_size // 2
    moments = [
        leaf
        for leaf in jax.tree_util.tree_leaves(state.opt_state)
        if getattr(leaf, "shape", ()) == word_embeddings.shape
    ]
    assert moments and all(m.sharding.spec == word_embeddings.sharding.spec for m in moments)
    assert state.step.sharding.spec == PartitionSpec()


def test_a_batch_that_does_not_split_over_the_mesh_is_refused():
    cfg = model.ElectraConfig(
        vocab_size=64, embedding_size=16, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    )
    config = _config(data=-1, fsdp=1)
    config.eval_batch_size = jax.device_count() + 1
    with pytest.raises(ValueError, match=rf"eval_batch_size={jax.device_count() + 1} does not divide"):
        common.make_placement(config, heads.SequenceClassifier(cfg, 2))
