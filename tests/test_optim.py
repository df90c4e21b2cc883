"""electra_jax.optim against hand-computed schedules, a NumPy AdamW written from the
ELECTRA optimizer's update rule, and the `_get_layer_lrs` formula."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import pretrain as recipes
from electra_jax import optim, presets


def _config(**overrides) -> ml_collections.ConfigDict:
    c = presets.optim_config(learning_rate=1e-3)
    c.num_layers = 2
    c.update(overrides)
    return c


def test_warmup_is_given_in_steps_or_as_a_fraction_of_them_never_both():
    _, in_steps = optim.make_optimizer(_config(warmup_steps=10), total_steps=40)
    _, as_fraction = optim.make_optimizer(_config(warmup_fraction=0.25), total_steps=40)
    for step in (0, 5, 10, 20, 39):
        assert float(as_fraction(step)) == float(in_steps(step))
    assert float(in_steps(5)) < float(in_steps(10))  # still warming up at 5
    with pytest.raises(ValueError, match="optim.warmup_steps=10 and optim.warmup_fraction=0.25: give one of them"):
        optim.make_optimizer(_config(warmup_steps=10, warmup_fraction=0.25), total_steps=40)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0),
        (5, 1e-3 * (1 - 5 / 100) * 5 / 10),  # warmup ramp times the decay already under way
        (10, 1e-3 * 0.9),  # end of warmup: the peak is never reached
        (55, 1e-3 * 0.45),
        (100, 0.0),
        (150, 0.0),  # held at the end value past total_steps
    ],
)
def test_linear_schedule_multiplies_warmup_into_decay(step, expected):
    schedule = optim.make_learning_rate_schedule(1e-3, 10, 100)
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    "step, expected",
    [
        (5, ((1e-3 - 1e-4) * 0.95**2 + 1e-4) * 0.5),  # 4.56125e-4
        (50, (1e-3 - 1e-4) * 0.5**2 + 1e-4),  # 3.25e-4
        (100, 1e-4),
        (400, 1e-4),
    ],
)
def test_polynomial_schedule_with_end_lr(step, expected):
    schedule = optim.make_learning_rate_schedule(1e-3, 10, 100, decay="polynomial", end_lr=1e-4, power=2.0)
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-6)


def test_no_warmup_starts_at_peak_and_schedule_jits():
    schedule = optim.make_learning_rate_schedule(2e-4, 0, 1000)
    steps = jnp.array([0, 250, 1000])
    np.testing.assert_allclose(jax.jit(schedule)(steps), [2e-4, 1.5e-4, 0.0], rtol=1e-6)


def test_unknown_decay_is_named():
    with pytest.raises(ValueError, match="'cosine'.*linear"):
        optim.make_learning_rate_schedule(1e-3, 10, 100, decay="cosine")


def _param_tree():
    """HF ELECTRA-style names: embeddings, projection, an unrolled 2-layer encoder, heads."""
    shapes = {
        "embeddings": {"word_embeddings": {"embedding": (6, 4)}, "LayerNorm": {"scale": (4,), "bias": (4,)}},
        "embeddings_project": {"kernel": (4, 4), "bias": (4,)},
        "encoder": {
            f"layer_{i}": {
                "attention_self": {"query": {"kernel": (4, 4), "bias": (4,)}},
                "attention_output_LayerNorm": {"scale": (4,), "bias": (4,)},
                "output": {"dense": {"kernel": (4, 4), "bias": (4,)}},
            }
            for i in range(2)
        },
        "classifier": {"dense": {"kernel": (4, 3), "bias": (3,)}},
        "generator_lm_head": {"bias": (6,)},
    }
    leaves, tree = jax.tree_util.tree_flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    rng = np.random.default_rng(0)
    return jax.tree_util.tree_unflatten(tree, [jnp.asarray(rng.normal(size=s) + 1.0, jnp.float32) for s in leaves])


def _names(tree):
    return {"/".join(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_weight_decay_skips_layernorm_and_biases():
    """One update with zero gradients: Adam's step is 0, so only weight decay moves params."""
    params = _param_tree()
    tx, _ = optim.make_optimizer(_config(), total_steps=100)
    updates, _ = tx.update(jax.tree_util.tree_map(jnp.zeros_like, params), tx.init(params), params)
    moved = {name for name, u in _names(updates).items() if np.any(np.asarray(u) != 0)}
    expected_moved = {
        "embeddings/word_embeddings/embedding",
        "embeddings_project/kernel",
        "encoder/layer_0/attention_self/query/kernel",
        "encoder/layer_0/output/dense/kernel",
        "encoder/layer_1/attention_self/query/kernel",
        "encoder/layer_1/output/dense/kernel",
        "classifier/dense/kernel",
    }
    assert moved == expected_moved
    for name in expected_moved:  # decoupled decay: -lr * wd * param
        np.testing.assert_allclose(_names(updates)[name], -1e-3 * 0.01 * _names(params)[name], rtol=1e-6)


def _numpy_electra_adamw(params, grads_per_step, lr_per_step, c, multipliers=None):
    """clip -> Adam (bias-corrected as optax, or raw moments as the original with
    c.bias_correction False) -> + wd * param (masked) -> [LAMB: * ||param|| / ||update||,
    masked as the decay, as tensorflow-addons' LAMB] -> * layer mult * lr."""
    names = list(params)
    p = {n: np.asarray(params[n], np.float64) for n in names}
    m = {n: np.zeros_like(p[n]) for n in names}
    v = {n: np.zeros_like(p[n]) for n in names}
    for t, (grads, lr) in enumerate(zip(grads_per_step, lr_per_step), start=1):
        norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads.values()))
        scale = min(1.0, c.clip_norm / norm)
        for n in names:
            g = np.asarray(grads[n], np.float64) * scale
            m[n] = c.b1 * m[n] + (1 - c.b1) * g
            v[n] = c.b2 * v[n] + (1 - c.b2) * g * g
            if c.get("bias_correction", True):
                update = (m[n] / (1 - c.b1**t)) / (np.sqrt(v[n] / (1 - c.b2**t)) + c.eps)
            else:  # AdamWeightDecayOptimizer: next_m / (sqrt(next_v) + epsilon)
                update = m[n] / (np.sqrt(v[n]) + c.eps)
            if not (n.endswith("bias") or "LayerNorm" in n):
                update = update + c.weight_decay * p[n]
                if c.get("optimizer") == "lamb":
                    param_norm, update_norm = np.linalg.norm(p[n]), np.linalg.norm(update)
                    update = update * (param_norm / update_norm if param_norm > 0 and update_norm > 0 else 1.0)
            mult = 1.0 if multipliers is None else multipliers[n]
            p[n] = p[n] - lr * mult * update
    return p


def _run_optax(tx, params, grads_per_step):
    opt_state = tx.init(params)
    step = jax.jit(tx.update)
    for grads in grads_per_step:
        updates, opt_state = step(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    return params


def _random_grads(params, steps, scale, seed=1):
    rng = np.random.default_rng(seed)
    return [
        jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape) * scale, jnp.float32), params)
        for _ in range(steps)
    ]


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("grad_scale", [5.0, 0.01])  # global norm ~30 (clipped) / ~0.06 (not)
def test_three_steps_match_numpy_adamw_with_clipping(grad_scale, bias_correction, optimizer):
    c = _config(warmup_steps=2, bias_correction=bias_correction, optimizer=optimizer)
    params = _param_tree()
    grads = _random_grads(params, 3, grad_scale)
    tx, schedule = optim.make_optimizer(c, total_steps=10)
    got = _names(_run_optax(tx, params, grads))
    lrs = [float(schedule(s)) for s in range(3)]
    assert lrs == pytest.approx([0.0, 1e-3 * 0.9 * 0.5, 1e-3 * 0.8])
    expected = _numpy_electra_adamw(_names(params), [_names(g) for g in grads], lrs, c)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_clipping_scales_the_gradient_to_unit_norm():
    """Adam's first moment after one step is (1 - b1) * clipped gradient."""
    params = _param_tree()
    grads = _random_grads(params, 1, 5.0)[0]
    norm = float(optax.global_norm(grads))
    assert norm > 1.0
    tx, _ = optim.make_optimizer(_config(), total_steps=10)
    _, state = tx.update(grads, tx.init(params), params)
    mu = optax.tree_utils.tree_get(state, "mu")
    expected = jax.tree_util.tree_map(lambda g: 0.1 * g / norm, grads)
    for name, value in _names(expected).items():
        np.testing.assert_allclose(_names(mu)[name], value, rtol=1e-5, err_msg=name)


def _expected_multipliers(decay, num_layers):
    """google-research/electra `_get_layer_lrs`: lr * decay ** (n_layers + 2 - depth)."""
    depth = {
        "embeddings": 0,
        "embeddings_project": 0,
        "classifier": num_layers + 2,
        "generator_lm_head": num_layers + 2,
    }
    depth.update({f"layer_{i}": i + 1 for i in range(num_layers)})
    return depth, lambda d: decay ** (num_layers + 2 - d)


def test_layerwise_multipliers_follow_the_original_formula():
    params = _param_tree()
    multipliers = _names(optim.layerwise_lr_decay_multipliers(params, 0.8, 2))
    assert multipliers["embeddings/LayerNorm/scale"] == pytest.approx(0.8**4)
    assert multipliers["embeddings_project/kernel"] == pytest.approx(0.8**4)
    assert multipliers["encoder/layer_0/output/dense/bias"] == pytest.approx(0.8**3)
    assert multipliers["encoder/layer_1/attention_self/query/kernel"] == pytest.approx(0.8**2)
    assert multipliers["classifier/dense/kernel"] == pytest.approx(1.0)


def test_layer_numbers_are_parsed_not_prefix_matched():
    """layer_1 and layer_11 must differ (the original keys end in '/' for the same reason)."""
    params = {"encoder": {f"layer_{i}": {"kernel": jnp.ones(2)} for i in (1, 11)}}
    multipliers = optim.layerwise_lr_decay_multipliers(params, 0.5, 12)
    assert float(multipliers["encoder"]["layer_1"]["kernel"]) == 0.5**12
    assert float(multipliers["encoder"]["layer_11"]["kernel"]) == 0.5**2


def test_scanned_layers_get_one_multiplier_per_slice():
    params = {"encoder": {"layers": {"layer": {"output": {"dense": {"kernel": jnp.ones((3, 4, 5))}}}}}}
    kernel = optim.layerwise_lr_decay_multipliers(params, 0.8, 3)["encoder"]["layers"]["layer"]["output"]["dense"][
        "kernel"
    ]
    assert kernel.shape == (3, 1, 1)
    np.testing.assert_allclose(kernel.ravel(), [0.8**4, 0.8**3, 0.8**2], rtol=1e-6)
    with pytest.raises(ValueError, match="stacks 3 layers but num_layers=4"):
        optim.layerwise_lr_decay_multipliers(params, 0.8, 4)


def test_layerwise_decay_inside_make_optimizer_matches_numpy():
    c = _config(layerwise_lr_decay=0.8, warmup_steps=0)
    params = _param_tree()
    grads = _random_grads(params, 2, 0.05, seed=3)
    tx, schedule = optim.make_optimizer(c, total_steps=10)
    got = _names(_run_optax(tx, params, grads))
    depth, multiplier = _expected_multipliers(0.8, 2)
    multipliers = {}
    for name in got:
        top = next(part for part in name.split("/") if part in depth)
        multipliers[name] = multiplier(depth[top])
    expected = _numpy_electra_adamw(
        _names(params), [_names(g) for g in grads], [float(schedule(s)) for s in range(2)], c, multipliers
    )
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("off", [0.0, 1.0])
def test_layerwise_decay_off_values(off):
    params = _param_tree()
    grads = _random_grads(params, 1, 0.05)
    plain, _ = optim.make_optimizer(_config(layerwise_lr_decay=1.0), total_steps=10)
    tx, _ = optim.make_optimizer(_config(layerwise_lr_decay=off), total_steps=10)
    for a, b in zip(
        jax.tree_util.tree_leaves(_run_optax(tx, params, grads)),
        jax.tree_util.tree_leaves(_run_optax(plain, params, grads)),
    ):
        np.testing.assert_array_equal(a, b)


def test_pretraining_config_has_every_field_make_optimizer_reads():
    """The lead's paper configs are locked: a field missing there would fail at start-up."""

    config = recipes.pretraining_config("small")
    config.lock()
    tx, schedule = optim.make_optimizer(config.optim, config.train.num_steps)
    np.testing.assert_allclose(schedule(10_000), 5e-4 * (1 - 10_000 / 1_000_000), rtol=1e-6)
    params = {"kernel": jnp.ones((2, 2))}
    tx.update(params, tx.init(params), params)


def test_lamb_rescales_weight_matrices_by_their_trust_ratio_and_names_a_bad_choice():
    """One step from zero moments: LAMB's update of a weight matrix has the norm of the
    weight times lr (the trust ratio undoes Adam's scale); biases and LayerNorm keep AdamW's."""
    params = _param_tree()
    grads = _random_grads(params, 1, 0.01)
    adamw, _ = optim.make_optimizer(_config(), total_steps=10)
    lamb, _ = optim.make_optimizer(_config(optimizer="lamb"), total_steps=10)
    adamw_updates = _names(adamw.update(grads[0], adamw.init(params), params)[0])
    lamb_updates = _names(lamb.update(grads[0], lamb.init(params), params)[0])
    for name, param in _names(params).items():
        if name.endswith("bias") or "LayerNorm" in name:
            np.testing.assert_allclose(lamb_updates[name], adamw_updates[name], rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_allclose(np.linalg.norm(lamb_updates[name]), 1e-3 * np.linalg.norm(param), rtol=1e-5)
    with pytest.raises(ValueError, match=r"optim.optimizer='lars'; choose one of \('adamw', 'lamb'\)"):
        optim.make_optimizer(_config(optimizer="lars"), total_steps=10)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("learning_rate", -1.0, r"optim.learning_rate=-1.0; it must be >= 0.0 \(--config.optim.learning_rate\)"),
        ("warmup_steps", -5, r"optim.warmup_steps=-5; it must be >= 0"),
        ("b2", 1.5, r"optim.b2=1.5; it must be in \[0.0, 1.0\]"),
        ("weight_decay", -0.01, r"optim.weight_decay=-0.01"),
    ],
)
def test_numbers_out_of_range_are_refused_before_training(field, value, message):
    # learning_rate=-1 once trained by gradient ascent (loss 45 -> 3884) and exited 0.

    config = recipes.pretraining_config("tiny")
    config.optim[field] = value
    with pytest.raises(ValueError, match=message):
        optim.make_optimizer(config.optim, config.train.num_steps)
    config.optim[field] = 0  # the edge of every range is allowed (a zero rate keeps the weights)
    optim.make_optimizer(config.optim, config.train.num_steps)
