"""ELECTRA pretraining: the train state, one jitted mesh-sharded train step, the eval step.

`train_step(state, batch) -> (state, metrics)` does everything inside one `jax.jit`:
mask -> generator MLM -> sample replacements -> discriminator RTD -> both gradients ->
AdamW update, with optional gradient accumulation over microbatches (`lax.scan`).
Its randomness is derived from (seed, step), so a resumed run replays bit-exactly.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from electra_jax import model, objective, optim, sharding

Batch = dict[str, jax.Array]  # input_ids, attention_mask, token_type_ids: [batch, seq] int32
BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any  # {embeddings, generator, discriminator}; the embeddings stored once
    opt_state: Any


@flax.struct.dataclass
class Pretrainer:
    """The static pieces of a run: the model, optimizer, mesh and shardings."""

    config: Any = flax.struct.field(pytree_node=False)
    net: model.ElectraPretrainingModel = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    schedule: Callable = flax.struct.field(pytree_node=False)
    mesh: jax.sharding.Mesh = flax.struct.field(pytree_node=False)
    rules: tuple = flax.struct.field(pytree_node=False)
    state_sharding: Any = flax.struct.field(pytree_node=False)


def build_model(config) -> model.ElectraPretrainingModel:
    gen_cfg, disc_cfg = model.configs_from_dict(config.model)
    return model.ElectraPretrainingModel(gen_cfg, disc_cfg)


def _dummy_inputs(config, batch_size: int = 1):
    ids = jnp.zeros((batch_size, config.train.max_seq_length), jnp.int32)
    positions = jnp.zeros((batch_size, config.objective.max_predictions_per_seq), jnp.int32)
    return ids, ids, ids, positions


def make_pretrainer(config, mesh: jax.sharding.Mesh | None = None) -> Pretrainer:
    """Model, optimizer and the shardings of the train state, from config."""
    _check_batch(config, mesh)
    mesh = mesh or sharding.make_mesh(config.mesh)
    rules = sharding.logical_axis_rules(config)
    net = build_model(config)
    tx, schedule = optim.make_optimizer(config.optim, config.train.num_steps)
    boxed_params = jax.eval_shape(
        lambda: net.init(jax.random.PRNGKey(0), *_dummy_inputs(config))["params"])
    params_sharding = sharding.param_shardings(boxed_params, mesh, rules)
    abstract_opt_state = jax.eval_shape(tx.init, nn.meta.unbox(boxed_params))
    state_sharding = TrainState(
        step=sharding.replicated(mesh),
        params=params_sharding,
        opt_state=sharding.opt_state_shardings(tx, abstract_opt_state, params_sharding, mesh))
    return Pretrainer(config, net, tx, schedule, mesh, rules, state_sharding)


def _check_batch(config, mesh) -> None:
    train = config.train
    if train.batch_size % train.grad_accum_steps:
        raise ValueError(f"train.batch_size={train.batch_size} does not divide by "
                         f"train.grad_accum_steps={train.grad_accum_steps}")
    if mesh is not None:
        shards = mesh.shape["data"] * mesh.shape["fsdp"]
        if (train.batch_size // train.grad_accum_steps) % shards:
            raise ValueError(
                f"microbatch {train.batch_size // train.grad_accum_steps} (train.batch_size / "
                f"train.grad_accum_steps) does not divide over {shards} data x fsdp shards")


def init_train_state(trainer: Pretrainer) -> TrainState:
    """Fresh parameters and optimizer state, created directly in their shardings."""
    config, net, tx = trainer.config, trainer.net, trainer.tx

    def init(rng):
        params = nn.meta.unbox(net.init(rng, *_dummy_inputs(config))["params"])
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    with trainer.mesh:
        return jax.jit(init, out_shardings=trainer.state_sharding)(
            jax.random.PRNGKey(config.train.seed))


def step_rngs(seed: int, step: jax.Array) -> dict[str, jax.Array]:
    """All randomness of one step, a pure function of (seed, step): exact replay on resume."""
    mask_rng, sample_rng, dropout_rng = jax.random.split(
        jax.random.fold_in(jax.random.PRNGKey(seed), step), 3)
    return {"mask": mask_rng, "sample": sample_rng, "dropout": dropout_rng}


def _mask_batch(config, batch: Batch, rng: jax.Array) -> objective.MaskedInputs:
    o = config.objective
    return objective.mask_tokens(
        rng, batch["input_ids"], batch["attention_mask"],
        mask_prob=o.mask_prob, max_predictions=o.max_predictions_per_seq,
        mask_token_id=o.mask_token_id, special_token_ids=tuple(o.special_token_ids),
        mask_token_frac=o.mask_token_frac, random_token_frac=o.random_token_frac,
        vocab_size=config.model.vocab_size)


def _sample_per_example(config, example_rngs: jax.Array, gen_logits: jax.Array,
                        masked_ids: jax.Array) -> jax.Array:
    """One Gumbel key per example, so samples do not depend on the microbatch split."""
    o = config.objective

    def sample_one(rng, logits, original):
        disallow = original[None] if o.disallow_correct else None
        return objective.sample_replacements(rng, logits[None], temperature=o.temperature,
                                             disallow_ids=disallow)[0]

    return jax.vmap(sample_one)(example_rngs, gen_logits, masked_ids)


def _forward(trainer: Pretrainer, params, micro: dict, rngs: dict, deterministic: bool,
             totals: dict):
    """Losses of one microbatch, normalised by whole-batch counts so microbatches add up
    to exactly the full-batch loss. Returns (loss, per-microbatch metric sums)."""
    config, net = trainer.config, trainer.net
    gen_rng, disc_rng = jax.random.split(rngs["dropout"])
    gen_logits = net.apply(
        {"params": params}, micro["masked_input_ids"], micro["attention_mask"],
        micro["token_type_ids"], micro["masked_positions"], deterministic,
        rngs={"dropout": gen_rng}, method=net.generate)  # [b, P, V]
    sampled_ids = _sample_per_example(config, micro["example_rngs"], gen_logits,
                                      micro["masked_ids"])
    corrupted_ids, is_replaced = objective.corrupt_inputs(
        micro["input_ids"], micro["masked_positions"], micro["masked_weights"], sampled_ids)
    disc_logits = net.apply(
        {"params": params}, corrupted_ids, micro["attention_mask"], micro["token_type_ids"],
        deterministic, rngs={"dropout": disc_rng}, method=net.discriminate)  # [b, S]
    sums = objective.metric_sums(gen_logits, micro["masked_ids"], micro["masked_weights"],
                                 disc_logits, is_replaced, micro["attention_mask"])
    loss = (sums["mlm_loss"][0] / totals["masked"]
            + config.objective.disc_weight * sums["disc_loss"][0] / totals["tokens"])
    return loss, sums


def _microbatches(batch: dict, num: int) -> dict:
    return jax.tree_util.tree_map(lambda x: x.reshape(num, x.shape[0] // num, *x.shape[1:]), batch)


def train_step(trainer: Pretrainer, state: TrainState, batch: Batch, deterministic: bool = False):
    """One optimizer step on a global batch. Returns (new state, metrics dict of scalars)."""
    config = trainer.config
    rngs = step_rngs(config.train.seed, state.step)
    masked = _mask_batch(config, batch, rngs["mask"])
    batch_size = batch["input_ids"].shape[0]
    inputs = {
        **batch, **masked._asdict(),
        "example_rngs": jax.vmap(functools.partial(jax.random.fold_in, rngs["sample"]))(
            jnp.arange(batch_size)),
    }
    totals = {"masked": jnp.maximum(masked.masked_weights.sum(), 1.0),
              "tokens": jnp.maximum(batch["attention_mask"].sum().astype(jnp.float32), 1.0)}
    grad_fn = jax.value_and_grad(
        lambda p, micro, micro_rngs: _forward(trainer, p, micro, micro_rngs, deterministic, totals),
        has_aux=True)
    num_micro = config.train.grad_accum_steps
    if num_micro == 1:
        (loss, sums), grads = grad_fn(state.params, inputs, {"dropout": rngs["dropout"]})
    else:
        def accumulate(carry, xs):
            micro, index = xs
            (micro_loss, micro_sums), micro_grads = grad_fn(
                state.params, micro, {"dropout": jax.random.fold_in(rngs["dropout"], index)})
            return jax.tree_util.tree_map(jnp.add, carry, (micro_loss, micro_sums, micro_grads)), None

        zeros = jax.tree_util.tree_map(
            jnp.zeros_like, jax.eval_shape(grad_fn, state.params, jax.tree_util.tree_map(
                lambda x: x[: batch_size // num_micro], inputs), {"dropout": rngs["dropout"]}))
        (loss, sums), grads = zeros
        (loss, sums, grads), _ = jax.lax.scan(
            accumulate, (loss, sums, grads),
            (_microbatches(inputs, num_micro), jnp.arange(num_micro)))
    updates, opt_state = trainer.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = objective.metrics_from_sums(sums)
    metrics.update(loss=loss, learning_rate=trainer.schedule(state.step),
                   grad_norm=optax.global_norm(grads))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(trainer: Pretrainer, state: TrainState, batch: Batch, eval_seed: int) -> dict:
    """Metric sums (not ratios) on one held-out batch with dropout off; the masking and
    sampling are fixed by `eval_seed` so every evaluation sees the same corruption."""
    config = trainer.config
    rngs = step_rngs(eval_seed, jnp.zeros((), jnp.int32))
    masked = _mask_batch(config, batch, rngs["mask"])
    inputs = {**batch, **masked._asdict(), "example_rngs": jax.vmap(
        functools.partial(jax.random.fold_in, rngs["sample"]))(jnp.arange(batch["input_ids"].shape[0]))}
    totals = {"masked": jnp.float32(1.0), "tokens": jnp.float32(1.0)}
    _, sums = _forward(trainer, state.params, inputs, rngs, True, totals)
    return sums


def jit_train_step(trainer: Pretrainer, deterministic: bool = False):
    """`train_step` jitted with explicit shardings; the input state is donated."""
    batch_sharding = {key: sharding.batch_sharding(trainer.mesh) for key in BATCH_KEYS}
    step = jax.jit(
        functools.partial(train_step, trainer, deterministic=deterministic),
        in_shardings=(trainer.state_sharding, batch_sharding),
        out_shardings=(trainer.state_sharding, sharding.replicated(trainer.mesh)),
        donate_argnums=(0,))
    return _under_mesh(trainer, step)


def jit_eval_step(trainer: Pretrainer, eval_seed: int):
    batch_sharding = {key: sharding.batch_sharding(trainer.mesh) for key in BATCH_KEYS}
    step = jax.jit(functools.partial(eval_step, trainer, eval_seed=eval_seed),
                   in_shardings=(trainer.state_sharding, batch_sharding),
                   out_shardings=sharding.replicated(trainer.mesh))
    return _under_mesh(trainer, step)


def _under_mesh(trainer: Pretrainer, fn):
    """Call `fn` with the mesh and logical-axis rules active (activation constraints)."""
    @functools.wraps(fn)
    def wrapped(*args):
        with trainer.mesh, nn.logical_axis_rules(trainer.rules):
            return fn(*args)
    wrapped.lower = lambda *args: _lower(trainer, fn, *args)
    return wrapped


def _lower(trainer, fn, *args):
    with trainer.mesh, nn.logical_axis_rules(trainer.rules):
        return fn.lower(*args)


# ---------------------------------------------------------------------------- the loop

def metrics_to_host(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def evaluate(trainer: Pretrainer, state: TrainState, eval_batches, eval_seed: int,
             eval_fn=None) -> dict[str, float]:
    """Held-out MLM and discriminator metrics, pooled over all `eval_batches`."""
    eval_fn = eval_fn or jit_eval_step(trainer, eval_seed)
    totals = None
    for batch in eval_batches:
        sums = eval_fn(state, batch)
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError("the evaluation data produced no batches; check data.eval_files")
    return metrics_to_host(objective.metrics_from_sums(totals))
