"""The pretraining program's one entry point to its data, from the config's `data`
section (MaxText's `create_data_iterator(config, mesh)`):

    config = resolve_data_source(config, workdir)   # data.source=default: shards built once
    train_iterator = make_train_iterator(config)      # this process's slice, resumable
    for batch in eval_batches(config, batch_sharding): ...   # the fixed held-out batches

`data.source` names one of `SOURCES`: `tfrecord` (shards of build_shards / prepare_data),
`synthetic` (random tokens; benchmarks, no tensorflow) or `default` (the embedded corpus,
prepared into shards once). A new source is its functions here and one line in `SOURCES`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
from absl import logging
from etils import epath

from data_pipelines import build_shards, files
from data_pipelines import pretraining as data
from data_pipelines import tokenizer as tokenizer_lib


def _host_batch_size(config) -> int:
    if config.train.batch_size % jax.process_count():
        raise ValueError(
            f"train.batch_size={config.train.batch_size} does not divide over {jax.process_count()} processes"
        )
    return config.train.batch_size // jax.process_count()


def _word_starts(config) -> bool:
    """Whether batches carry the shards' word starts: whole-word masking needs them."""
    return config.objective.whole_word_masking


def _synthetic(config, seed: int):
    return data.make_synthetic_iterator(
        batch_size=_host_batch_size(config),
        seq_length=config.train.max_seq_length,
        vocab_size=config.model.vocab_size,
        seed=seed,
        word_starts=_word_starts(config),
    )


def _tfrecord_train(config):
    if not config.data.train_files:
        raise ValueError(
            "data.train_files is empty; point it at TFRecord shards "
            "(python -m data_pipelines.build_shards) or set data.source=synthetic"
        )
    return data.make_pretraining_iterator(
        config.data.train_files,
        batch_size=_host_batch_size(config),
        seq_length=config.train.max_seq_length,
        seed=config.train.seed,
        shuffle_buffer=config.data.shuffle_buffer,
        repeat=True,
        word_starts=_word_starts(config),
    )


def _tfrecord_eval(config):
    return data.make_pretraining_iterator(
        config.data.eval_files,
        batch_size=_host_batch_size(config),
        seq_length=config.train.max_seq_length,
        seed=0,
        shuffle_buffer=0,
        repeat=False,
        word_starts=_word_starts(config),
    )


def _check_eval_files(config, workdir: str):
    if config.train.eval_every > 0 and not config.data.eval_files:
        raise ValueError(
            f"train.eval_every={config.train.eval_every} but data.eval_files is empty; give held-out "
            "shards (--config.data.eval_files=GLOB) or --config.train.eval_every=0"
        )
    return config


def _use_default_corpus(config, workdir: str):
    """Build (once) the tokenizer and shards of the embedded default corpus in the workdir
    and point a copy of `config` at them."""
    d = config.data
    given = [f"data.{key}={d[key]}" for key in ("train_files", "eval_files", "tokenizer") if d[key]]
    if given:  # the embedded corpus would silently replace them
        raise ValueError(
            f"{', '.join(given)} given, but data.source='default' trains on the embedded corpus; "
            "add --config.data.source=tfrecord to train on your shards"
        )
    if jax.process_count() > 1:
        raise ValueError(
            "data.source='default' is a single-process demo; build shards with "
            "python -m data_pipelines.prepare_data and set data.train_files"
        )
    from data_pipelines import prepare_data

    output_dir = os.path.join(workdir, "default_data")
    logging.info("data.source=default: the embedded corpus's tokenizer and shards, built once, in %s", output_dir)
    prepared = prepare_data.prepare_data(
        output_dir,
        vocab_size=config.model.vocab_size,
        max_seq_length=config.train.max_seq_length,
        seed=config.train.seed,
        show_progress=False,
        num_processes=min(os.cpu_count() or 1, 8),
    )
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.data.source = "tfrecord"
        config.data.train_files = prepared["train_files"]
        config.data.eval_files = prepared["eval_files"]
        config.data.tokenizer = prepared["tokenizer"]
    return config


@dataclasses.dataclass(frozen=True)
class Source:
    train: Callable  # config -> this process's resumable training stream (dicts of numpy [host_batch, seq])
    eval: Callable  # config -> the held-out host batches, the same every evaluation
    prepare: Callable  # (config, workdir) -> the config to read with, checked (and its data built)


SOURCES = {
    "tfrecord": Source(_tfrecord_train, _tfrecord_eval, _check_eval_files),
    "synthetic": Source(
        lambda config: _synthetic(config, config.train.seed),
        lambda config: _synthetic(config, config.train.seed + 10_000),
        lambda config, workdir: config,
    ),
    # prepared into tfrecord shards once per workdir (`_use_default_corpus`)
    "default": Source(_tfrecord_train, _tfrecord_eval, _use_default_corpus),
}


def source_of(config) -> Source:
    if config.data.source not in SOURCES:
        raise ValueError(f"data.source={config.data.source!r}; choose one of {sorted(SOURCES)}")
    return SOURCES[config.data.source]


def make_train_iterator(config):
    """This process's slice of the training stream (dicts of numpy [host_batch, seq])."""
    return source_of(config).train(config)


def eval_batches(config, batch_sharding):
    """The fixed held-out batches (`train.eval_steps` of them, same every evaluation)."""
    for _, batch in zip(range(config.train.eval_steps), source_of(config).eval(config)):
        data.check_token_ids(batch, config.model.vocab_size, f"data.eval_files={config.data.eval_files}")
        yield data.to_global_batch(batch, batch_sharding)


def check_tokenizer(config) -> None:
    """The config's vocabulary and special ids must be the tokenizer's."""
    if not config.data.tokenizer:
        return
    tok = tokenizer_lib.load_tokenizer(config.data.tokenizer)
    tokenizer_lib.check_vocab_size(config.model.vocab_size, tok)
    if config.objective.mask_token_id != tok.mask_id:
        raise ValueError(
            f"objective.mask_token_id={config.objective.mask_token_id} but the "
            f"tokenizer's [MASK] is {tok.mask_id}; set "
            f"--config.objective.mask_token_id={tok.mask_id}"
        )
    missing = sorted(set(tok.special_ids) - set(config.objective.special_token_ids))
    if missing:
        raise ValueError(
            f"objective.special_token_ids={tuple(config.objective.special_token_ids)} "
            f"misses the tokenizer's special ids {missing}; set "
            f"--config.objective.special_token_ids='{tuple(tok.special_ids)}'"
        )
    if config.data.source == "tfrecord":
        digest = files.sha256(config.data.tokenizer)
        for key in ("train_files", "eval_files"):
            _check_shards_tokenizer(config.data[key], key, config.data.tokenizer, digest)


def _check_shards_tokenizer(patterns: str, key: str, tokenizer: str, digest: str) -> None:
    """Shards built by build_shards record the sha256 of their tokenizer: another tokenizer
    of the same size would train (and export) on ids that mean other pieces."""
    for pattern in filter(None, (entry.strip() for entry in patterns.split(","))):
        record = epath.Path(os.path.dirname(pattern)) / build_shards.BUILD_CONFIG_FILE
        if not record.exists():
            continue  # shards of another builder: nothing to compare
        built_with = files.read_json(record).get("tokenizer")
        if isinstance(built_with, dict) and built_with.get("sha256") not in (None, digest):
            built_path = os.path.normpath(os.path.join(os.path.dirname(pattern), built_with["path"]))
            raise ValueError(
                f"data.tokenizer={tokenizer} is not the tokenizer the shards of data.{key}={pattern} were built with "
                f"({record} records {built_path}, of another sha256); set --config.data.tokenizer to that one"
            )


def resolve_data_source(config, workdir: str):
    """`config` ready to read: its source prepared (the default corpus's tokenizer and
    shards built once in the workdir and named in a copy of it), its vocabulary and special
    ids checked against the tokenizer's."""
    config = source_of(config).prepare(config, workdir)
    check_tokenizer(config)
    return config
