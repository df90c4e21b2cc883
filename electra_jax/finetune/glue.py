"""GLUE fine-tuning of an ELECTRA discriminator: the paper's recipe, official metrics.

    config = glue_config(); config.task = "mrpc"; config.init = PRETRAIN_WORKDIR_OR_HF_DIR
    config.data_dir = GLUE_DIR
    results = run(config, workdir)

`init` is either a pretraining workdir of `electra_jax.train` (the discriminator of its
latest checkpoint, or `init_step`) or a transformers ELECTRA directory (google's released
`electra-*-discriminator`, or one of our exports). The tokenizer comes with it: the
workdir's `data.tokenizer`, or the `vocab.txt` / `*.model` inside the HF directory.

Each task is fine-tuned `seeds` times; the median of every metric is reported (as the
ELECTRA paper does), each run is exported as a transformers `ElectraForSequenceClassification`
directory (`WORKDIR/<task>/seed_<k>/`, tokenizer included), and the run with the median dev
score writes the test-set predictions in the GLUE leaderboard's format
(`WORKDIR/submission/<Task>.tsv`). `WORKDIR/results.json` and `results.md` hold the numbers.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Iterator, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging

from data_pipelines import glue as glue_data
from data_pipelines import tokenizer as tokenizer_lib
from electra_jax import hf, model, optim, presets
from electra_jax.finetune import metrics as glue_metrics

# The ELECTRA paper's fine-tuning recipe (Clark et al. 2020, Table 7) per model size.
# "tiny" is ours (CPU demos) and follows small.
LEARNING_RATES = {"tiny": 3e-4, "small": 3e-4, "base": 1e-4, "large": 5e-5}
LAYERWISE_LR_DECAY = {"tiny": 0.8, "small": 0.8, "base": 0.8, "large": 0.9}
DEFAULT_NUM_EPOCHS = 3.0
NUM_EPOCHS = {"rte": 10.0, "stsb": 10.0}  # the small tasks train longer

# task -> (metrics key, split) of the dev and test sets it is scored / predicted on
DEV_SPLITS = {task: (("mnli_matched", "dev_matched"), ("mnli_mismatched", "dev_mismatched"))
              if task == "mnli" else ((task, "dev"),) for task in glue_data.TASKS}
TEST_SPLITS = {task: (("mnli_matched", "test_matched"), ("mnli_mismatched", "test_mismatched"))
               if task == "mnli" else ((task, "test"),) for task in glue_data.TASKS}
# metrics key -> the file name the GLUE leaderboard expects in a submission zip
SUBMISSION_FILES = {"cola": "CoLA.tsv", "sst2": "SST-2.tsv", "mrpc": "MRPC.tsv", "qqp": "QQP.tsv",
                    "stsb": "STS-B.tsv", "mnli_matched": "MNLI-m.tsv", "mnli_mismatched": "MNLI-mm.tsv",
                    "qnli": "QNLI.tsv", "rte": "RTE.tsv", "wnli": "WNLI.tsv"}
STSB_RANGE = (0.0, 5.0)  # STS-B gold scores; predictions are clipped to it for submission

FEATURE_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def glue_config() -> ml_collections.ConfigDict:
    """Every knob of GLUE fine-tuning; zeros mean "the paper's value for this size/task"."""
    c = ml_collections.ConfigDict()
    c.task = "mrpc"  # a GLUE task (cola sst2 mrpc qqp stsb mnli qnli rte wnli) or "all"
    c.init = ""  # pretraining workdir, or transformers ELECTRA dir (a fine-tuned one for eval_only)
    c.init_step = ml_collections.config_dict.placeholder(int)  # pretraining step; None = latest
    c.tokenizer = ""  # tokenizer override; default: the one that comes with `init`
    c.data_dir = ""  # folder holding CoLA/, SST-2/, ... (GLUE's TSV layout); needed unless TFDS has glue
    c.tfds_data_dir = ""  # TFDS data_dir holding a prepared glue/<task> ("" = the TFDS default)
    c.source = "auto"  # auto (TFDS if prepared, else TSV) | tfds | tsv
    c.seeds = 1  # fine-tuning runs per task with seeds seed, seed+1, ...; the median is reported
    c.seed = 0  # first seed (head initialisation, dropout, shuffling)
    c.learning_rate = 0.0  # peak learning rate; 0 = per size (small 3e-4, base 1e-4, large 5e-5)
    c.layerwise_lr_decay = 0.0  # 0 = per size (0.8 small/base, 0.9 large); 1.0 = off
    c.num_epochs = 0.0  # 0 = per task (3; 10 for RTE and STS-B)
    c.batch_size = 32  # training examples per optimizer step
    c.eval_batch_size = 128  # examples per prediction batch
    c.max_seq_length = 128  # [CLS] a [SEP] b [SEP], longest-first truncation
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
    c.predict_test = True  # write leaderboard files for the test split when it is available
    c.save_models = True  # export each run as a transformers ElectraForSequenceClassification
    c.from_scratch = False  # baseline: `init`'s architecture and tokenizer, random weights
    c.eval_only = False  # score the fine-tuned `init` on `eval_split` instead of training
    c.eval_split = "dev"  # eval_only: dev | test (MNLI: dev_matched, test_mismatched, ...)
    return c


# ---------------------------------------------------------------------------- initialisation

@dataclasses.dataclass(frozen=True)
class Pretrained:
    """What fine-tuning starts from."""

    model_config: model.ElectraConfig
    encoder_params: Any  # the `electra` subtree: embeddings (+ projection) and encoder
    tokenizer: tokenizer_lib.Tokenizer
    classifier_params: Any = None  # the `classifier` subtree of a fine-tuned model
    hf_config: Optional[dict] = None  # config.json of a transformers directory


def model_size(cfg: model.ElectraConfig) -> Optional[str]:
    """The paper size ("small", ...) whose hidden size and depth `cfg` has, else None."""
    for size, (_, _, hidden, layers, *_) in presets.MODEL_SIZES.items():
        if (cfg.hidden_size, cfg.num_layers) == (hidden, layers):
            return size
    return None


def _is_hf_dir(path: str) -> bool:
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        return False
    with open(config_path, encoding="utf-8") as f:
        return json.load(f).get("model_type") == "electra"


def _check_vocab(cfg: model.ElectraConfig, tokenizer: tokenizer_lib.Tokenizer, init: str) -> None:
    if cfg.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"the checkpoint {init} has vocab_size={cfg.vocab_size} but the tokenizer at "
            f"{getattr(tokenizer, 'path', '?')} has {tokenizer.vocab_size} tokens; fine-tune with "
            "the tokenizer the model was pretrained with (--config.tokenizer=...)")


def _load_from_hf_dir(init: str, tokenizer_path: str) -> Pretrained:
    with open(os.path.join(init, "config.json"), encoding="utf-8") as f:
        hf_config = json.load(f)
    cfg, params = hf.load_pretrained(init)
    if "electra" not in params or "generator_predictions" in params:
        raise ValueError(f"{init} holds an ElectraForMaskedLM generator; fine-tune the "
                         "discriminator (ElectraForPreTraining) instead")
    tokenizer = tokenizer_lib.load_tokenizer(tokenizer_path or init)
    _check_vocab(cfg, tokenizer, init)
    return Pretrained(cfg, params["electra"], tokenizer, params.get("classifier"), hf_config)


def _restore_pretraining_params(init: str, init_step: Optional[int]):
    """(run config, params of the pretraining state) at `init_step` (latest if None).

    Mirrors `evaluate.load_run_config` + `evaluate.restore_state`; importing evaluate.py is
    not possible from a CLI because it registers its own absl `--config` flag at import.
    """
    from electra_jax import checkpoints, pretrain  # restoring pulls in the pretraining stack

    with open(os.path.join(init, "config.json"), encoding="utf-8") as f:
        run_config = ml_collections.ConfigDict(json.load(f))
    # JSON turned the tuples of these fields into lists; the pretrainer hashes them.
    run_config.sharding.logical_axis_rules = tuple(
        (name, tuple(axes) if isinstance(axes, list) else axes)
        for name, axes in run_config.sharding.logical_axis_rules)
    run_config.objective.special_token_ids = tuple(run_config.objective.special_token_ids)
    trainer = pretrain.make_pretrainer(run_config)
    ckpt = checkpoints.Checkpointer(init, save_every=1, keep=None)
    try:
        state = ckpt.restore(init_step, pretrain.abstract_train_state(trainer))
    finally:
        ckpt.close()
    return run_config, state.params


def _load_from_workdir(init: str, init_step: Optional[int], tokenizer_path: str) -> Pretrained:
    run_config, pretraining_params = _restore_pretraining_params(init, init_step)
    _, disc_params = model.split_pretraining_params(jax.device_get(pretraining_params))
    _, cfg = model.configs_from_dict(run_config.model)
    tokenizer_path = tokenizer_path or run_config.data.tokenizer
    if not tokenizer_path:
        raise ValueError(f"the pretraining run in {init} records no data.tokenizer; pass "
                         "--config.tokenizer=<the sentencepiece model or vocab.txt it used>")
    if not os.path.isabs(tokenizer_path) and not os.path.exists(tokenizer_path):
        tokenizer_path = os.path.join(init, tokenizer_path)
    tokenizer = tokenizer_lib.load_tokenizer(tokenizer_path)
    _check_vocab(cfg, tokenizer, init)
    return Pretrained(cfg, disc_params["electra"], tokenizer)


def load_pretrained(init: str, init_step: Optional[int] = None, tokenizer_path: str = "") -> Pretrained:
    """The encoder, config and tokenizer from a pretraining workdir or a transformers dir."""
    if not init:
        raise ValueError("config.init is empty; set --config.init to a pretraining workdir or "
                         "a transformers ELECTRA directory")
    if _is_hf_dir(init):
        if init_step is not None:
            raise ValueError(f"init_step={init_step} given but {init} is a transformers "
                             "directory (one set of weights); drop --config.init_step")
        return _load_from_hf_dir(init, tokenizer_path)
    if os.path.isdir(os.path.join(init, "checkpoints")):
        return _load_from_workdir(init, init_step, tokenizer_path)
    raise FileNotFoundError(f"{init} is neither a pretraining workdir (config.json + checkpoints/) "
                            "nor a transformers ELECTRA directory (config.json + model.safetensors)")


# ---------------------------------------------------------------------------- data

def is_regression(task: str) -> bool:
    return glue_data.LABELS[task] is None


def encode_examples(tokenizer: tokenizer_lib.Tokenizer, examples: list, max_seq_length: int,
                    regression: bool) -> dict[str, np.ndarray]:
    """Model inputs [N, max_seq_length], `labels` [N] (0 / NaN on test splits) and `idx` [N]."""
    encoded = [tokenizer.encode_pair(e.text_a, e.text_b, max_seq_length) for e in examples]
    features = {key: np.stack([f[key] for f in encoded]) if encoded
                else np.zeros((0, max_seq_length), np.int32) for key in FEATURE_KEYS}
    missing = np.nan if regression else 0
    features["labels"] = np.array([missing if e.label is None else e.label for e in examples],
                                  np.float32 if regression else np.int32)
    features["idx"] = np.array([e.idx for e in examples], np.int64)
    return features


def load_split(config, task: str, split: str, tokenizer) -> dict[str, np.ndarray]:
    examples = glue_data.load_glue(task, split, data_dir=config.data_dir or None,
                                   tfds_data_dir=config.tfds_data_dir or None, source=config.source)
    if split == "train" and config.max_train_examples:
        examples = examples[:config.max_train_examples]
    return encode_examples(tokenizer, examples, config.max_seq_length, is_regression(task))


def train_batches(features: dict[str, np.ndarray], batch_size: int,
                  rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled full batches, one permutation per epoch (the remainder is dropped,
    as the original's `drop_remainder=True`)."""
    num_examples = len(features["labels"])
    if num_examples < batch_size:
        raise ValueError(f"{num_examples} training examples cannot fill one batch of "
                         f"{batch_size}; lower --config.batch_size")
    while True:
        order = rng.permutation(num_examples)
        for start in range(0, num_examples - batch_size + 1, batch_size):
            rows = order[start:start + batch_size]
            yield {key: features[key][rows] for key in (*FEATURE_KEYS, "labels")}


def num_train_steps(num_examples: int, num_epochs: float, batch_size: int) -> int:
    """As the original: int(examples * epochs / batch_size)."""
    steps = int(num_examples * num_epochs / batch_size)
    if steps < 1:
        raise ValueError(f"{num_examples} examples x {num_epochs} epochs / batch {batch_size} "
                         "gives no optimizer step; raise num_epochs or lower batch_size")
    return steps


# ---------------------------------------------------------------------------- model and optimizer

@flax.struct.dataclass
class FinetuneState:
    step: jax.Array  # int32 scalar
    params: Any  # {electra, classifier}
    opt_state: Any


def resolved_hyperparameters(config, task: str, cfg: model.ElectraConfig) -> dict[str, float]:
    """learning_rate, layerwise_lr_decay, num_epochs with the 0 = "paper value" rule applied."""
    size = model_size(cfg)
    if (not config.learning_rate or not config.layerwise_lr_decay) and size is None:
        raise ValueError(f"the model (hidden {cfg.hidden_size}, {cfg.num_layers} layers) is none "
                         f"of the paper sizes {sorted(presets.MODEL_SIZES)}; set "
                         "--config.learning_rate and --config.layerwise_lr_decay explicitly")
    return {
        "learning_rate": config.learning_rate or LEARNING_RATES[size],
        "layerwise_lr_decay": config.layerwise_lr_decay or LAYERWISE_LR_DECAY[size],
        "num_epochs": config.num_epochs or NUM_EPOCHS.get(task, DEFAULT_NUM_EPOCHS),
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


def init_classifier_params(net: model.SequenceClassifier, encoder_params: Any, rng: jax.Array,
                           seq_len: int) -> dict:
    """A fresh head (its init from `rng`) on top of the pretrained encoder; with
    `encoder_params=None` the encoder is random too (the from-scratch baseline)."""
    params = model.init_params(net, rng, seq_len)
    return {"electra": params["electra"] if encoder_params is None else encoder_params,
            "classifier": params["classifier"]}


def task_loss(logits: jax.Array, labels: jax.Array, regression: bool) -> jax.Array:
    """Mean cross-entropy, or mean squared error on the raw score for regression (HF's
    MSELoss; the original TF code regresses score / 5)."""
    if regression:
        return jnp.mean(jnp.square(logits[:, 0].astype(jnp.float32) - labels))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels))


def make_train_step(net: model.SequenceClassifier, tx: optax.GradientTransformation, schedule,
                    regression: bool):
    """jitted (state, batch, dropout_rng) -> (state, {loss, learning_rate}); state donated."""
    def train_step(state: FinetuneState, batch: dict, dropout_rng: jax.Array):
        def loss_fn(params):
            logits = net.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                               batch["token_type_ids"], deterministic=False,
                               rngs={"dropout": jax.random.fold_in(dropout_rng, state.step)})
            return task_loss(logits, batch["labels"], regression)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = FinetuneState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
        return new_state, {"loss": loss, "learning_rate": schedule(state.step)}

    return jax.jit(train_step, donate_argnums=(0,))


def make_predict_fn(net: model.SequenceClassifier):
    @jax.jit
    def predict_batch(params, batch):
        return net.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                         batch["token_type_ids"], deterministic=True)
    return predict_batch


def predict_logits(predict_batch, params, features: dict[str, np.ndarray],
                   batch_size: int) -> np.ndarray:
    """[N, num_labels] logits; the last batch is padded so only one shape compiles."""
    num_examples = len(features["input_ids"])
    outputs = []
    for start in range(0, num_examples, batch_size):
        batch = {key: features[key][start:start + batch_size] for key in FEATURE_KEYS}
        real = len(batch["input_ids"])
        batch = {key: np.pad(value, ((0, batch_size - real), (0, 0))) for key, value in batch.items()}
        outputs.append(np.asarray(predict_batch(params, batch))[:real])
    return np.concatenate(outputs).astype(np.float32)


def predictions_from_logits(logits: np.ndarray, regression: bool) -> np.ndarray:
    return logits[:, 0] if regression else np.argmax(logits, axis=-1)


# ---------------------------------------------------------------------------- one task

def _label_config(task: str) -> dict[str, Any]:
    """config.json entries transformers needs for a GLUE head."""
    labels = glue_data.LABELS[task] or ("score",)
    return {"id2label": {str(i): name for i, name in enumerate(labels)},
            "label2id": {name: i for i, name in enumerate(labels)},
            "problem_type": "regression" if is_regression(task) else "single_label_classification",
            "finetuning_task": task}


def export_classifier(pretrained: Pretrained, params: dict, task: str, out_dir: str) -> None:
    """A transformers ElectraForSequenceClassification dir, with the tokenizer file beside it."""
    hf.save_pretrained(pretrained.model_config, jax.device_get(params), out_dir,
                       kind="sequence_classification", extra_config=_label_config(task))
    tokenizer_path = pretrained.tokenizer.path
    name = "vocab.txt" if tokenizer_path.endswith(".txt") else os.path.basename(tokenizer_path)
    if os.path.abspath(tokenizer_path) != os.path.abspath(os.path.join(out_dir, name)):
        shutil.copyfile(tokenizer_path, os.path.join(out_dir, name))


def score_splits(task: str, logits_by_key: dict[str, np.ndarray],
                 labels_by_key: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    regression = is_regression(task)
    return {key: glue_metrics.task_metrics(key, labels_by_key[key],
                                           predictions_from_logits(logits, regression))
            for key, logits in logits_by_key.items()}


@dataclasses.dataclass(frozen=True)
class TaskProgram:
    """The compiled pieces of one task, shared by all its seeds (compiled once)."""

    net: model.SequenceClassifier
    tx: optax.GradientTransformation
    train_step: Any  # jitted (state, batch, dropout_rng) -> (state, metrics)
    predict_batch: Any  # jitted (params, batch) -> logits
    total_steps: int


def build_task_program(config, pretrained: Pretrained, task: str, hyper: dict[str, float],
                       num_train_examples: int) -> TaskProgram:
    cfg = dataclasses.replace(pretrained.model_config, hidden_dropout=config.dropout,
                              attention_dropout=config.dropout)
    net = model.SequenceClassifier(cfg, glue_data.num_labels(task))
    total_steps = num_train_steps(num_train_examples, hyper["num_epochs"], config.batch_size)
    tx, schedule = make_optimizer(config, hyper, cfg.num_layers, total_steps)
    return TaskProgram(net, tx, make_train_step(net, tx, schedule, is_regression(task)),
                       make_predict_fn(net), total_steps)


def finetune_seed(config, pretrained: Pretrained, program: TaskProgram, task: str, seed: int,
                  train: dict, dev: dict) -> tuple[dict, list[dict]]:
    """Fine-tunes one run; returns (params, log of {step, loss, dev metrics...})."""
    net, total_steps, predict_batch = program.net, program.total_steps, program.predict_batch
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    encoder_params = None if config.from_scratch else pretrained.encoder_params
    params = init_classifier_params(net, encoder_params, init_rng, config.max_seq_length)
    state = FinetuneState(jnp.zeros((), jnp.int32), params, program.tx.init(params))
    batches = train_batches(train, config.batch_size, np.random.default_rng(seed))
    log = []
    progress = tqdm.tqdm(range(total_steps), desc=f"{task} seed {seed}", unit="step",
                         dynamic_ncols=True, disable=None)
    for step in progress:
        state, step_metrics = program.train_step(state, next(batches), dropout_rng)
        done = step + 1
        should_eval = done == total_steps or (config.eval_every and done % config.eval_every == 0)
        if should_eval or done % config.log_every == 0:
            entry = {"step": done, **{k: float(v) for k, v in step_metrics.items()}}
            if should_eval:
                logits = {key: predict_logits(predict_batch, state.params, dev[key], config.eval_batch_size)
                          for key in dev}
                entry["dev"] = score_splits(task, logits, {k: dev[k]["labels"] for k in dev})
            progress.set_postfix(loss=f"{entry['loss']:.4f}")
            logging.info("%s seed %d step %d: %s", task, seed, done, entry)
            log.append(entry)
    return jax.device_get(state.params), log


def _median_run(dev_scores: list[float]) -> int:
    """Index of the run whose dev score is the (lower) median."""
    order = np.argsort(dev_scores, kind="stable")
    return int(order[(len(order) - 1) // 2])


def median_metrics(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The median over runs of every metric of every dev split."""
    return {key: {name: float(np.median([run[key][name] for run in per_seed])) for name in per_seed[0][key]}
            for key in per_seed[0]}


def write_submission(task_key: str, idx: np.ndarray, predictions: np.ndarray, task: str,
                     out_dir: str) -> str:
    """`index<TAB>prediction` rows as the GLUE leaderboard reads them: label names for
    classification, STS-B scores clipped to [0, 5]."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, SUBMISSION_FILES[task_key])
    labels = glue_data.LABELS[task]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("index\tprediction\n")
        for index, prediction in zip(idx, predictions):
            value = (f"{float(np.clip(prediction, *STSB_RANGE)):.3f}" if labels is None
                     else labels[int(prediction)])
            f.write(f"{int(index)}\t{value}\n")
    os.replace(path + ".tmp", path)
    return path


def _load_test_splits(config, task: str, tokenizer) -> dict[str, dict[str, np.ndarray]]:
    if not config.predict_test:
        return {}
    try:
        return {key: load_split(config, task, split, tokenizer) for key, split in TEST_SPLITS[task]}
    except FileNotFoundError as e:
        logging.warning("%s: no test split (%s); no leaderboard file written", task, e)
        return {}


def finetune_task(config, pretrained: Pretrained, task: str, workdir: str) -> dict[str, Any]:
    """Fine-tunes `task` `config.seeds` times; returns its results entry."""
    tokenizer = pretrained.tokenizer
    train = load_split(config, task, "train", tokenizer)
    dev = {key: load_split(config, task, split, tokenizer) for key, split in DEV_SPLITS[task]}
    test = _load_test_splits(config, task, tokenizer)
    hyper = resolved_hyperparameters(config, task, pretrained.model_config)
    logging.info("%s: %d train examples, %s", task, len(train["labels"]), hyper)
    program = build_task_program(config, pretrained, task, hyper, len(train["labels"]))
    runs = []
    for seed in range(config.seed, config.seed + config.seeds):
        params, log = finetune_seed(config, pretrained, program, task, seed, train, dev)
        if config.save_models:
            export_classifier(pretrained, params, task, os.path.join(workdir, task, f"seed_{seed}"))
        test_logits = {key: predict_logits(program.predict_batch, params, test[key], config.eval_batch_size)
                       for key in test}
        runs.append({"seed": seed, "dev": log[-1]["dev"], "log": log, "test_logits": test_logits})
    dev_scores = [float(np.mean([glue_metrics.task_score(m) for m in run["dev"].values()])) for run in runs]
    chosen = runs[_median_run(dev_scores)]
    submission = [write_submission(key, test[key]["idx"],
                                   predictions_from_logits(logits, is_regression(task)), task,
                                   os.path.join(workdir, "submission"))
                  for key, logits in chosen["test_logits"].items()]
    return {
        "task": task,
        "hyperparameters": {**hyper, "num_train_examples": len(train["labels"]),
                            "num_train_steps": chosen["log"][-1]["step"]},
        "median": median_metrics([run["dev"] for run in runs]),
        "runs": [{k: run[k] for k in ("seed", "dev", "log")} for run in runs],
        "median_seed": chosen["seed"],
        "submission_files": submission,
    }


# ---------------------------------------------------------------------------- the suite

def results_table(results: dict[str, Any]) -> str:
    """Markdown table of the median dev metrics, one row per scored split."""
    rows = ["| task | metric | median dev | runs |", "|---|---|---|---|"]
    for task_result in results["tasks"].values():
        for key, task_metrics in task_result["median"].items():
            for name, value in task_metrics.items():
                per_run = ", ".join(f"{run['dev'][key][name]:.1f}" for run in task_result["runs"])
                rows.append(f"| {key} | {name} | {value:.2f} | {per_run} |")
    rows.append(f"| **GLUE score** | mean of task scores | {results['glue_score']:.2f} | |")
    if results.get("electra_paper_score") is not None:
        rows.append(f"| ELECTRA-paper dev average | one metric per task, no WNLI | "
                    f"{results['electra_paper_score']:.2f} | |")
    return "\n".join(rows) + "\n"


def _write_json(path: str, value: Any) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
    os.replace(path + ".tmp", path)


def tasks_of(config) -> list[str]:
    if config.task == "all":
        return list(glue_data.TASKS)
    if config.task not in glue_data.TASKS:
        raise ValueError(f"config.task={config.task!r}; use one of {sorted(glue_data.TASKS)} or 'all'")
    return [config.task]


def run(config, workdir: str) -> dict[str, Any]:
    """Fine-tunes every task of `config.task`; writes results.json, results.md and the
    leaderboard files into `workdir`. With task=all, tasks whose files are missing are
    skipped (and listed), not fatal."""
    os.makedirs(workdir, exist_ok=True)
    pretrained = load_pretrained(config.init, config.init_step, config.tokenizer)
    results: dict[str, Any] = {"init": config.init, "config": config.to_dict(), "tasks": {}, "skipped": {}}
    for task in tasks_of(config):
        try:
            results["tasks"][task] = finetune_task(config, pretrained, task, workdir)
        except FileNotFoundError as e:
            if config.task != "all":
                raise
            logging.warning("skipping %s: %s", task, e)
            results["skipped"][task] = str(e)
    medians = {key: m for r in results["tasks"].values() for key, m in r["median"].items()}
    if not medians:
        raise FileNotFoundError(f"no GLUE task could be loaded: {results['skipped']}")
    results["glue_score"] = glue_metrics.glue_score(medians)
    has_paper_task = any(key in glue_metrics.ELECTRA_PAPER_METRIC for key in medians)
    results["electra_paper_score"] = glue_metrics.electra_paper_score(medians) if has_paper_task else None
    _write_json(os.path.join(workdir, "results.json"), results)
    with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
        f.write(results_table(results))
    return results


def evaluate_finetuned(config, workdir: str) -> dict[str, Any]:
    """Scores the fine-tuned transformers directory `config.init` on `config.eval_split`
    (metrics if it has labels; a leaderboard file if it is a test split)."""
    if config.task == "all":
        raise ValueError("eval_only scores one task; set --config.task to it")
    task = tasks_of(config)[0]
    pretrained = load_pretrained(config.init, None, config.tokenizer)
    if pretrained.classifier_params is None:
        raise ValueError(f"{config.init} has no classification head; eval_only needs a "
                         "fine-tuned model (a WORKDIR/<task>/seed_<k> directory)")
    trained_task = (pretrained.hf_config or {}).get("finetuning_task")
    if trained_task not in (None, task):
        raise ValueError(f"{config.init} was fine-tuned on {trained_task!r}, not {task!r}; "
                         f"set --config.task={trained_task}")
    split = config.eval_split
    key_of_split = {s: key for key, s in (*DEV_SPLITS[task], *TEST_SPLITS[task])}
    if split not in key_of_split:
        raise ValueError(f"eval_split={split!r} for {task}; use one of {list(key_of_split)}")
    key = key_of_split[split]
    features = load_split(config, task, split, pretrained.tokenizer)
    net = model.SequenceClassifier(pretrained.model_config, glue_data.num_labels(task))
    params = {"electra": pretrained.encoder_params, "classifier": pretrained.classifier_params}
    logits = predict_logits(make_predict_fn(net), params, features, config.eval_batch_size)
    predictions = predictions_from_logits(logits, is_regression(task))
    result: dict[str, Any] = {"init": config.init, "task": task, "split": split,
                              "num_examples": len(predictions)}
    if split.startswith("test"):
        result["submission_file"] = write_submission(key, features["idx"], predictions, task,
                                                     os.path.join(workdir, "submission"))
    else:
        result["metrics"] = glue_metrics.task_metrics(key, features["labels"], predictions)
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, f"eval_{task}_{split}.json"), result)
    return result
