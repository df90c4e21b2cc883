"""Start a pretraining run from other weights, kept apart from resume (as t5x keeps them).

    --config.init.discriminator=DIR --config.init.generator=DIR    transformers ElectraForPreTraining
                                                                   + ElectraForMaskedLM directories
    --config.init.discriminator=DIR --config.init.discriminator_only=True   the generator starts fresh
    --config.init.workdir=RUN [--config.init.step=N]                another electra-jax run's weights

Only weights come over: the optimizer state is fresh and the schedule starts at step 0.
The architecture comes from the source. Every field of ARCHITECTURE that the config leaves
None (`configs/pretrain.py:SIZE,init`) is filled from it; a field set to another value is
refused, with the list of differences. The tokenizer comes from the source too, unless
data.tokenizer names one (the shards must have been built with it).

Embeddings: our pretraining model holds one set, shared by generator and discriminator,
but two transformers directories hold a copy each. The discriminator's copy is taken.
The generator's largest absolute difference from it is logged and returned. It is 0 for
google's released pairs, which were trained with one shared set.

A workdir that already holds checkpoints resumes from them, and init is not applied
(logged). The same command therefore both starts and resumes a run.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from absl import logging

from data_pipelines import tokenizer as tokenizer_lib
from electra_jax import checkpoints, hf, loading, model, presets

ARCHITECTURE = presets.ARCHITECTURE  # model.<field>s a source fixes: the networks' shapes and forward


def is_set(config) -> bool:
    init = config.get("init")
    return bool(init and (init.discriminator or init.generator or init.workdir))


def _check_combination(init) -> None:
    if init.workdir and (init.discriminator or init.generator):
        raise ValueError(
            f"init.workdir={init.workdir!r} and init.discriminator/generator are both set; "
            "start from one source: an electra-jax workdir or transformers directories"
        )
    if init.step is not None and not init.workdir:
        raise ValueError(f"init.step={init.step} needs init.workdir (transformers directories hold one set of weights)")
    if init.discriminator_only and (init.generator or init.workdir):
        raise ValueError(
            "init.discriminator_only=True loads init.discriminator alone; drop init.generator / init.workdir"
        )
    if init.generator and not init.discriminator:
        raise ValueError(
            f"init.generator={init.generator!r} without init.discriminator; the discriminator holds "
            "the embeddings both networks share: set --config.init.discriminator=DIR"
        )
    if init.discriminator and not init.generator and not init.discriminator_only:
        raise ValueError(
            f"init.discriminator={init.discriminator!r} without init.generator; set "
            "--config.init.generator=DIR (an ElectraForMaskedLM), or --config.init.discriminator_only=True "
            "to start the generator fresh"
        )


def _hf_network_config(path: str, what: str) -> model.ElectraConfig:
    if not loading.is_hf_dir(path):
        raise FileNotFoundError(
            f"{what}={path!r} is not a transformers ELECTRA directory (config.json with "
            "model_type 'electra' + model.safetensors)"
        )
    return hf.config_from_hf(loading.read_hf_config(path))


@dataclasses.dataclass(frozen=True)
class Source:
    """What a pretraining run starts from: the architecture it fixes and its tokenizer."""

    label: str  # for messages: where the weights come from
    architecture: dict[str, Any]  # ARCHITECTURE field -> value (the fields the source fixes)
    tokenizer: str  # a tokenizer file or directory; "" if the source has none
    objective_kind: Optional[str] = None  # an electra-jax run's objective.kind
    init: Any = None  # a resumed run's recorded init section (kept in config.json)


def _architecture(cfg: model.ElectraConfig) -> dict[str, Any]:
    return {field: getattr(cfg, field) for field in ARCHITECTURE if field != "generator_hidden_fraction"}


def _generator_fraction(disc: model.ElectraConfig, gen: model.ElectraConfig, path: str) -> float:
    """generator_hidden_fraction of a generator directory, refused where our generator rule
    (same depth and embeddings, FFN 4x hidden, heads hidden // 64) cannot express it."""
    fraction = gen.hidden_size / disc.hidden_size
    expected = model.generator_config(disc, fraction)
    fields = ("vocab_size", "embedding_size", "num_layers", "max_position_embeddings", "type_vocab_size")
    fields += ("hidden_size", "intermediate_size", "num_heads")
    differ = {f: (getattr(gen, f), getattr(expected, f)) for f in fields if getattr(gen, f) != getattr(expected, f)}
    if differ:
        details = ", ".join(f"{f}={got} (expected {want})" for f, (got, want) in differ.items())
        raise ValueError(
            f"the generator in {path} does not pair with the discriminator the way electra_jax builds "
            f"generators (same depth and embeddings, FFN 4 x hidden, max(1, hidden // 64) heads): {details}"
        )
    return fraction


def describe_source(config) -> Source:
    """The source `config.init` names, its architecture and tokenizer (weights not read)."""
    init = config.init
    _check_combination(init)
    if init.workdir:
        run_config = checkpoints.load_run_config(init.workdir)
        return Source(
            label=f"the run in {init.workdir}",
            architecture={field: run_config.model[field] for field in ARCHITECTURE},
            tokenizer=loading.workdir_tokenizer_path(init.workdir, run_config) if run_config.data.tokenizer else "",
            objective_kind=run_config.objective.kind,
        )
    disc = _hf_network_config(init.discriminator, "init.discriminator")
    architecture = _architecture(disc)
    if init.generator:
        gen = _hf_network_config(init.generator, "init.generator")
        architecture["generator_hidden_fraction"] = _generator_fraction(disc, gen, init.generator)
    return Source(
        label=f"the transformers directories {init.discriminator}" + (f" + {init.generator}" if init.generator else ""),
        architecture=architecture,
        tokenizer=tokenizer_lib.tokenizer_file_in(init.discriminator) or "",
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6)
    return a == b


def _resumed_source(workdir: str) -> Source:
    """A resume takes the architecture of the run it resumes, whatever init names."""
    saved = checkpoints.load_run_config(workdir)
    logging.info("%s holds checkpoints: resuming from them, init.* is not applied", workdir)
    return Source(
        label=f"the run being resumed in {workdir}",
        architecture={field: saved.model[field] for field in ARCHITECTURE},
        tokenizer=saved.data.tokenizer,
        init=saved.get("init"),
    )


def resolve_config(config, workdir: Optional[str] = None) -> ml_collections.ConfigDict:
    """A copy of `config` with the architecture (and tokenizer) of its `init` source filled
    in; a model field that contradicts the source is refused. When `workdir` holds
    checkpoints the run resumes: the source is that run, and its recorded init is kept.
    Without init, every ARCHITECTURE field must be set."""
    if not is_set(config):
        unset = [field for field in ARCHITECTURE if config.model[field] is None]
        if unset:
            raise ValueError(
                f"model.{', model.'.join(unset)} unset: the `init` variant takes the architecture from "
                "--config.init.discriminator/generator or --config.init.workdir; set one, or use a size without ',init'"
            )
        return config
    if config.data.source == "default":
        raise ValueError(
            "init with data.source='default': the embedded corpus gets a tokenizer of its own, not the "
            "source model's. Build shards with the source's vocabulary (python -m data_pipelines.prepare_data "
            "--config.tokenizer=<its vocab.txt or .model>) and pass --config.data.source=tfrecord and the data flags"
        )
    resuming = workdir is not None and checkpoints.has_checkpoints(workdir)
    source = _resumed_source(workdir) if resuming else describe_source(config)
    kind = config.objective.kind
    if source.objective_kind is not None and source.objective_kind != kind:
        raise ValueError(
            f"{source.label} trained objective.kind={source.objective_kind!r} but this run trains {kind!r}; "
            "init.workdir continues a run with the same objective"
        )
    differences = {
        field: (config.model[field], value)
        for field, value in source.architecture.items()
        if config.model[field] is not None and not _same(config.model[field], value)
    }
    if differences:
        details = ", ".join(f"model.{f}={mine} ({source.label}: {theirs})" for f, (mine, theirs) in differences.items())
        raise ValueError(
            f"the config contradicts {source.label}: {details}. The architecture comes from the source: drop "
            "these overrides, or start from configs/pretrain.py:SIZE,init, which leaves it to the source"
        )
    config = copy.deepcopy(config)  # keeps references (optim.num_layers follows model.num_layers)
    with config.unlocked():
        for field, value in source.architecture.items():
            config.model[field] = value
        if not config.data.tokenizer and source.tokenizer:
            config.data.tokenizer = source.tokenizer
        if source.init is not None:
            config.init = ml_collections.ConfigDict(source.init.to_dict())
    missing = [field for field in ARCHITECTURE if config.model[field] is None]
    if missing:
        raise ValueError(
            f"model.{', model.'.join(missing)} unset and {source.label} does not fix it; "
            f"set --config.model.{missing[0]}"
        )
    return config


# ---------------------------------------------------------------------------- weights


def _hf_pretraining_params(config) -> tuple[dict, dict[str, Any]]:
    """Pretraining-model subtrees from transformers directories (a fine-tuned
    discriminator's task head is left out), and what to report."""
    init = config.init
    layout = dict(scan_layers=config.model.scan_layers, vocab_pad_multiple=config.model.vocab_pad_multiple)
    _, disc = hf.load_pretrained(init.discriminator, **layout)
    networks = {"discriminator": {k: v for k, v in disc.items() if k in ("electra", "discriminator_predictions")}}
    report: dict[str, Any] = {}
    if init.generator:
        _, networks["generator"] = hf.load_pretrained(init.generator, kind="generator", **layout)
        gaps = jax.tree_util.tree_map(
            lambda a, b: float(np.max(np.abs(a - b))),
            networks["generator"]["electra"]["embeddings"],
            disc["electra"]["embeddings"],
        )
        report["generator_embedding_max_abs_difference"] = max(jax.tree_util.tree_leaves(gaps))
    return model.join_pretraining_params(networks, shared_from="discriminator"), report


def _overwrite(fresh: dict, loaded: dict, path: str, kept: list[str]) -> dict:
    """`fresh` with every leaf `loaded` holds replaced by a host array (shapes must agree);
    the subtrees `loaded` lacks stay as they are (never fetched) and are named in `kept`."""
    unknown = sorted(set(loaded) - set(fresh))
    if unknown:
        raise ValueError(f"the source has parameters {unknown} under {path or 'the root'} that this model lacks")
    out = {}
    for name, value in fresh.items():
        where = f"{path}/{name}" if path else name
        if name not in loaded:
            kept.append(where)
            out[name] = value
        elif isinstance(value, dict):
            out[name] = _overwrite(value, loaded[name], where, kept)
        else:
            new = np.asarray(loaded[name])
            if new.shape != value.shape:
                raise ValueError(
                    f"{where}: the source's shape {new.shape} differs from this model's {value.shape}; "
                    "the runs must share the architecture (and model.scan_layers / model.vocab_pad_multiple)"
                )
            out[name] = new.astype(value.dtype)
    return out


def initial_params(config, fresh_params: dict) -> tuple[dict, dict[str, Any]]:
    """The pretraining model's parameters from `config.init` (host arrays where the source
    has them; elsewhere `fresh_params`'s own leaves, e.g. a fresh generator, untouched and
    never fetched, so sharded arrays of a multi-host run stay valid), and a report: the
    source, the fresh subtrees, and the generator's embedding difference where two
    directories were given."""
    init = config.init
    if init.workdir:
        _, step, loaded = loading.restore_pretraining_params(init.workdir, init.step)
        loaded = jax.device_get(loaded)
        report = {"source": init.workdir, "step": step}
    else:
        loaded, report = _hf_pretraining_params(config)
        report["source"] = init.discriminator + (f" + {init.generator}" if init.generator else "")
    kept: list[str] = []
    params = _overwrite(fresh_params, loaded, "", kept)
    report["fresh"] = kept
    logging.info("init from %s: %s", report["source"], report)
    return params, report
