"""What every fine-tuning task shares: the pretrained starting point, the paper's recipe,
batching, one train step / predict builder parameterised by a head and a loss, the loop.

A task (glue.py, classify.py, tagging.py, squad.py) supplies only its data, its head
module (a flax module taking `(input_ids, attention_mask, token_type_ids, deterministic)`
whose params are `{electra, <head>}`), its loss `(outputs, batch) -> scalar` and its metrics:

    pretrained = load_pretrained(config.init, config.init_step, config.tokenizer)
    hyper = resolved_hyperparameters(config, pretrained.model_config, default_num_epochs=3.0)
    program = build_program(config, net, loss_fn, hyper, num_train_examples)
    params, log = fit(config, program, init_task_params(net, encoder, rng, seq_len), train,
                      seed, evaluate=lambda params: {...}, desc="mrpc seed 0")

`config` is a ConfigDict holding at least the fields of `base_config()`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Callable, Iterator, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging

from data_pipelines import tokenizer as tokenizer_lib
from electra_jax import hf, model, optim, presets

# The ELECTRA paper's fine-tuning recipe (Clark et al. 2020, Table 7) per model size.
# "tiny" is ours (CPU demos) and follows small.
LEARNING_RATES = {"tiny": 3e-4, "small": 3e-4, "base": 1e-4, "large": 5e-5}
LAYERWISE_LR_DECAY = {"tiny": 0.8, "small": 0.8, "base": 0.8, "large": 0.9}

FEATURE_KEYS = ("input_ids", "attention_mask", "token_type_ids")
# Subtrees of a pretrained network that fine-tuning drops (only its `electra` encoder is kept).
PRETRAINING_HEADS = ("discriminator_predictions", "generator_predictions", "generator_lm_head")


def base_config() -> ml_collections.ConfigDict:
    """The knobs every fine-tuning task has; zeros mean "the paper's value for this size"."""
    c = ml_collections.ConfigDict()
    c.init = ""  # pretraining workdir, or transformers ELECTRA dir (a fine-tuned one for eval_only)
    c.init_step = ml_collections.config_dict.placeholder(int)  # pretraining step; None = latest
    c.tokenizer = ""  # tokenizer override; default: the one that comes with `init`
    c.seeds = 1  # fine-tuning runs with seeds seed, seed+1, ...; the median is reported
    c.seed = 0  # first seed (head initialisation, dropout, shuffling)
    c.learning_rate = 0.0  # peak learning rate; 0 = per size (small 3e-4, base 1e-4, large 5e-5)
    c.layerwise_lr_decay = 0.0  # 0 = per size (0.8 small/base, 0.9 large); 1.0 = off
    c.num_epochs = 0.0  # 0 = the task's default
    c.batch_size = 32  # training examples per optimizer step
    c.eval_batch_size = 128  # examples per prediction batch
    c.max_seq_length = 128  # tokens per example, special tokens included
    c.warmup_fraction = 0.1  # linear warmup over this fraction of the steps, then linear decay
    c.weight_decay = 0.01  # decoupled AdamW weight decay; never on LayerNorm or biases
    c.adam_b1 = 0.9  # Adam beta1
    c.adam_b2 = 0.999  # Adam beta2
    c.adam_eps = 1e-6  # Adam epsilon (ELECTRA's)
    c.clip_norm = 1.0  # global gradient-norm clip (0 = off)
    c.dropout = 0.1  # hidden, attention and head dropout while fine-tuning
    c.max_train_examples = 0  # 0 = all; else the first N training examples (quick runs)
    c.eval_every = 0  # steps between dev evaluations during training (0 = at the end only)
    c.log_every = 50  # steps between logged training losses
    c.save_models = True  # export each run as a transformers directory (tokenizer included)
    c.from_scratch = False  # baseline: `init`'s architecture and tokenizer, random weights
    return c


# ---------------------------------------------------------------------------- initialisation

@dataclasses.dataclass(frozen=True)
class Pretrained:
    """What fine-tuning starts from."""

    model_config: model.ElectraConfig
    encoder_params: Any  # the `electra` subtree: embeddings (+ projection) and encoder
    tokenizer: tokenizer_lib.Tokenizer
    head_params: Optional[dict] = None  # the other subtrees of a fine-tuned model ({classifier: ...})
    hf_config: Optional[dict] = None  # config.json of a transformers directory

    @property
    def classifier_params(self) -> Any:
        """The `classifier` subtree of a fine-tuned sequence/token classifier, else None."""
        return (self.head_params or {}).get("classifier")


def model_size(cfg: model.ElectraConfig) -> Optional[str]:
    """The paper size ("small", ...) whose hidden size and depth `cfg` has, else None."""
    for size, (_, _, hidden, layers, *_) in presets.MODEL_SIZES.items():
        if (cfg.hidden_size, cfg.num_layers) == (hidden, layers):
            return size
    return None


def is_hf_dir(path: str) -> bool:
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        return False
    with open(config_path, encoding="utf-8") as f:
        return json.load(f).get("model_type") == "electra"


def _check_vocab(cfg: model.ElectraConfig, tokenizer: tokenizer_lib.Tokenizer, init: str) -> None:
    if cfg.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"the checkpoint {init} has vocab_size={cfg.vocab_size} but the tokenizer at "
            f"{getattr(tokenizer, 'path', '?')} has {tokenizer.vocab_size} tokens; use "
            "the tokenizer the model was pretrained with (--config.tokenizer=...)")


def _restore_pretraining_params(init: str, init_step: Optional[int]):
    """(run config, params of the pretraining state) at `init_step` (latest if None), opened
    read-only so a run still training in `init` never loses an in-flight save."""
    from electra_jax import checkpoints, pretrain  # restoring pulls in the pretraining stack

    run_config = checkpoints.load_run_config(init)
    _, state = pretrain.restore_train_state(run_config, init, init_step)
    return run_config, state.params


def _workdir_tokenizer(init: str, run_config, tokenizer_path: str) -> tokenizer_lib.Tokenizer:
    tokenizer_path = tokenizer_path or run_config.data.tokenizer
    if not tokenizer_path:
        raise ValueError(f"the pretraining run in {init} records no data.tokenizer; pass "
                         "--config.tokenizer=<the sentencepiece model or vocab.txt it used>")
    if not os.path.isabs(tokenizer_path) and not os.path.exists(tokenizer_path):
        tokenizer_path = os.path.join(init, tokenizer_path)
    return tokenizer_lib.load_tokenizer(tokenizer_path)


@dataclasses.dataclass(frozen=True)
class Network:
    """One whole standalone network (Discriminator, Generator or a fine-tuned model)."""

    model_config: model.ElectraConfig
    params: dict  # {electra, <head subtrees>} as hf.load_pretrained returns them
    tokenizer: tokenizer_lib.Tokenizer
    hf_config: Optional[dict] = None  # config.json of a transformers directory


def load_network(init: str, init_step: Optional[int] = None, tokenizer_path: str = "",
                 network: str = "discriminator") -> Network:
    """The discriminator (or generator, `network="generator"`; or `network="encoder"`:
    the discriminator where there is one, else the masked LM of an MLM-only run) of a
    pretraining workdir's checkpoint, or the network a transformers ELECTRA directory
    holds, with its tokenizer."""
    if not init:
        raise ValueError("config.init is empty; set --config.init to a pretraining workdir or "
                         "a transformers ELECTRA directory")
    if is_hf_dir(init):
        if init_step is not None:
            raise ValueError(f"init_step={init_step} given but {init} is a transformers "
                             "directory (one set of weights); drop --config.init_step")
        with open(os.path.join(init, "config.json"), encoding="utf-8") as f:
            hf_config = json.load(f)
        cfg, params = hf.load_pretrained(init)
        is_generator = "generator_predictions" in params
        if network != "encoder" and is_generator != (network == "generator"):
            held = "an ElectraForMaskedLM generator" if is_generator else "no generator (MLM) head"
            wanted = ("the generator (an ElectraForMaskedLM directory)" if network == "generator"
                      else "the discriminator (ElectraForPreTraining)")
            raise ValueError(f"{init} holds {held}; use {wanted} instead")
        tokenizer = tokenizer_lib.load_tokenizer(tokenizer_path or init)
        _check_vocab(cfg, tokenizer, init)
        return Network(cfg, params, tokenizer, hf_config)
    if os.path.isdir(os.path.join(init, "checkpoints")):
        run_config, pretraining_params = _restore_pretraining_params(init, init_step)
        networks = model.pretraining_networks(run_config)
        if network == "encoder":
            network = "discriminator" if "discriminator" in networks else "generator"
        if network not in networks:
            raise ValueError(f"{init} is an MLM-only run (objective.kind={run_config.objective.kind!r}): "
                             f"it has no {network}; load its generator (network='generator')")
        params = model.split_pretraining_params(jax.device_get(pretraining_params))[network]
        cfg = networks[network]
        tokenizer = _workdir_tokenizer(init, run_config, tokenizer_path)
        _check_vocab(cfg, tokenizer, init)
        return Network(cfg, params, tokenizer)
    raise FileNotFoundError(f"{init} is neither a pretraining workdir (config.json + checkpoints/) "
                            "nor a transformers ELECTRA directory (config.json + model.safetensors)")


def require_files(config, keys: Sequence[str], file_kind: str) -> None:
    """Fails before any loading when a required data file is not set, naming the key."""
    for key in keys:
        if not config[key]:
            raise ValueError(f"config.{key} is empty; set --config.{key}=<{file_kind}>")


def load_pretrained(init: str, init_step: Optional[int] = None, tokenizer_path: str = "") -> Pretrained:
    """The encoder, config and tokenizer from a pretraining workdir or a transformers dir
    (and the head of a fine-tuned one): the discriminator's encoder, or the masked LM's
    of an MLM-only run or an ElectraForMaskedLM directory."""
    net = load_network(init, init_step, tokenizer_path, network="encoder")
    heads = {name: subtree for name, subtree in net.params.items()
             if name not in ("electra", *PRETRAINING_HEADS)}
    return Pretrained(net.model_config, net.params["electra"], net.tokenizer, heads or None,
                      net.hf_config)


def init_task_params(net, encoder_params: Any, rng: jax.Array, seq_len: int) -> dict:
    """A fresh head (its init from `rng`) on top of the pretrained encoder; with
    `encoder_params=None` the encoder is random too (the from-scratch baseline)."""
    params = dict(model.init_params(net, rng, seq_len))
    if encoder_params is not None:
        params["electra"] = encoder_params
    return params


def finetuning_model_config(config, pretrained: Pretrained) -> model.ElectraConfig:
    """The pretrained architecture with the fine-tuning dropout."""
    return dataclasses.replace(pretrained.model_config, hidden_dropout=config.dropout,
                               attention_dropout=config.dropout)


def export_model(pretrained: Pretrained, params: dict, out_dir: str, kind: str,
                 extra_config: dict[str, Any]) -> None:
    """A transformers directory of `kind` (see hf.KINDS), with the tokenizer file beside it."""
    hf.save_pretrained(pretrained.model_config, jax.device_get(params), out_dir, kind=kind,
                       extra_config=extra_config)
    copy_tokenizer(pretrained.tokenizer, out_dir)


def copy_tokenizer(tokenizer: tokenizer_lib.Tokenizer, out_dir: str) -> None:
    """Puts the tokenizer file where `tokenizer_lib.load_tokenizer(out_dir)` finds it."""
    tokenizer_path = tokenizer.path
    name = "vocab.txt" if tokenizer_path.endswith(".txt") else os.path.basename(tokenizer_path)
    if os.path.abspath(tokenizer_path) != os.path.abspath(os.path.join(out_dir, name)):
        shutil.copyfile(tokenizer_path, os.path.join(out_dir, name))


# ---------------------------------------------------------------------------- recipe

def resolved_hyperparameters(config, cfg: model.ElectraConfig,
                             default_num_epochs: float) -> dict[str, float]:
    """learning_rate, layerwise_lr_decay, num_epochs with the 0 = "paper value" rule applied."""
    size = model_size(cfg)
    if (not config.learning_rate or not config.layerwise_lr_decay) and size is None:
        raise ValueError(f"the model (hidden {cfg.hidden_size}, {cfg.num_layers} layers) is none "
                         f"of the paper sizes {sorted(presets.MODEL_SIZES)}; set "
                         "--config.learning_rate and --config.layerwise_lr_decay explicitly")
    return {
        "learning_rate": config.learning_rate or LEARNING_RATES[size],
        "layerwise_lr_decay": config.layerwise_lr_decay or LAYERWISE_LR_DECAY[size],
        "num_epochs": config.num_epochs or default_num_epochs,
    }


def make_optimizer(config, hyper: dict[str, float], num_layers: int,
                   total_steps: int) -> tuple[optax.GradientTransformation, Any]:
    """AdamW + warmup/linear decay + layer-wise LR decay, via `optim.make_optimizer`."""
    optim_config = ml_collections.ConfigDict(dict(
        learning_rate=hyper["learning_rate"],
        warmup_steps=int(config.warmup_fraction * total_steps),
        decay="linear", end_learning_rate=0.0, power=1.0,
        b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
        weight_decay=config.weight_decay, clip_norm=config.clip_norm,
        layerwise_lr_decay=hyper["layerwise_lr_decay"], num_layers=num_layers))
    return optim.make_optimizer(optim_config, total_steps)


def num_train_steps(num_examples: int, num_epochs: float, batch_size: int) -> int:
    """As the original: int(examples * epochs / batch_size)."""
    steps = int(num_examples * num_epochs / batch_size)
    if steps < 1:
        raise ValueError(f"{num_examples} examples x {num_epochs} epochs / batch {batch_size} "
                         "gives no optimizer step; raise num_epochs or lower batch_size")
    return steps


# ---------------------------------------------------------------------------- batching

def pack_features(tokenizer: tokenizer_lib.Tokenizer, ids_a: Sequence[int],
                  ids_b: Optional[Sequence[int]], max_length: int) -> dict[str, np.ndarray]:
    """[CLS] a [SEP] (b [SEP]) + padding, for ids already cut to fit (as `Tokenizer.encode_pair`
    lays them out). int32 [max_length] input_ids, attention_mask, token_type_ids."""
    input_ids = [tokenizer.cls_id, *ids_a, tokenizer.sep_id]
    token_type_ids = [0] * len(input_ids)
    if ids_b is not None:
        input_ids += [*ids_b, tokenizer.sep_id]
        token_type_ids += [1] * (len(ids_b) + 1)
    if len(input_ids) > max_length:
        raise ValueError(f"{len(input_ids)} tokens do not fit max_length={max_length}; cut the "
                         "ids first")
    num_padding = max_length - len(input_ids)
    return {"input_ids": np.array(input_ids + [tokenizer.pad_id] * num_padding, np.int32),
            "attention_mask": np.array([1] * len(input_ids) + [0] * num_padding, np.int32),
            "token_type_ids": np.array(token_type_ids + [0] * num_padding, np.int32)}


def stack_features(rows: list[dict[str, np.ndarray]], max_length: int) -> dict[str, np.ndarray]:
    """[N, ...] arrays from per-example dicts (an empty list gives [0, max_length] inputs)."""
    if not rows:
        return {key: np.zeros((0, max_length), np.int32) for key in FEATURE_KEYS}
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def num_rows(features: dict[str, np.ndarray]) -> int:
    return len(features["input_ids"])


def train_batches(features: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator,
                  keys: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled full batches of `keys`, one permutation per epoch (the remainder is
    dropped, as the original's `drop_remainder=True`)."""
    num_examples = num_rows(features)
    if num_examples < batch_size:
        raise ValueError(f"{num_examples} training examples cannot fill one batch of "
                         f"{batch_size}; lower --config.batch_size")
    while True:
        order = rng.permutation(num_examples)
        for start in range(0, num_examples - batch_size + 1, batch_size):
            rows = order[start:start + batch_size]
            yield {key: features[key][rows] for key in keys}


def predict_outputs(predict_batch, params, features: dict[str, np.ndarray], batch_size: int,
                    keys: Sequence[str] = FEATURE_KEYS) -> Any:
    """`predict_batch` over all rows of `features` in batches; its outputs (any pytree of
    [batch, ...] arrays) concatenated as float32 numpy. The last batch is padded so only
    one shape compiles."""
    num_examples = num_rows(features)
    outputs = []
    for start in range(0, num_examples, batch_size):
        batch = {key: features[key][start:start + batch_size] for key in keys}
        real = len(batch["input_ids"])
        batch = {key: np.pad(value, [(0, batch_size - real)] + [(0, 0)] * (value.ndim - 1))
                 for key, value in batch.items()}
        outputs.append(jax.tree_util.tree_map(lambda x: np.asarray(x)[:real],
                                              predict_batch(params, batch)))
    if not outputs:
        raise ValueError("no examples to predict on")
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts).astype(np.float32), *outputs)


# ---------------------------------------------------------------------------- steps

@flax.struct.dataclass
class FinetuneState:
    step: jax.Array  # int32 scalar
    params: Any  # {electra, <head>}
    opt_state: Any


def apply_net(net, params, batch: dict, deterministic: bool, rngs=None) -> Any:
    return net.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                     batch["token_type_ids"], deterministic=deterministic, rngs=rngs)


def make_train_step(net, loss_fn: Callable[[Any, dict], jax.Array],
                    tx: optax.GradientTransformation, schedule):
    """jitted (state, batch, dropout_rng) -> (state, {loss, learning_rate}); state donated.
    `loss_fn(outputs of net, batch) -> scalar`."""
    def train_step(state: FinetuneState, batch: dict, dropout_rng: jax.Array):
        def loss_of(params):
            outputs = apply_net(net, params, batch, deterministic=False,
                                rngs={"dropout": jax.random.fold_in(dropout_rng, state.step)})
            return loss_fn(outputs, batch)

        loss, grads = jax.value_and_grad(loss_of)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = FinetuneState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
        return new_state, {"loss": loss, "learning_rate": schedule(state.step)}

    return jax.jit(train_step, donate_argnums=(0,))


def make_predict_fn(net):
    """jitted (params, batch) -> the head's outputs, dropout off: the deployable predictor."""
    @jax.jit
    def predict_batch(params, batch):
        return apply_net(net, params, batch, deterministic=True)
    return predict_batch


@dataclasses.dataclass(frozen=True)
class TaskProgram:
    """The compiled pieces of one task, shared by all its seeds (compiled once)."""

    net: Any  # the flax module: encoder + task head
    tx: optax.GradientTransformation
    train_step: Any  # jitted (state, batch, dropout_rng) -> (state, metrics)
    predict_batch: Any  # jitted (params, batch) -> outputs
    total_steps: int
    batch_keys: tuple[str, ...]  # the feature keys a training batch carries


def build_program(config, net, loss_fn, hyper: dict[str, float], num_train_examples: int,
                  batch_keys: Sequence[str] = (*FEATURE_KEYS, "labels")) -> TaskProgram:
    total_steps = num_train_steps(num_train_examples, hyper["num_epochs"], config.batch_size)
    tx, schedule = make_optimizer(config, hyper, net.config.num_layers, total_steps)
    return TaskProgram(net, tx, make_train_step(net, loss_fn, tx, schedule),
                       make_predict_fn(net), total_steps, tuple(batch_keys))


def fit(config, program: TaskProgram, params: dict, train: dict[str, np.ndarray], seed: int,
        evaluate: Callable[[Any], Any], desc: str) -> tuple[dict, list[dict]]:
    """Trains one run from `params`; returns (params, log of {step, loss, learning_rate,
    dev: evaluate(params)}), evaluating every `eval_every` steps and at the end."""
    _, dropout_rng = seed_rngs(seed)
    state = FinetuneState(jnp.zeros((), jnp.int32), params, program.tx.init(params))
    batches = train_batches(train, config.batch_size, np.random.default_rng(seed), program.batch_keys)
    total_steps = program.total_steps
    log = []
    progress = tqdm.tqdm(range(total_steps), desc=desc, unit="step", dynamic_ncols=True, disable=None)
    for step in progress:
        state, step_metrics = program.train_step(state, next(batches), dropout_rng)
        done = step + 1
        should_eval = done == total_steps or (config.eval_every and done % config.eval_every == 0)
        if should_eval or done % config.log_every == 0:
            entry = {"step": done, **{k: float(v) for k, v in step_metrics.items()}}
            if should_eval:
                entry["dev"] = evaluate(state.params)
            progress.set_postfix(loss=f"{entry['loss']:.4f}")
            logging.info("%s step %d: %s", desc, done, entry)
            log.append(entry)
    return jax.device_get(state.params), log


def seed_rngs(seed: int) -> tuple[jax.Array, jax.Array]:
    """(head init rng, dropout rng) of the run with `seed`."""
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    return init_rng, dropout_rng


def finetune_seed(config, pretrained: Pretrained, program: TaskProgram, seed: int,
                  train: dict[str, np.ndarray], evaluate: Callable[[Any], Any],
                  desc: str) -> tuple[dict, list[dict]]:
    """One run: a fresh head from `seed` on the pretrained encoder (a random one with
    `config.from_scratch`), then `fit`."""
    init_rng, _ = seed_rngs(seed)
    encoder_params = None if config.from_scratch else pretrained.encoder_params
    params = init_task_params(program.net, encoder_params, init_rng, config.max_seq_length)
    return fit(config, program, params, train, seed, evaluate, desc)


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: Optional[jax.Array] = None) -> jax.Array:
    """Mean softmax cross-entropy over the positions of `labels` (int), in float32; with
    `weights` (0/1, the shape of `labels`) the mean over the weighted positions only."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    if weights is None:
        return jnp.mean(losses)
    weights = weights.astype(jnp.float32)
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


# ---------------------------------------------------------------------------- seeds and files

def finetune_seeds(config, pretrained: Pretrained, program: TaskProgram, train: dict[str, np.ndarray],
                   evaluate: Callable[[Any], Any], desc: str,
                   after_run: Callable[[int, dict], dict] = lambda seed, params: {}) -> list[dict]:
    """`config.seeds` runs from `config.seed` on; each gives {seed, dev (the final
    evaluation), log, **after_run(seed, params)} (export, test predictions, ...)."""
    runs = []
    for seed in range(config.seed, config.seed + config.seeds):
        params, log = finetune_seed(config, pretrained, program, seed, train, evaluate,
                                    f"{desc} seed {seed}")
        runs.append({"seed": seed, "dev": log[-1]["dev"], "log": log, **after_run(seed, params)})
    return runs


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


def write_json(path: str, value: Any) -> None:
    """Atomically (temporary name, then rename)."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
    os.replace(path + ".tmp", path)
