"""Trained weights opened for use: a pretraining workdir's checkpoint or a transformers
ELECTRA directory, parameters only, read-only.

    network = load_network(init)                          # the discriminator
    generator = load_network(init, network="generator")   # fill-mask
    encoder = load_network(init, network="encoder")       # what fine-tuning starts from
    run_config, step, params = restore_pretraining_params(workdir)   # export

A workdir is read without its optimizer moments and without touching the run: a run
still training in it never loses an in-flight save. Evaluation, export, fill-mask,
inference and fine-tuning all open weights here; none of them imports the training loop.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import flax.linen as nn
import jax
import ml_collections

from data_pipelines import tokenizer as tokenizer_lib
from electra_jax import checkpoints, hf, model

NETWORKS = ("discriminator", "generator", "encoder")
# Subtrees of a pretrained network that fine-tuning drops (only its `electra` encoder is kept).
PRETRAINING_HEADS = ("discriminator_predictions", "generator_predictions", "generator_lm_head")


@dataclasses.dataclass(frozen=True)
class Network:
    """One standalone network (discriminator, generator or a fine-tuned model)."""

    model_config: model.ElectraConfig
    params: dict  # {electra, <head subtrees>} as hf.load_pretrained returns them
    tokenizer: tokenizer_lib.Tokenizer
    hf_config: Optional[dict] = None  # config.json of a transformers directory

    @property
    def encoder_params(self) -> Any:
        """The `electra` subtree: embeddings (+ projection) and encoder."""
        return self.params["electra"]

    @property
    def head_params(self) -> Optional[dict]:
        """The subtrees of a fine-tuned model's head ({classifier: ...}), else None."""
        heads = {name: subtree for name, subtree in self.params.items() if name not in ("electra", *PRETRAINING_HEADS)}
        return heads or None

    @property
    def classifier_params(self) -> Any:
        """The `classifier` subtree of a fine-tuned sequence/token classifier, else None."""
        return (self.head_params or {}).get("classifier")


def read_hf_config(path: str) -> dict:
    """config.json of a transformers directory."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def is_hf_dir(path: str) -> bool:
    if not os.path.exists(os.path.join(path, "config.json")):
        return False
    return read_hf_config(path).get("model_type") == "electra"


def restore_pretraining_params(workdir: str, step: Optional[int] = None) -> tuple[ml_collections.ConfigDict, int, dict]:
    """(run config, step, params of the ElectraPretrainingModel) at `step` (latest if None)
    of a pretraining workdir, on the first local device."""
    run_config = checkpoints.load_run_config(workdir)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        nn.meta.unbox(model.abstract_pretraining_params(run_config)),
    )
    ckpt = checkpoints.Checkpointer(workdir, save_every=1, keep=None, read_only=True)
    try:
        step, params = ckpt.restore_params(step, abstract)
    finally:
        ckpt.close()
    return run_config, step, params


def _check_vocab(cfg: model.ElectraConfig, tokenizer: tokenizer_lib.Tokenizer, init: str) -> None:
    if cfg.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"the checkpoint {init} has vocab_size={cfg.vocab_size} but the tokenizer at "
            f"{getattr(tokenizer, 'path', '?')} has {tokenizer.vocab_size} tokens; use "
            "the tokenizer the model was pretrained with (--config.tokenizer=...)"
        )


def workdir_tokenizer_path(workdir: str, run_config, tokenizer_path: str = "") -> str:
    """`tokenizer_path`, else the data.tokenizer the run in `workdir` recorded."""
    tokenizer_path = tokenizer_path or run_config.data.tokenizer
    if not tokenizer_path:
        raise ValueError(
            f"the pretraining run in {workdir} records no data.tokenizer; pass "
            "--config.tokenizer=<the sentencepiece model or vocab.txt it used>"
        )
    return tokenizer_path


def _load_hf_network(init: str, init_step: Optional[int], tokenizer_path: str, network: str) -> Network:
    if init_step is not None:
        raise ValueError(
            f"init_step={init_step} given but {init} is a transformers "
            "directory (one set of weights); drop --config.init_step"
        )
    hf_config = read_hf_config(init)
    cfg, params = hf.load_pretrained(init)
    is_generator = "generator_predictions" in params
    if network != "encoder" and is_generator != (network == "generator"):
        held = "an ElectraForMaskedLM generator" if is_generator else "no generator (MLM) head"
        wanted = (
            "the generator (an ElectraForMaskedLM directory)"
            if network == "generator"
            else "the discriminator (ElectraForPreTraining)"
        )
        raise ValueError(f"{init} holds {held}; use {wanted} instead")
    tokenizer = tokenizer_lib.load_tokenizer(tokenizer_path or init)
    _check_vocab(cfg, tokenizer, init)
    return Network(cfg, params, tokenizer, hf_config)


def _load_workdir_network(init: str, init_step: Optional[int], tokenizer_path: str, network: str) -> Network:
    run_config, _, pretraining_params = restore_pretraining_params(init, init_step)
    networks = model.pretraining_networks(run_config)
    if network == "encoder":
        network = "discriminator" if "discriminator" in networks else "generator"
    if network not in networks:
        raise ValueError(
            f"{init} is an MLM-only run (objective.kind={run_config.objective.kind!r}): "
            f"it has no {network}; load its generator (network='generator')"
        )
    params = model.split_pretraining_params(jax.device_get(pretraining_params))[network]
    cfg = networks[network]
    tokenizer = tokenizer_lib.load_tokenizer(workdir_tokenizer_path(init, run_config, tokenizer_path))
    _check_vocab(cfg, tokenizer, init)
    return Network(cfg, params, tokenizer)


def load_network(
    init: str, init_step: Optional[int] = None, tokenizer_path: str = "", network: str = "discriminator"
) -> Network:
    """The discriminator (or generator, `network="generator"`; or `network="encoder"`:
    the discriminator where there is one, else the masked LM of an MLM-only run) of a
    pretraining workdir's checkpoint, or the network a transformers ELECTRA directory
    holds (a fine-tuned one included), with its tokenizer."""
    if network not in NETWORKS:
        raise ValueError(f"network={network!r}; choose one of {NETWORKS}")
    if not init:
        raise ValueError(
            "config.init is empty; set --config.init to a pretraining workdir or a transformers ELECTRA directory"
        )
    if is_hf_dir(init):
        return _load_hf_network(init, init_step, tokenizer_path, network)
    if os.path.isdir(os.path.join(init, "checkpoints")):
        return _load_workdir_network(init, init_step, tokenizer_path, network)
    raise FileNotFoundError(
        f"{init} is neither a pretraining workdir (config.json + checkpoints/) "
        "nor a transformers ELECTRA directory (config.json + model.safetensors)"
    )
