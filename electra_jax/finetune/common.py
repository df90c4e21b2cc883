"""What every fine-tuning task shares: the pretrained starting point, the paper's recipe,
batching, the train step and predictor on the training core (electra_jax/trainer.py), and
the one run of a task's seeds.

A task (glue.py, classify.py, tagging.py, squad.py) supplies only a `Setup`: its data, its
head module (a flax module taking `(input_ids, attention_mask, token_type_ids,
deterministic)` whose params are `{electra, <head>}`), its loss `(outputs, batch) ->
scalar`, its metrics and what each run leaves behind:

    pretrained = open_run(config, workdir)  # the encoder config.init names, workdir made
    results, median_run = run_seeds(config, pretrained, Setup(name="mrpc", net=..., ...))

Each run (OUT/seed_<k>/) checkpoints every `checkpoint_every` steps and resumes from its
last checkpoint when run again; it writes its training losses and dev metrics to
metrics.jsonl (and tensorboard/ with `config.tensorboard`), the same format as pretraining's.

`config` is a ConfigDict holding at least the fields of `base_config()`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Iterator, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath

from data_pipelines import files, hf_tokenizer
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.pretraining import FEATURE_KEYS
from electra_jax import checkpoints, heads, hf, loading, model, optim, presets, sharding, trainer
from electra_jax.metric_writer import MetricWriter, flat_scalars


def base_config() -> ml_collections.ConfigDict:
    """The knobs every fine-tuning task has; zeros mean "the paper's value for this size"."""
    c = ml_collections.ConfigDict()
    c.program = ""  # set by each task's config: glue | classify | tagging | squad
    c.init = ""  # pretraining workdir, or transformers ELECTRA dir (a fine-tuned one for eval_only)
    c.init_step = ml_collections.config_dict.placeholder(int)  # pretraining step; None = latest
    c.tokenizer = ""  # tokenizer override; default: the one that comes with `init`
    c.seeds = 1  # fine-tuning runs with seeds seed, seed+1, ...; the median is reported
    c.seed = 0  # first seed (head initialisation, dropout, shuffling)
    c.num_epochs = 0.0  # 0 = the task's default
    c.batch_size = 32  # training examples per optimizer step
    c.eval_batch_size = 128  # examples per prediction batch
    c.max_seq_length = 128  # tokens per example, special tokens included
    # The optimizer, as pretraining's: learning_rate and layerwise_lr_decay 0 = the paper's for
    # the size (small 3e-4 / 0.8, base 1e-4 / 0.8, large 5e-5 / 0.9); warmup over 10% of the
    # steps, then linear decay to 0; the original's Adam without bias correction
    # (AdamWeightDecayOptimizer; tied with optax's on GLUE at the paper's rate: BENCHMARKS.md).
    c.optim = presets.optim_config(learning_rate=0.0, warmup_fraction=0.1)
    c.optim.layerwise_lr_decay = 0.0
    c.optim.bias_correction = False
    c.dropout = 0.1  # hidden, attention and head dropout while fine-tuning
    c.max_train_examples = 0  # 0 = all; else the first N training examples (quick runs)
    c.eval_every = 0  # steps between dev evaluations during training (0 = at the end only)
    c.log_every = 50  # steps between logged training losses
    # steps between checkpoints of each run (WORKDIR/[task/]seed_<k>/checkpoints, the last one
    # kept: a rerun of the same command resumes there, and skips finished runs)
    c.checkpoint_every = 1000
    c.tensorboard = True  # TensorBoard summaries (needs tensorflow) beside each run's metrics.jsonl
    c.save_models = True  # export each run as a transformers directory (tokenizer included)
    c.from_scratch = False  # baseline: `init`'s architecture and tokenizer, random weights
    c.mesh = presets.mesh_config()  # data-parallel over all devices (set fsdp for Large)
    c.sharding = presets.sharding_config()
    return c


# base_config's numbers -> (least, most) each may take (presets.check_ranges)
NUMBER_RANGES = {
    "seeds": (1, None),
    "seed": (0, None),
    "num_epochs": (0.0, None),
    "batch_size": (1, None),
    "eval_batch_size": (1, None),
    "max_seq_length": (4, None),  # [CLS] a [SEP] b [SEP] keeps a token of each text
    "dropout": (0.0, 0.9),
    "max_train_examples": (0, None),
    "eval_every": (0, None),
    "log_every": (1, None),
    "checkpoint_every": (1, None),
}


def check_config(config) -> None:
    """The checks every task's config passes or fails on its own (no files, no devices),
    before anything is read or written: its numbers and its optimizer section."""
    presets.check_ranges(config, NUMBER_RANGES, "")
    optim.check_ranges(config.optim)


# ---------------------------------------------------------------------------- initialisation


def add_classifier_head(c: ml_collections.ConfigDict) -> None:
    """The knob of the tasks with a [CLS] classifier (GLUE, classify): its head."""
    # hf: transformers' head (dense + gelu + out_proj; exports) | original: google-research/
    # electra's dropout + one Glorot dense on [CLS] (needs save_models=False)
    c.classifier_head = "hf"


def require_files(config, keys: Sequence[str], file_kind: str) -> None:
    """Fails before any loading when a required data file is not set, naming the key."""
    for key in keys:
        if not config[key]:
            raise ValueError(f"config.{key} is empty; set --config.{key}=<{file_kind}>")


def require_separate_dev_file(config) -> None:
    """Refuses a dev_file that is the train_file: its scores, which pick the median seed,
    would be training scores."""
    if files.comparable(config.dev_file) == files.comparable(config.train_file):
        raise ValueError(
            f"--config.dev_file={config.dev_file} is the training file (--config.train_file={config.train_file}); "
            "hold out a dev file of other rows"
        )


def open_run(config, workdir: str) -> loading.Network:
    """Checks the config's numbers, makes `workdir` and loads the encoder `config.init`
    names (with its tokenizer): how every task's run starts, once its own keys are checked."""
    check_config(config)
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    return loading.load_network(config.init, config.init_step, config.tokenizer, "encoder")


def init_task_params(net, encoder_params: Any, rng: jax.Array, seq_len: int) -> dict:
    """A fresh head (its init from `rng`) on top of the pretrained encoder; with
    `encoder_params=None` the encoder is random too (the from-scratch baseline)."""
    params = dict(model.init_params(net, rng, seq_len))
    if encoder_params is not None:
        params["electra"] = encoder_params
    return params


def finetuning_model_config(config, pretrained: loading.Network) -> model.ElectraConfig:
    """The pretrained architecture with the fine-tuning dropout."""
    return dataclasses.replace(pretrained.model_config, hidden_dropout=config.dropout, attention_dropout=config.dropout)


def sequence_classifier(config, pretrained: loading.Network, num_labels: int) -> heads.SequenceClassifier:
    """The [CLS] classifier of GLUE and classify, with the head `config.classifier_head` picks."""
    head = config.classifier_head
    if head not in heads.CLASSIFIER_HEADS:
        raise ValueError(f"classifier_head={head!r}; choose one of {sorted(heads.CLASSIFIER_HEADS)}")
    if head == "original" and config.save_models:
        raise ValueError(
            "classifier_head='original' (dropout + one dense on [CLS]) has no transformers class: "
            "ElectraForSequenceClassification's head is dense + gelu + out_proj. Set "
            "--config.save_models=False, or keep --config.classifier_head=hf to export"
        )
    return heads.SequenceClassifier(finetuning_model_config(config, pretrained), num_labels, head)


# ---------------------------------------------------------------------------- outputs


def on_process_zero(write: Callable) -> Callable:
    """`write`, run by process 0 alone (a no-op returning None elsewhere). In a multi-host
    run every process computes the same params, predictions and metrics (batches and
    outputs are replicated over the mesh) and one writes them, as pretraining's checkpoints
    and MetricWriter do: two processes renaming the same .tmp file would race. So `write`
    must not run collectives: everything it writes is computed before it is called."""

    @functools.wraps(write)
    def on_zero(*args, **kwargs):
        if jax.process_index() == 0:
            return write(*args, **kwargs)
        return None

    return on_zero


write_json = on_process_zero(files.write_json)
write_text = on_process_zero(files.write_text)


@on_process_zero
def export_model(
    pretrained: loading.Network, params: dict, out_dir: str, kind: str, extra_config: dict[str, Any]
) -> None:
    """A transformers directory of `kind` (see hf.KINDS) with the tokenizer files beside it
    (`AutoTokenizer.from_pretrained(out_dir)` opens them)."""
    cfg = pretrained.model_config
    hf.save_pretrained(cfg, jax.device_get(params), out_dir, kind=kind, extra_config=extra_config)
    hf_tokenizer.save_pretrained(pretrained.tokenizer, out_dir, cfg.max_position_embeddings)


# ---------------------------------------------------------------------------- recipe


def resolved_hyperparameters(config, cfg: model.ElectraConfig, default_num_epochs: float) -> dict[str, float]:
    """learning_rate, layerwise_lr_decay, num_epochs with the 0 = "paper value" rule applied."""
    size = presets.size_of(cfg.hidden_size, cfg.num_layers)
    if (not config.optim.learning_rate or not config.optim.layerwise_lr_decay) and size is None:
        raise ValueError(
            f"the model (hidden {cfg.hidden_size}, {cfg.num_layers} layers) is none "
            f"of the paper sizes {sorted(presets.MODEL_SIZES)}; set "
            "--config.optim.learning_rate and --config.optim.layerwise_lr_decay explicitly"
        )
    recipe = presets.FINETUNING_RECIPES.get(size, {})
    return {
        "learning_rate": config.optim.learning_rate or recipe["learning_rate"],
        "layerwise_lr_decay": config.optim.layerwise_lr_decay or recipe["layerwise_lr_decay"],
        "num_epochs": config.num_epochs or default_num_epochs,
    }


def make_optimizer(
    config, hyper: dict[str, float], num_layers: int, total_steps: int
) -> tuple[optax.GradientTransformation, Any]:
    """`config.optim` with the size's learning rate and layer-wise decay filled in
    (`hyper`) and the encoder's depth, through `optim.make_optimizer`."""
    optim_config = config.optim.copy_and_resolve_references()
    optim_config.learning_rate = hyper["learning_rate"]
    optim_config.layerwise_lr_decay = hyper["layerwise_lr_decay"]
    optim_config.num_layers = num_layers
    return optim.make_optimizer(optim_config, total_steps)


def num_train_steps(num_examples: int, num_epochs: float, batch_size: int) -> int:
    """As the original: int(examples * epochs / batch_size)."""
    steps = int(num_examples * num_epochs / batch_size)
    if steps < 1:
        raise ValueError(
            f"{num_examples} examples x {num_epochs} epochs / batch {batch_size} "
            "gives no optimizer step; raise num_epochs or lower batch_size"
        )
    return steps


# ---------------------------------------------------------------------------- batching


def pack_features(
    tokenizer: tokenizer_lib.Tokenizer, ids_a: Sequence[int], ids_b: Optional[Sequence[int]], max_length: int
) -> dict[str, np.ndarray]:
    """[CLS] a [SEP] (b [SEP]) + padding, for ids already cut to fit (as `Tokenizer.encode_pair`
    lays them out). int32 [max_length] input_ids, attention_mask, token_type_ids."""
    input_ids = [tokenizer.cls_id, *ids_a, tokenizer.sep_id]
    token_type_ids = [0] * len(input_ids)
    if ids_b is not None:
        input_ids += [*ids_b, tokenizer.sep_id]
        token_type_ids += [1] * (len(ids_b) + 1)
    if len(input_ids) > max_length:
        raise ValueError(f"{len(input_ids)} tokens do not fit max_length={max_length}; cut the ids first")
    num_padding = max_length - len(input_ids)
    return {
        "input_ids": np.array(input_ids + [tokenizer.pad_id] * num_padding, np.int32),
        "attention_mask": np.array([1] * len(input_ids) + [0] * num_padding, np.int32),
        "token_type_ids": np.array(token_type_ids + [0] * num_padding, np.int32),
    }


TRUNCATIONS = ("head", "tail", "head_tail")


def cut(ids: list[int], keep: int, truncation: str) -> list[int]:
    """`keep` of `ids` by the truncation policy (all of them if they fit)."""
    if len(ids) <= keep:
        return list(ids)
    if truncation == "head":
        return list(ids[:keep])
    if truncation == "tail":
        return list(ids[len(ids) - keep :])
    head = keep // 4
    return list(ids[:head]) + list(ids[len(ids) - (keep - head) :])


def encode_text_pair(
    tokenizer: tokenizer_lib.Tokenizer, text: str, text_pair: Optional[str], max_seq_length: int, truncation: str
) -> tuple[dict[str, np.ndarray], int, int]:
    """(features, tokens cut, tokens of the texts): longest-first between the two texts (the
    rule of `Tokenizer.encode_pair`), then `truncation` decides which of each text's tokens stay."""
    ids_a = tokenizer.encode(text)
    ids_b = tokenizer.encode(text_pair) if text_pair is not None else None
    budget = max_seq_length - (3 if ids_b is not None else 2)
    kept_a, kept_b = tokenizer_lib.truncate_longest_first(ids_a, ids_b or [], budget)
    features = pack_features(
        tokenizer,
        cut(ids_a, len(kept_a), truncation),
        None if ids_b is None else cut(ids_b, len(kept_b), truncation),
        max_seq_length,
    )
    num_tokens = len(ids_a) + len(ids_b or [])
    return features, num_tokens - len(kept_a) - len(kept_b), num_tokens


def encode_text_pairs(
    tokenizer: tokenizer_lib.Tokenizer,
    pairs: Sequence[tuple[str, Optional[str]]],
    max_seq_length: int,
    truncation: str,
    where: str,
) -> dict[str, np.ndarray]:
    """Stacked features of (text, text_pair) examples; warns, naming `where`, how many
    examples and tokens `max_seq_length` cut (fine-tuning must truncate, but never quietly)."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"config.truncation={truncation!r}; use one of {TRUNCATIONS}")
    encoded = [encode_text_pair(tokenizer, a, b, max_seq_length, truncation) for a, b in pairs]
    num_long = sum(1 for _, dropped, _ in encoded if dropped)
    if num_long:
        dropped = sum(d for _, d, _ in encoded)
        total = sum(n for _, _, n in encoded)
        logging.warning(
            "%s: %d of %d examples are longer than max_seq_length=%d; %d of their %d tokens (%.1f%% of "
            "all) are cut away (truncation=%s); raise --config.max_seq_length to keep them",
            where,
            num_long,
            len(encoded),
            max_seq_length,
            dropped,
            total,
            100 * dropped / max(total, 1),
            truncation,
        )
    return stack_features([features for features, _, _ in encoded], max_seq_length)


def stack_features(rows: list[dict[str, np.ndarray]], max_length: int) -> dict[str, np.ndarray]:
    """[N, ...] arrays from per-example dicts (an empty list gives [0, max_length] inputs)."""
    if not rows:
        return {key: np.zeros((0, max_length), np.int32) for key in FEATURE_KEYS}
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def num_rows(features: dict[str, np.ndarray]) -> int:
    return len(features["input_ids"])


def train_batches(
    features: dict[str, np.ndarray],
    batch_size: int,
    rng: np.random.Generator,
    keys: Sequence[str],
    start_step: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled full batches of `keys`, one permutation per epoch (the remainder is
    dropped, as the original's `drop_remainder=True`), from the `start_step`-th batch on: a
    resumed run sees the batches an unbroken one would."""
    num_examples = num_rows(features)
    if num_examples < batch_size:
        raise ValueError(
            f"{num_examples} training examples cannot fill one batch of {batch_size}; lower --config.batch_size"
        )
    per_epoch = num_examples // batch_size
    for _ in range(start_step // per_epoch):  # the epochs already trained: their permutations drawn
        rng.permutation(num_examples)
    skip = start_step % per_epoch
    while True:
        order = rng.permutation(num_examples)
        for start in range(skip * batch_size, num_examples - batch_size + 1, batch_size):
            rows = order[start : start + batch_size]
            yield {key: features[key][rows] for key in keys}
        skip = 0


def predict_outputs(
    predict_batch, params, features: dict[str, np.ndarray], batch_size: int, keys: Sequence[str] = FEATURE_KEYS
) -> Any:
    """`predict_batch` over all rows of `features` in batches; its outputs (any pytree of
    [batch, ...] arrays) concatenated as float32 numpy. The last batch is padded so only
    one shape compiles."""
    num_examples = num_rows(features)
    outputs = []
    for start in range(0, num_examples, batch_size):
        batch = {key: features[key][start : start + batch_size] for key in keys}
        real = len(batch["input_ids"])
        batch = {
            key: np.pad(value, [(0, batch_size - real)] + [(0, 0)] * (value.ndim - 1)) for key, value in batch.items()
        }
        outputs.append(jax.tree_util.tree_map(lambda x: np.asarray(x)[:real], predict_batch(params, batch)))
    if not outputs:
        raise ValueError("no examples to predict on")
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts).astype(np.float32), *outputs)


# ---------------------------------------------------------------------------- steps


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a task's arrays live: the device mesh (`config.mesh`, all devices by default),
    the parameters' shardings (the model's logical axes through `config.sharding`'s rules)
    and the batches' (split over data x fsdp)."""

    mesh: jax.sharding.Mesh
    rules: tuple
    abstract_params: Any  # shapes and dtypes of the task model's params
    params_sharding: Any

    @property
    def batch_sharding(self) -> jax.sharding.NamedSharding:
        return sharding.batch_sharding(self.mesh)

    def state_sharding(self, tx: optax.GradientTransformation) -> optim.TrainState:
        return trainer.state_sharding(tx, self.abstract_params, self.params_sharding, self.mesh)

    def global_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """A whole batch, which every process holds, as arrays split over the mesh."""
        return {
            key: jax.make_array_from_callback(value.shape, self.batch_sharding, lambda index, value=value: value[index])
            for key, value in batch.items()
        }


def make_placement(config, net, devices: Optional[Sequence[jax.Device]] = None) -> Placement:
    """The placement of `net` on `config.mesh` over `devices` (default: all)."""
    mesh = sharding.make_mesh(config.mesh, devices)
    rules = sharding.logical_axis_rules(config)
    boxed = model.abstract_params(net)
    params_sharding = sharding.param_shardings(boxed, mesh, rules)
    abstract_params = nn.meta.unbox(boxed)
    sharding.check_divisible(abstract_params, params_sharding)
    for key in ("batch_size", "eval_batch_size"):
        trainer.check_batch_divides(key, config[key], mesh)
    return Placement(mesh, rules, abstract_params, params_sharding)


def make_train_step(
    net, loss_fn: Callable[[Any, dict], jax.Array], tx: optax.GradientTransformation, schedule, placement: Placement
):
    """jitted (state, batch, dropout_rng) -> (state, {loss, learning_rate}) on the mesh;
    state donated. `loss_fn(outputs of net, batch) -> scalar`."""

    def train_step(state: optim.TrainState, batch: dict, dropout_rng: jax.Array):
        def loss_of(params):
            outputs = model.apply_network(
                net, params, batch, deterministic=False, rngs={"dropout": jax.random.fold_in(dropout_rng, state.step)}
            )
            return loss_fn(outputs, batch)

        loss, grads = jax.value_and_grad(loss_of)(state.params)
        return state.apply_gradients(grads, tx), {"loss": loss, "learning_rate": schedule(state.step)}

    step = trainer.jit_step(
        train_step,
        placement.state_sharding(tx),
        placement.batch_sharding,
        placement.mesh,
        placement.rules,
        extra_in_shardings=(sharding.replicated(placement.mesh),),
    )
    return lambda state, batch, dropout_rng: step(state, placement.global_batch(batch), dropout_rng)


def make_predict_fn(net, placement: Placement):
    """jitted (params, numpy batch) -> the head's outputs (replicated), dropout off."""
    predict = jax.jit(
        lambda params, batch: model.apply_network(net, params, batch, deterministic=True),
        in_shardings=(placement.params_sharding, placement.batch_sharding),
        out_shardings=sharding.replicated(placement.mesh),
    )
    predict = sharding.under_mesh(placement.mesh, placement.rules, predict)
    return lambda params, batch: predict(params, placement.global_batch(batch))


@dataclasses.dataclass(frozen=True)
class TaskProgram:
    """The compiled pieces of one task, shared by all its seeds (compiled once)."""

    net: Any  # the flax module: encoder + task head
    tx: optax.GradientTransformation
    placement: Placement
    train_step: Any  # jitted (state, batch, dropout_rng) -> (state, metrics)
    predict_batch: Any  # jitted (params, batch) -> outputs
    total_steps: int
    batch_keys: tuple[str, ...]  # the feature keys a training batch carries


def build_program(
    config,
    net,
    loss_fn,
    hyper: dict[str, float],
    num_train_examples: int,
    batch_keys: Sequence[str] = (*FEATURE_KEYS, "labels"),
) -> TaskProgram:
    total_steps = num_train_steps(num_train_examples, hyper["num_epochs"], config.batch_size)
    tx, schedule = make_optimizer(config, hyper, net.config.num_layers, total_steps)
    placement = make_placement(config, net)
    return TaskProgram(
        net,
        tx,
        placement,
        make_train_step(net, loss_fn, tx, schedule, placement),
        make_predict_fn(net, placement),
        total_steps,
        tuple(batch_keys),
    )


def fit(
    config,
    program: TaskProgram,
    params: dict,
    train: dict[str, np.ndarray],
    seed: int,
    evaluate: Callable[[Any], Any],
    desc: str,
    run_dir: str,
) -> tuple[dict, list[dict]]:
    """Trains one run from `params`, or resumes it from its checkpoint in `run_dir`; returns
    (params on the host, log of {step, loss, learning_rate, dev: evaluate(params)}),
    evaluating every `eval_every` steps and at the end. The log is also written to
    `run_dir` (splits "train" and "dev"). A preemption saves and raises `trainer.Preempted`."""
    total_steps = program.total_steps
    ckpt = checkpoints.Checkpointer(run_dir, save_every=config.checkpoint_every, keep=1)
    state_sharding = program.placement.state_sharding(program.tx)
    if ckpt.latest_step() is None:
        state = jax.device_put(optim.TrainState.create(params, program.tx), state_sharding)
    else:
        abstract = jax.eval_shape(lambda p: optim.TrainState.create(p, program.tx), params)
        state = ckpt.restore(None, sharding.with_shardings(abstract, state_sharding))
        logging.info("%s: resumed from its checkpoint at step %d of %d", desc, int(state.step), total_steps)
    start_step = int(state.step)
    writer = MetricWriter(run_dir, config.tensorboard, start_step=start_step)
    log = {row["step"]: row for row in read_log(run_dir, start_step)}
    _, dropout_rng = seed_rngs(seed)
    batches = train_batches(train, config.batch_size, np.random.default_rng(seed), program.batch_keys, start_step)

    def log_train(step: int, scalars: dict[str, float], seconds_per_step: float) -> dict[str, str]:
        writer.write(step, "train", scalars)
        log.setdefault(step, {"step": step}).update(scalars)
        logging.info("%s step %d: %s", desc, step, log[step])
        return {"loss": f"{scalars['loss']:.4f}"}

    def evaluate_now(step: int, state: optim.TrainState) -> None:
        log.setdefault(step, {"step": step})["dev"] = dev = evaluate(state.params)
        writer.write(step, "dev", flat_scalars(dev))
        logging.info("%s step %d dev: %s", desc, step, dev)

    loop = trainer.Loop(
        step=lambda state, batch: program.train_step(state, batch, dropout_rng),
        next_batch=lambda: next(batches),
        checkpointer=ckpt,
        log=log_train,
        log_every=config.log_every,
        evaluate=evaluate_now,
        eval_every=config.eval_every or total_steps,
        desc=desc,
    )
    try:
        state = trainer.run_loop(state, loop, start_step, total_steps)
        if int(state.step) < total_steps:
            raise trainer.Preempted(
                f"{desc} stopped at step {int(state.step)} of {total_steps} after a preemption signal, its "
                f"checkpoint saved in {run_dir}; run the same command again to resume"
            )
        if start_step == total_steps:  # finished before: its final evaluation computed again (metrics.jsonl has it)
            log.setdefault(total_steps, {"step": total_steps})["dev"] = evaluate(state.params)
    finally:
        ckpt.close()
        writer.close()
    # Gathered to every process first: fsdp-sharded params are not addressable from one host.
    gathered = jax.jit(lambda params: params, out_shardings=sharding.replicated(program.placement.mesh))(state.params)
    return jax.device_get(gathered), [log[step] for step in sorted(log)]


def read_log(run_dir: str, until_step: int) -> list[dict]:
    """The log entries an earlier, resumed run of `run_dir` wrote up to `until_step`, from its
    metrics.jsonl (train rows hold loss and learning rate; dev rows the nested metrics)."""
    path = epath.Path(run_dir) / "metrics.jsonl"
    if until_step == 0 or not path.exists():
        return []
    entries: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        step, split = row.pop("step"), row.pop("split")
        if step > until_step:
            continue
        entry = entries.setdefault(step, {"step": step})
        if split == "dev":
            entry["dev"] = hf.unflatten(row)
        else:
            entry.update(row)
    return [entries[step] for step in sorted(entries)]


def seed_rngs(seed: int) -> tuple[jax.Array, jax.Array]:
    """(head init rng, dropout rng) of the run with `seed`."""
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    return init_rng, dropout_rng


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: Optional[jax.Array] = None) -> jax.Array:
    """Mean softmax cross-entropy over the positions of `labels` (int), in float32; with
    `weights` (0/1, the shape of `labels`) the mean over the weighted positions only."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    if weights is None:
        return jnp.mean(losses)
    weights = weights.astype(jnp.float32)
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


# ---------------------------------------------------------------------------- seeds and files


@dataclasses.dataclass(frozen=True)
class Setup:
    """One dataset of a task, ready to fine-tune: everything `run_seeds` needs from the task."""

    name: str  # in logs and progress bars: "mrpc", "classify", "squad v1.1"
    net: Any  # the flax module: encoder + the task's head
    loss: Callable  # (the net's outputs, batch) -> scalar
    train: dict[str, np.ndarray]  # the training features, [N, ...] each
    batch_keys: tuple[str, ...]  # the features a training batch carries
    default_num_epochs: float  # used where config.num_epochs is 0
    evaluate: Callable  # (predict, params) -> dev metrics; predict(params, features) -> the net's outputs
    dev_score: Callable[[dict], float]  # the dev number the median run is chosen by
    # (run_dir, params, predict) -> what the task keeps of one run (test predictions, ...),
    # after writing its export and prediction files into run_dir
    after_run: Callable
    out_dir: str  # holds seed_<k>/ of each run


def run_seeds(config, pretrained: loading.Network, setup: Setup) -> tuple[dict[str, Any], dict]:
    """Fine-tunes `config.seeds` runs of `setup` from `config.seed` on, each in
    OUT_DIR/seed_<k>/ (its metrics.jsonl, checkpoints, export); returns {hyperparameters,
    median (of every dev metric), runs: [{seed, dev (final), log}], median_seed} and the
    median run (with what `after_run` kept)."""
    hyper = resolved_hyperparameters(config, pretrained.model_config, setup.default_num_epochs)
    num_train = num_rows(setup.train)
    logging.info("%s: %d training examples, %s", setup.name, num_train, hyper)
    program = build_program(config, setup.net, setup.loss, hyper, num_train, setup.batch_keys)

    def predict(params, features):
        return predict_outputs(program.predict_batch, params, features, config.eval_batch_size)

    runs = []
    for seed in range(config.seed, config.seed + config.seeds):
        run_dir = os.path.join(setup.out_dir, f"seed_{seed}")
        # a fresh head from the seed on the pretrained encoder (a random one with from_scratch)
        encoder_params = None if config.from_scratch else pretrained.encoder_params
        params = init_task_params(program.net, encoder_params, seed_rngs(seed)[0], config.max_seq_length)
        evaluate = functools.partial(setup.evaluate, predict)
        params, log = fit(config, program, params, setup.train, seed, evaluate, f"{setup.name} seed {seed}", run_dir)
        runs.append({"seed": seed, "dev": log[-1]["dev"], "log": log, **setup.after_run(run_dir, params, predict)})
    chosen = runs[median_run([setup.dev_score(run["dev"]) for run in runs])]
    return {
        "hyperparameters": {**hyper, "num_train_examples": num_train, "num_train_steps": program.total_steps},
        "median": median_metrics([run["dev"] for run in runs]),
        "runs": [{key: run[key] for key in ("seed", "dev", "log")} for run in runs],
        "median_seed": chosen["seed"],
    }, chosen


def json_report(results: dict[str, Any], keys: Sequence[str] = ("median", "test")) -> str:
    """What the CLI prints of a task's results: `keys` of them, as JSON."""
    return json.dumps({key: results.get(key) for key in keys}, indent=2)


def median_run(dev_scores: list[float]) -> int:
    """Index of the run whose dev score is the (lower) median."""
    order = np.argsort(dev_scores, kind="stable")
    return int(order[(len(order) - 1) // 2])


def median_metrics(per_seed: list[dict]) -> dict:
    """The median over runs of every number in nested metric dicts of the same shape."""
    first = per_seed[0]
    if isinstance(first, dict):
        return {key: median_metrics([run[key] for run in per_seed]) for key in first}
    return float(np.median(per_seed))
