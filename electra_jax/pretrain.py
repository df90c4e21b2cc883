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
from absl import logging
from etils import epath

from data_pipelines import files, input_pipeline
from data_pipelines import pretraining as data
from data_pipelines.pretraining import FEATURE_KEYS
from electra_jax import (
    checkpoints,
    flops,
    hlo,
    init_from,
    model,
    objective,
    optim,
    presets,
    run_paths,
    sharding,
    trainer,
)
from electra_jax.metric_writer import MetricWriter

Batch = dict[str, jax.Array]  # input_ids, attention_mask, token_type_ids: [batch, seq] int32


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


def validate(config) -> None:
    """Every check a pretraining config passes or fails on its own (no files, no devices):
    run before anything is written, built or compiled. (The batch's split over the mesh,
    the tokenizer and the init weights are checked where they are known.)"""
    presets.check_ranges(config.train, _TRAIN_RANGES, "train.")
    presets.check_ranges(config.model, _MODEL_RANGES, "model.")
    presets.check_ranges(config.objective, _OBJECTIVE_RANGES, "objective.")
    _check_positions(config)
    optim.check_ranges(config.optim)
    objective.named(config.objective.kind)
    input_pipeline.source_of(config)
    if config.objective.sampler not in objective.SAMPLERS:
        raise ValueError(f"objective.sampler={config.objective.sampler!r}; choose one of {objective.SAMPLERS}")


def make_pretrainer(config, mesh: jax.sharding.Mesh | None = None) -> Pretrainer:
    """Model, optimizer and the shardings of the train state, from config."""
    validate(config)
    mesh = mesh or sharding.make_mesh(config.mesh)
    trainer.check_batch_divides("train.batch_size", config.train.batch_size, mesh, config.train.grad_accum_steps)
    rules = sharding.logical_axis_rules(config)
    net = model.build_pretraining_model(config)
    tx, schedule = optim.make_optimizer(config.optim, config.train.num_steps)
    boxed_params = model.abstract_pretraining_params(config)
    params_sharding = sharding.param_shardings(boxed_params, mesh, rules)
    sharding.check_divisible(nn.meta.unbox(boxed_params), params_sharding)
    state_sharding = trainer.state_sharding(tx, nn.meta.unbox(boxed_params), params_sharding, mesh)
    return Pretrainer(config, net, tx, schedule, mesh, rules, state_sharding)


# train.<field> -> (least, most) it may take (presets.check_ranges)
_TRAIN_RANGES = {
    "batch_size": (1, None),
    "grad_accum_steps": (1, None),
    "max_seq_length": (2, None),
    "num_steps": (0, None),
    "log_every": (1, None),
    "eval_every": (0, None),
    "eval_steps": (1, None),
    "checkpoint_every": (1, None),
    "keep_checkpoints": (1, None),
}
_MODEL_RANGES = {
    "generator_hidden_fraction": (0.0, None, "open"),  # 0 made a 1-unit generator
    "hidden_dropout": (0.0, 0.9),
    "attention_dropout": (0.0, 0.9),
}
_OBJECTIVE_RANGES = {
    "disc_weight": (0.0, None),  # below 0 the discriminator would maximise its loss
    "temperature": (0.0, None, "open"),  # 0 divides the logits by zero (not greedy sampling)
}


def _check_positions(config) -> None:
    if config.model.max_position_embeddings is None:  # the init source's, known once it is read
        return
    if config.train.max_seq_length > config.model.max_position_embeddings:
        raise ValueError(
            f"train.max_seq_length={config.train.max_seq_length} exceeds model.max_position_embeddings="
            f"{config.model.max_position_embeddings}, the model's table of positions. Use sequences that fit, "
            "or a model whose table covers them (BERT and ELECTRA train phase 1 at 128 tokens with a 512 table)"
        )


def _init_fn(pretrainer: Pretrainer):
    config, net, tx = pretrainer.config, pretrainer.net, pretrainer.tx

    def init(rng):
        params = nn.meta.unbox(net.init(rng, *model.pretraining_dummy_inputs(config))["params"])
        return optim.TrainState.create(params, tx)

    return init


def init_train_state(pretrainer: Pretrainer) -> optim.TrainState:
    """Fresh parameters and optimizer state, created directly in their shardings."""
    with pretrainer.mesh:
        return jax.jit(_init_fn(pretrainer), out_shardings=pretrainer.state_sharding)(
            jax.random.PRNGKey(pretrainer.config.train.seed)
        )


def start_from_source(pretrainer: Pretrainer, random_state: optim.TrainState) -> optim.TrainState:
    """The weights `config.init` names (random where it has none, e.g. a fresh generator),
    a fresh optimizer state, step 0."""
    params, _ = init_from.initial_params(pretrainer.config, random_state.params)
    params = sharding.place(params, pretrainer.state_sharding.params)
    with pretrainer.mesh:
        return jax.jit(lambda p: optim.TrainState.create(p, pretrainer.tx), out_shardings=pretrainer.state_sharding)(
            params
        )


def abstract_batch(pretrainer: Pretrainer, sequences: int) -> Batch:
    """Shapes, dtypes and shardings of a batch of `sequences` (to lower a step ahead of time)."""
    shape = (sequences, pretrainer.config.train.max_seq_length)
    return {
        key: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding.batch_sharding(pretrainer.mesh))
        for key in batch_keys(pretrainer.config)
    }


def abstract_train_state(pretrainer: Pretrainer) -> optim.TrainState:
    """Shapes, dtypes and shardings of the train state (the target of a restore)."""
    shapes = jax.eval_shape(_init_fn(pretrainer), jax.random.PRNGKey(0))
    return sharding.with_shardings(shapes, pretrainer.state_sharding)


def restore_train_state(config, workdir: str, step: int | None = None):
    """(pretrainer, state) at `step` (latest if None) of a pretraining workdir, read-only:
    safe while a run is still writing to it. (Programs that only need the weights open
    them with `loading`.)"""
    pretrainer = make_pretrainer(config)
    ckpt = checkpoints.Checkpointer(workdir, save_every=1, keep=None, read_only=True)
    try:
        state = ckpt.restore(step, abstract_train_state(pretrainer))
    finally:
        ckpt.close()
    return pretrainer, state


def step_rngs(seed: int, step: jax.Array) -> dict[str, jax.Array]:
    """All randomness of one step, a pure function of (seed, step): exact replay on resume."""
    mask_rng, sample_rng, dropout_rng = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), step), 3)
    return {"mask": mask_rng, "sample": sample_rng, "dropout": dropout_rng}


def mask_batch(config, batch: Batch, rng: jax.Array) -> objective.MaskedInputs:
    o = config.objective
    return objective.mask_tokens(
        rng,
        batch["input_ids"],
        batch["attention_mask"],
        mask_prob=o.mask_prob,
        max_predictions=o.max_predictions_per_seq,
        mask_token_id=o.mask_token_id,
        special_token_ids=tuple(o.special_token_ids),
        mask_token_frac=o.mask_token_frac,
        random_token_frac=o.random_token_frac,
        vocab_size=config.model.vocab_size,
        word_starts=batch["word_starts"] if o.whole_word_masking else None,
    )


def sample_per_example(config, example_rngs: jax.Array, gen_logits: jax.Array, masked_ids: jax.Array) -> jax.Array:
    """One sampling key per example, so samples do not depend on the microbatch split."""
    o = config.objective

    def sample_one(rng, logits, original):
        disallow = original[None] if o.disallow_correct else None
        return objective.sample_replacements(
            rng, logits[None], temperature=o.temperature, disallow_ids=disallow, sampler=o.sampler
        )[0]

    return jax.vmap(sample_one)(example_rngs, gen_logits, masked_ids)


def _forward(pretrainer: Pretrainer, params, micro: dict, rngs: dict, deterministic: bool, totals: dict):
    """Losses of one microbatch under `objective.kind`, normalised by whole-batch counts so
    microbatches add up to exactly the full-batch loss. Returns (loss, metric sums)."""
    config, net = pretrainer.config, pretrainer.net
    gen_rng, disc_rng = jax.random.split(rngs["dropout"])

    def generate():
        return net.apply(
            {"params": params},
            micro["masked_input_ids"],
            micro["attention_mask"],
            micro["token_type_ids"],
            micro["masked_positions"],
            deterministic,
            rngs={"dropout": gen_rng},
            method=net.generate,
        )

    def discriminate(input_ids):
        return net.apply(
            {"params": params},
            input_ids,
            micro["attention_mask"],
            micro["token_type_ids"],
            deterministic,
            rngs={"dropout": disc_rng},
            method=net.discriminate,
        )

    networks = objective.Networks(generate, discriminate, lambda gen_logits: corrupt(config, micro, gen_logits))
    return objective.named(config.objective.kind).loss(networks, micro, totals, config.objective.disc_weight)


def corrupt(config, inputs: dict, gen_logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(the discriminator's input, is_replaced): replacements sampled from `gen_logits` at
    the masked positions of `inputs` (a batch with its masking and per-example keys)."""
    sampled_ids = sample_per_example(config, inputs["example_rngs"], gen_logits, inputs["masked_ids"])
    return objective.corrupt_inputs(
        inputs["input_ids"], inputs["masked_positions"], inputs["masked_weights"], sampled_ids
    )


def _with_masking(config, batch: Batch, rngs: dict) -> dict:
    """`batch` with its masking and one sampling key per example (independent of how the
    batch is later split into microbatches)."""
    masked = mask_batch(config, batch, rngs["mask"])
    example_rngs = jax.vmap(functools.partial(jax.random.fold_in, rngs["sample"]))(
        jnp.arange(batch["input_ids"].shape[0])
    )
    return {**batch, **masked._asdict(), "example_rngs": example_rngs}


def eval_inputs(config, batch: Batch, eval_seed: int, batch_index) -> dict:
    """The `batch_index`-th held-out batch as every evaluation masks it: a pure function of
    (`eval_seed`, `batch_index`), so each batch gets its own draw and runs of any training
    seed are scored on the same corruption."""
    return _with_masking(config, batch, step_rngs(eval_seed, batch_index))


def _microbatches(batch: dict, num: int) -> dict:
    """[B, ...] -> [num, B / num, ...] (microbatch k: examples k B/num .. (k+1) B/num - 1),
    each microbatch split over the batch's mesh axes as the batch was: the reshape alone puts
    whole microbatches on subsets of devices, and then every device computes all of a
    microbatch, all-reducing its activations instead of gathering fsdp-sharded weights."""

    def split(x):
        micro = x.reshape(num, x.shape[0] // num, *x.shape[1:])
        return nn.with_logical_constraint(micro, (None, "batch", *[None] * (x.ndim - 1)))

    return jax.tree_util.tree_map(split, batch)


def train_step(pretrainer: Pretrainer, state: optim.TrainState, batch: Batch, deterministic: bool = False):
    """One optimizer step on a global batch. Returns (new state, metrics dict of scalars)."""
    config = pretrainer.config
    rngs = step_rngs(config.train.seed, state.step)
    inputs = _with_masking(config, batch, rngs)
    batch_size = batch["input_ids"].shape[0]
    totals = {
        "masked": jnp.maximum(inputs["masked_weights"].sum(), 1.0),
        "tokens": jnp.maximum(batch["attention_mask"].sum().astype(jnp.float32), 1.0),
    }
    grad_fn = jax.value_and_grad(
        lambda p, micro, micro_rngs: _forward(pretrainer, p, micro, micro_rngs, deterministic, totals), has_aux=True
    )
    num_micro = config.train.grad_accum_steps
    if num_micro == 1:
        (loss, sums), grads = grad_fn(state.params, inputs, {"dropout": rngs["dropout"]})
    else:

        def accumulate(carry, xs):
            micro, index = xs
            (micro_loss, micro_sums), micro_grads = grad_fn(
                state.params, micro, {"dropout": jax.random.fold_in(rngs["dropout"], index)}
            )
            return jax.tree_util.tree_map(jnp.add, carry, (micro_loss, micro_sums, micro_grads)), None

        zeros = jax.tree_util.tree_map(
            jnp.zeros_like,
            jax.eval_shape(
                grad_fn,
                state.params,
                jax.tree_util.tree_map(lambda x: x[: batch_size // num_micro], inputs),
                {"dropout": rngs["dropout"]},
            ),
        )
        (loss, sums), grads = zeros
        (loss, sums, grads), _ = jax.lax.scan(
            accumulate, (loss, sums, grads), (_microbatches(inputs, num_micro), jnp.arange(num_micro))
        )
    metrics = objective.metrics_from_sums(sums)
    metrics.update(loss=loss, learning_rate=pretrainer.schedule(state.step), grad_norm=optax.global_norm(grads))
    return state.apply_gradients(grads, pretrainer.tx), metrics


def eval_step(pretrainer: Pretrainer, state: optim.TrainState, batch: Batch, batch_index, eval_seed: int) -> dict:
    """Metric sums (not ratios) on one held-out batch with dropout off; the masking and
    sampling are fixed by (`eval_seed`, `batch_index`) so every evaluation sees the same
    corruption."""
    inputs = eval_inputs(pretrainer.config, batch, eval_seed, batch_index)
    totals = {"masked": jnp.float32(1.0), "tokens": jnp.float32(1.0)}
    _, sums = _forward(pretrainer, state.params, inputs, step_rngs(eval_seed, batch_index), True, totals)
    return sums


def batch_keys(config) -> tuple[str, ...]:
    """The arrays of a pretraining batch: word starts too under whole-word masking."""
    return FEATURE_KEYS + (("word_starts",) if config.objective.whole_word_masking else ())


def jit_train_step(pretrainer: Pretrainer, deterministic: bool = False):
    """`train_step` jitted with explicit shardings; the input state is donated."""
    batch_sharding = {key: sharding.batch_sharding(pretrainer.mesh) for key in batch_keys(pretrainer.config)}
    return trainer.jit_step(
        functools.partial(train_step, pretrainer, deterministic=deterministic),
        pretrainer.state_sharding,
        batch_sharding,
        pretrainer.mesh,
        pretrainer.rules,
    )


# Where `python -m electra_jax.compile --workdir=W` leaves its report, for the run to check.
COMPILED_STEP_FILE = "compiled_step.json"


def compile_train_step(pretrainer: Pretrainer, workdir: str):
    """The train step compiled before the loop, so its memory per device is known (and
    logged) before step 1, and checked against the prediction COMPILED_STEP_FILE holds."""
    batch = abstract_batch(pretrainer, pretrainer.config.train.batch_size)
    compiled = jit_train_step(pretrainer).lower(abstract_train_state(pretrainer), batch).compile()
    memory = compiled.memory_analysis()
    if memory is None:  # not every backend reports it
        return compiled
    _check_prediction(hlo.peak_bytes(memory), workdir)
    return compiled


def _check_prediction(peak: int, workdir: str) -> None:
    gib = 2**30
    path = epath.Path(workdir) / COMPILED_STEP_FILE
    if not path.exists():
        logging.info("compiled train step: %.2f GiB per device", peak / gib)
        return
    predicted = files.read_json(path)
    expected = predicted["per_device_bytes"]["peak"]
    if predicted.get("device_kind") == jax.devices()[0].device_kind and abs(peak - expected) <= 0.01 * expected:
        logging.info("compiled step as predicted: %.2f GiB/chip (%s)", peak / gib, path)
    else:
        logging.warning(
            "compiled train step: %.2f GiB per %s device, but %s predicted %.2f GiB per %s chip: another "
            "config, jax / libtpu version or device; recompile the prediction to check this program",
            peak / gib,
            jax.devices()[0].device_kind,
            path,
            expected / gib,
            predicted.get("device_kind"),
        )


def jit_eval_step(pretrainer: Pretrainer, eval_seed: int):
    batch_sharding = {key: sharding.batch_sharding(pretrainer.mesh) for key in batch_keys(pretrainer.config)}
    step = jax.jit(
        functools.partial(eval_step, pretrainer, eval_seed=eval_seed),
        in_shardings=(pretrainer.state_sharding, batch_sharding, sharding.replicated(pretrainer.mesh)),
        out_shardings=sharding.replicated(pretrainer.mesh),
    )
    return sharding.under_mesh(pretrainer.mesh, pretrainer.rules, step)


# ---------------------------------------------------------------------------- the loop


def evaluate(
    pretrainer: Pretrainer, state: optim.TrainState, eval_batches, eval_seed: int, eval_fn=None
) -> dict[str, float]:
    """Held-out MLM and discriminator metrics, pooled over all `eval_batches`."""
    eval_fn = eval_fn or jit_eval_step(pretrainer, eval_seed)
    totals = None
    for index, batch in enumerate(eval_batches):
        sums = eval_fn(state, batch, jnp.int32(index))
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError("the evaluation data produced no batches; check data.eval_files")
    return trainer.metrics_to_host(objective.metrics_from_sums(totals, pretrainer.config.objective.disc_weight))


# What a resume may change; any other difference from the saved config.json is refused
# before anything is written. How long it runs (num_steps: the schedule stretches or
# shrinks from the restored step), how often it logs, evaluates and saves, where and how it
# computes (mesh, sharding, compute dtype, remat, attention kernel, microbatches of the
# same global batch), the held-out files and where the tokenizer lies.
RESUME_MAY_CHANGE = (
    "train.num_steps",
    "train.log_every",
    "train.eval_every",
    "train.eval_steps",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.tensorboard",
    "train.eval_seed",
    "train.grad_accum_steps",
    "mesh.*",
    "sharding.*",
    "model.dtype",
    "model.remat_policy",
    "model.attention_impl",
    "data.eval_files",
    "data.tokenizer",
    "data.reset_iterator",
)
# ... and with data.reset_iterator, the training data too.
TRAINING_DATA_FIELDS = ("data.source", "data.train_files", "data.shuffle_buffer")


def run_inputs(config) -> dict[str, Any]:
    """{config key: paths or globs} of every file the run reads: --fresh never moves them aside."""
    return {
        f"{section}.{key}": config[section][key].split(",") if key.endswith("_files") else config[section][key]
        for section, key in run_paths.PATH_FIELDS
        if config.get(section) and config[section].get(key)
    }


def resume_may_change(config) -> tuple[str, ...]:
    return RESUME_MAY_CHANGE + (TRAINING_DATA_FIELDS if config.data.get("reset_iterator") else ())


def train_and_evaluate(config, workdir: str, *, fresh: bool = False, stop_at_step: int | None = None) -> dict[str, Any]:
    """Pretrain from scratch or resume the latest checkpoint in `workdir`.

    Returns the last logged train metrics and the last evaluation metrics. A second
    trainer on the same workdir is refused (`checkpoints.workdir_lock`).
    """
    if stop_at_step is not None and stop_at_step < 0:
        raise ValueError(f"--stop_at_step={stop_at_step}; give a step >= 0, or leave it out to run train.num_steps")
    validate(config)  # a config that cannot run leaves no workdir behind
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    with checkpoints.workdir_lock(workdir):
        return _train_and_evaluate(config, workdir, fresh, stop_at_step)


def _train_and_evaluate(config, workdir: str, fresh: bool, stop_at_step: int | None) -> dict[str, Any]:
    config = init_from.resolve_config(config, workdir if not fresh else None)
    config = input_pipeline.resolve_data_source(config, workdir)
    config_json = config.to_json_best_effort(sort_keys=True)
    changed = checkpoints.check_run_config(
        workdir,
        config_json,
        fresh,
        may_change=resume_may_change(config),
        hints=(("data.*", ", or --config.data.reset_iterator=True to go on from the saved step on the new data"),),
        inputs=run_inputs(config),
        write=False,
    )
    pretrainer = make_pretrainer(config)
    ckpt = checkpoints.Checkpointer(
        workdir, save_every=config.train.checkpoint_every, keep=config.train.keep_checkpoints
    )
    train_iter = input_pipeline.make_train_iterator(config)
    new_data = [key for key in changed if key in TRAINING_DATA_FIELDS]
    if ckpt.latest_step() is not None:
        try:
            state = ckpt.restore(None, abstract_train_state(pretrainer), None if new_data else train_iter)
        except data.InputsChangedError as error:  # same flags, other files behind them
            if not config.data.get("reset_iterator"):
                raise
            new_data = [f"the files behind data.train_files ({error.changes})"]
            state = ckpt.restore(None, abstract_train_state(pretrainer))
        if new_data:
            logging.warning(
                "data.reset_iterator: %s changed, so the input pipeline starts afresh at step %d "
                "(the saved position in the old data is not used)",
                ", ".join(new_data),
                int(state.step),
            )
    else:
        state = init_train_state(pretrainer)
        if init_from.is_set(config):
            state = start_from_source(pretrainer, state)
    start_step = int(state.step)
    end_step = config.train.num_steps
    if start_step > end_step:  # before config.json would record the smaller num_steps
        raise ValueError(
            f"{workdir} holds the checkpoint of step {start_step}, past train.num_steps={end_step}: nothing to "
            f"train. Give --config.train.num_steps above {start_step} to go on, or evaluate or export that run"
        )
    if stop_at_step is not None:  # 0 is a step to stop at, not "no limit"
        end_step = min(end_step, stop_at_step)
    batch_sharding = sharding.batch_sharding(pretrainer.mesh)
    step_fn = compile_train_step(pretrainer, workdir)
    checkpoints.write_run_config(workdir, config_json)  # only a run that passed every check and compiled
    eval_fn = jit_eval_step(pretrainer, eval_seed=config.train.eval_seed)
    writer = MetricWriter(workdir, config.train.tensorboard, start_step=start_step)
    flops_per_step = flops.train_flops_per_step(config)
    peak = flops.peak_flops(jax.devices()[0].device_kind, config.model.dtype)
    result: dict[str, Any] = {"train": {}, "eval": {}}

    def next_batch():
        host_batch = next(train_iter)
        data.check_token_ids(host_batch, config.model.vocab_size, f"data.train_files={config.data.train_files}")
        return data.to_global_batch(host_batch, batch_sharding)

    def log(step: int, scalars: dict[str, float], seconds_per_step: float) -> dict[str, str]:
        scalars.update(
            step_time_s=seconds_per_step,
            tokens_per_s=config.train.batch_size * config.train.max_seq_length / seconds_per_step,
        )
        if peak:
            scalars["mfu"] = flops_per_step / seconds_per_step / peak / jax.device_count()
        writer.write(step, "train", scalars)
        logging.info("step %d: %s tokens/s=%.0f", step, _summary(scalars), scalars["tokens_per_s"])
        result["train"] = scalars
        shown = {"loss": "loss", "mlm_acc": "mlm_accuracy", "rtd_auc": "disc_auc"}
        return {name: f"{scalars[key]:.3f}" for name, key in shown.items() if key in scalars}

    def evaluate_now(step: int, state: optim.TrainState) -> None:
        result["eval"] = evaluate(
            pretrainer, state, input_pipeline.eval_batches(config, batch_sharding), config.train.eval_seed, eval_fn
        )
        writer.write(step, "eval", result["eval"])
        logging.info("eval step %d: %s", step, _summary(result["eval"]))

    loop = trainer.Loop(
        step=step_fn,
        next_batch=next_batch,
        checkpointer=ckpt,
        log=log,
        log_every=config.train.log_every,
        evaluate=evaluate_now,
        eval_every=config.train.eval_every,
        data_iterator=train_iter,
        desc="pretraining",
    )
    try:
        state = trainer.run_loop(state, loop, start_step, end_step)
    finally:
        ckpt.close()
        writer.close()
    result["step"] = int(state.step)
    return result


def _summary(metrics: dict[str, float]) -> str:
    keys = (
        "loss",
        "mlm_loss",
        "mlm_accuracy",
        "disc_loss",
        "disc_accuracy",
        "disc_baseline_accuracy",
        "disc_auc",
        "disc_precision",
        "disc_recall",
    )
    return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
