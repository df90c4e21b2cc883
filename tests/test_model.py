"""The pretraining model: one embedding table shared by generator and discriminator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pretrain as recipes
from electra_jax import model


@pytest.fixture(scope="module")
def tiny_pretraining():
    gen_cfg, disc_cfg = model.configs_from_dict(recipes.model_config("tiny"))
    net = model.ElectraPretrainingModel(gen_cfg, disc_cfg)
    ids = jnp.arange(2 * 12, dtype=jnp.int32).reshape(2, 12) % 50 + 5
    ones = jnp.ones_like(ids)
    positions = jnp.array([[1, 4], [2, 7]])
    params = jax.jit(lambda: net.init(jax.random.PRNGKey(0), ids, ones, ones * 0, positions))()
    return net, model.nn.meta.unbox(params["params"]), (ids, ones, ones * 0, positions)


def test_embeddings_are_stored_once(tiny_pretraining):
    _, params, _ = tiny_pretraining
    paths = ["/".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    word_tables = [p for p in paths if "word_embeddings" in p]
    assert word_tables == ["embeddings/word_embeddings/embedding"]
    assert not any(p.startswith(("generator/electra/embeddings/", "discriminator/electra/embeddings/")) for p in paths)


@pytest.mark.parametrize("network", ["generate", "discriminate"])
def test_gradient_from_either_network_reaches_shared_embeddings(tiny_pretraining, network):
    net, params, (ids, mask, types, positions) = tiny_pretraining

    def loss(p):
        if network == "generate":
            out = net.apply({"params": p}, ids, mask, types, positions, method=net.generate)
        else:
            out = net.apply({"params": p}, ids, mask, types, method=net.discriminate)
        return jnp.sum(out**2)

    grads = jax.grad(loss)(params)
    assert float(jnp.abs(grads["embeddings"]["word_embeddings"]["embedding"]).sum()) > 0
    other = "discriminator" if network == "generate" else "generator"
    assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree_util.tree_leaves(grads[other]))


def test_split_params_run_standalone_networks(tiny_pretraining):
    net, params, (ids, mask, types, positions) = tiny_pretraining
    split = model.split_pretraining_params(params)
    gen_params, disc_params = split["generator"], split["discriminator"]
    joint = net.apply({"params": params}, ids, mask, types, method=net.discriminate)
    alone = model.Discriminator(net.discriminator_config).apply({"params": disc_params}, ids, mask, types)
    np.testing.assert_array_equal(joint, alone)
    joint_gen = net.apply({"params": params}, ids, mask, types, positions, method=net.generate)
    alone_gen = model.Generator(net.generator_config).apply(
        {"params": gen_params}, ids, mask, types, masked_positions=positions
    )
    np.testing.assert_array_equal(joint_gen, alone_gen)


def test_bad_head_count_is_refused():
    with pytest.raises(ValueError, match="hidden_size=100 is not divisible by num_heads=3"):
        model.ElectraConfig(hidden_size=100, num_heads=3)


def test_pallas_tpu_flash_attention_equals_xla_attention_on_real_tokens():
    # The TPU kernel run in Pallas' interpreter on the CPU: the same context for every real
    # token, padding included in the batch (a padded query's output is never used).
    import dataclasses

    from jax.experimental.pallas import tpu as pltpu

    cfg = model.ElectraConfig(
        vocab_size=64, hidden_size=128, embedding_size=128, num_layers=1, num_heads=2,
        intermediate_size=128, attention_dropout=0.0, hidden_dropout=0.0, max_position_embeddings=128,
    )  # fmt: skip
    hidden = jax.random.normal(jax.random.PRNGKey(0), (2, 128, 128))
    mask = np.ones((2, 128), np.int32)
    mask[1, 100:] = 0
    params = model.SelfAttention(cfg).init(jax.random.PRNGKey(1), hidden, mask, True)
    xla = model.SelfAttention(cfg).apply(params, hidden, mask, True)
    with pltpu.force_tpu_interpret_mode():
        flash = model.SelfAttention(dataclasses.replace(cfg, attention_impl="pallas_tpu")).apply(
            params, hidden, mask, True
        )
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(flash)[real], np.asarray(xla)[real], atol=1e-5)
    with pytest.raises(ValueError, match=r"attention_impl='pallas_tpu' .* set attention_dropout=0 \(it is 0.1\)"):
        dataclasses.replace(cfg, attention_impl="pallas_tpu", attention_dropout=0.1)
