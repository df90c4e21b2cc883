"""HuggingFace transformers <-> electra_jax: configs and weights, by an explicit table.

A HF ELECTRA directory holds `config.json` and `model.safetensors` (or `pytorch_model.bin`,
read with `torch.load(weights_only=True)`, never a plain pickle). The five kinds of `KINDS`:
`discriminator` (`ElectraForPreTraining`), `generator` (`ElectraForMaskedLM`),
`sequence_classification` (`ElectraForSequenceClassification`, a fine-tuned GLUE model;
its config.json also carries num_labels / id2label / problem_type, see `save_pretrained`),
`question_answering` (`ElectraForQuestionAnswering`, a SQuAD span head) and
`token_classification` (`ElectraForTokenClassification`, an NER tagger; id2label as above).
Nothing here needs torch except reading a `.bin` file.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from data_pipelines import files
from electra_jax import model

KINDS = {
    "discriminator": "ElectraForPreTraining",
    "generator": "ElectraForMaskedLM",
    "sequence_classification": "ElectraForSequenceClassification",
    "question_answering": "ElectraForQuestionAnswering",
    "token_classification": "ElectraForTokenClassification",
}
# Buffers some HF checkpoints carry that are not parameters.
_IGNORED_HF_KEYS = ("electra.embeddings.position_ids", "electra.embeddings.token_type_ids")
# The tied MLM output matrix: the word-embedding table itself, never a separate parameter.
_TIED_HF_KEY = "generator_lm_head.weight"
# Parameters with one row per vocabulary entry: padded past vocab_size in electra_jax when
# `vocab_pad_multiple` > 1 (zero rows), exactly vocab_size rows in HF.
_VOCAB_ROW_HF_KEYS = ("electra.embeddings.word_embeddings.weight", "generator_lm_head.bias")

# (flax module path, HF module path, parameter kind)
_EMBEDDING_MODULES = [
    ("electra/embeddings/word_embeddings", "electra.embeddings.word_embeddings", "embed"),
    ("electra/embeddings/position_embeddings", "electra.embeddings.position_embeddings", "embed"),
    ("electra/embeddings/token_type_embeddings", "electra.embeddings.token_type_embeddings", "embed"),
    ("electra/embeddings/LayerNorm", "electra.embeddings.LayerNorm", "layer_norm"),
]
_PROJECTION_MODULE = ("electra/embeddings_project", "electra.embeddings_project", "dense")
_LAYER_MODULES = [
    ("attention_self/query", "attention.self.query", "dense"),
    ("attention_self/key", "attention.self.key", "dense"),
    ("attention_self/value", "attention.self.value", "dense"),
    ("attention_output_dense", "attention.output.dense", "dense"),
    ("attention_output_LayerNorm", "attention.output.LayerNorm", "layer_norm"),
    ("intermediate_dense", "intermediate.dense", "dense"),
    ("output_dense", "output.dense", "dense"),
    ("output_LayerNorm", "output.LayerNorm", "layer_norm"),
]
_HEAD_MODULES = {
    "discriminator": [
        ("discriminator_predictions/dense", "discriminator_predictions.dense", "dense"),
        ("discriminator_predictions/dense_prediction", "discriminator_predictions.dense_prediction", "dense"),
    ],
    "generator": [
        ("generator_predictions/dense", "generator_predictions.dense", "dense"),
        ("generator_predictions/LayerNorm", "generator_predictions.LayerNorm", "layer_norm"),
        ("generator_lm_head", "generator_lm_head", "bias"),
    ],
    "sequence_classification": [
        ("classifier/dense", "classifier.dense", "dense"),
        ("classifier/out_proj", "classifier.out_proj", "dense"),
    ],
    # span start/end logits; our SQuAD 2.0 answerability head has no HF counterpart
    "question_answering": [("qa_outputs", "qa_outputs", "dense")],
    "token_classification": [("classifier", "classifier", "dense")],  # one dense on every token
}
# parameter kind -> [(flax leaf, HF leaf, transpose)]
_LEAVES = {
    "embed": [("embedding", "weight", False)],
    "layer_norm": [("scale", "weight", False), ("bias", "bias", False)],
    "dense": [("kernel", "weight", True), ("bias", "bias", False)],
    "bias": [("bias", "bias", False)],
}


def param_table(cfg: model.ElectraConfig, kind: str) -> list[tuple[str, str, bool]]:
    """Every (flax path, HF key, transpose) of a standalone network in the unscanned layout."""
    _check_kind(kind)
    modules = list(_EMBEDDING_MODULES)
    if cfg.embedding_size != cfg.hidden_size:
        modules.append(_PROJECTION_MODULE)
    for i in range(cfg.num_layers):
        modules += [
            (f"electra/encoder/layer_{i}/{flax}", f"electra.encoder.layer.{i}.{hf}", k)
            for flax, hf, k in _LAYER_MODULES
        ]
    modules += _HEAD_MODULES[kind]
    return [
        (f"{flax}/{flax_leaf}", f"{hf}.{hf_leaf}", transpose)
        for flax, hf, k in modules
        for flax_leaf, hf_leaf, transpose in _LEAVES[k]
    ]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; choose one of {sorted(KINDS)}")


# ---------------------------------------------------------------------------- configs


def config_from_hf(hf_config: dict[str, Any], **overrides) -> model.ElectraConfig:
    """ElectraConfig from a transformers `config.json` dict (compute options via overrides)."""
    if hf_config.get("model_type", "electra") != "electra":
        raise ValueError(
            f"model_type={hf_config.get('model_type')!r} in config.json; only 'electra' checkpoints can be loaded"
        )
    act = hf_config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(
            f"hidden_act={act!r} in config.json; electra_jax implements the exact 'gelu' of BERT/ELECTRA only"
        )
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"position_embedding_type={position_type!r}; only 'absolute' is supported")
    values = dict(
        vocab_size=hf_config["vocab_size"],
        embedding_size=hf_config.get("embedding_size", hf_config["hidden_size"]),
        hidden_size=hf_config["hidden_size"],
        num_layers=hf_config["num_hidden_layers"],
        num_heads=hf_config["num_attention_heads"],
        intermediate_size=hf_config["intermediate_size"],
        max_position_embeddings=hf_config.get("max_position_embeddings", 512),
        type_vocab_size=hf_config.get("type_vocab_size", 2),
        hidden_dropout=hf_config.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf_config.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=hf_config.get("layer_norm_eps", 1e-12),
        initializer_range=hf_config.get("initializer_range", 0.02),
    )
    values.update(overrides)
    return model.ElectraConfig(**values)


def config_to_hf(cfg: model.ElectraConfig, kind: str) -> dict[str, Any]:
    """A transformers `config.json` dict for `cfg` as an ElectraForPreTraining/ForMaskedLM."""
    _check_kind(kind)
    return {
        "architectures": [KINDS[kind]],
        "model_type": "electra",
        "vocab_size": cfg.vocab_size,
        "embedding_size": cfg.embedding_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "position_embedding_type": "absolute",
        "pad_token_id": 0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


# ---------------------------------------------------------------------------- weights


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        flat.update(_flatten(value, path) if isinstance(value, dict) else {path: value})
    return flat


def unflatten(flat: dict[str, Any]) -> dict:
    """{"a/b": x} -> {"a": {"b": x}}: a tree from its "/"-joined paths."""
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


def _unscan(flat: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """Scanned layout (`encoder/layers/layer/...`, leading layer axis) -> `encoder/layer_{i}/...`."""
    scanned = "electra/encoder/layers/layer/"
    out = {}
    for path, value in flat.items():
        if path.startswith(scanned):
            rest = path[len(scanned) :]
            out.update({f"electra/encoder/layer_{i}/{rest}": value[i] for i in range(num_layers)})
        else:
            out[path] = value
    return out


def _scan(flat: dict[str, Any], num_layers: int) -> dict[str, Any]:
    out, stacked = {}, {}
    for path, value in flat.items():
        if path.startswith("electra/encoder/layer_"):
            rest = path.split("/", 3)[3]
            stacked.setdefault(rest, [None] * num_layers)[int(path.split("/")[2][6:])] = value
        else:
            out[path] = value
    out.update({f"electra/encoder/layers/layer/{rest}": np.stack(values) for rest, values in stacked.items()})
    return out


def params_to_hf(cfg: model.ElectraConfig, params: dict, kind: str) -> dict[str, np.ndarray]:
    """electra_jax params of a standalone Generator/Discriminator -> HF state dict (numpy)."""
    flat = _flatten(params)
    if cfg.scan_layers:
        flat = _unscan(flat, cfg.num_layers)
    table = param_table(cfg, kind)
    _check_keys(set(flat), {flax for flax, _, _ in table}, "electra_jax params")
    state = {}
    for flax_path, hf_key, transpose in table:
        value = np.asarray(flat[flax_path], dtype=np.float32)
        if hf_key in _VOCAB_ROW_HF_KEYS:
            value = value[: cfg.vocab_size]  # drop the padding rows
        state[hf_key] = np.ascontiguousarray(value.T if transpose else value)
    return state


def params_from_hf(cfg: model.ElectraConfig, state: dict[str, np.ndarray], kind: str) -> dict:
    """HF state dict -> electra_jax params; unknown or missing keys are an error listing them."""
    state = {k: v for k, v in state.items() if k not in _IGNORED_HF_KEYS}
    if kind == "generator" and _TIED_HF_KEY in state:
        tied = state.pop(_TIED_HF_KEY)
        word = state.get("electra.embeddings.word_embeddings.weight")
        if word is not None and not np.array_equal(tied, word):
            raise ValueError(
                f"{_TIED_HF_KEY} differs from the word embeddings; electra_jax ties "
                "them as ELECTRA does and cannot load an untied generator"
            )
    table = param_table(cfg, kind)
    _check_keys(set(state), {hf for _, hf, _ in table}, "HF state dict")
    flat = {}
    for flax_path, hf_key, transpose in table:
        value = np.asarray(state[hf_key], dtype=np.float32)
        if hf_key in _VOCAB_ROW_HF_KEYS:
            value = _pad_vocab_rows(value, cfg, hf_key)
        flat[flax_path] = value.T if transpose else value
    if cfg.scan_layers:
        flat = _scan(flat, cfg.num_layers)
    return unflatten(flat)


def _pad_vocab_rows(value: np.ndarray, cfg: model.ElectraConfig, hf_key: str) -> np.ndarray:
    if value.shape[0] != cfg.vocab_size:
        raise ValueError(
            f"{hf_key} has {value.shape[0]} rows but vocab_size={cfg.vocab_size}; config.json and the weights disagree"
        )
    padding = [(0, cfg.padded_vocab_size - cfg.vocab_size)] + [(0, 0)] * (value.ndim - 1)
    return np.pad(value, padding)


def _check_keys(found: set[str], expected: set[str], what: str) -> None:
    missing, unknown = sorted(expected - found), sorted(found - expected)
    if missing or unknown:
        raise ValueError(
            f"{what} does not match the ELECTRA parameter table: "
            f"missing={missing[:20]}{' ...' if len(missing) > 20 else ''}, "
            f"unknown={unknown[:20]}{' ...' if len(unknown) > 20 else ''}"
        )


# ---------------------------------------------------------------------------- directories


def _read_state_dict(hf_dir: str) -> dict[str, np.ndarray]:
    safetensors_path = os.path.join(hf_dir, "model.safetensors")
    bin_path = os.path.join(hf_dir, "pytorch_model.bin")
    if os.path.exists(safetensors_path):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return load_file(safetensors_path)
        except SafetensorError as error:
            raise ValueError(
                f"{safetensors_path} is not a readable safetensors file ({error}); it may be truncated by an "
                "interrupted download or copy: fetch or export it again"
            ) from None
    if os.path.exists(bin_path):
        import pickle

        import torch  # only for .bin checkpoints

        try:
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError) as error:
            # Not chained: torch's own message advises weights_only=False, which runs the pickle's code.
            raise ValueError(
                f"{bin_path} could not be read as tensors only ({type(error).__name__}); pickles holding other "
                "objects are never loaded, since loading them can run code. Convert it to model.safetensors "
                "where you trust its source (transformers: ElectraForPreTraining.from_pretrained(DIR)"
                ".save_pretrained(DIR, safe_serialization=True)), or fetch it again if it is truncated"
            ) from None
        return {k: v.float().numpy() for k, v in state.items()}
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {hf_dir}")


def _architecture_of_weights(state: dict[str, np.ndarray]) -> dict[str, int]:
    """The config.json architecture fields that the weights' shapes imply."""
    shapes = {key: value.shape for key, value in state.items()}
    implied = {}
    for key, fields in (
        ("electra.embeddings.word_embeddings.weight", ("vocab_size", "embedding_size")),
        ("electra.embeddings.position_embeddings.weight", ("max_position_embeddings", None)),
        ("electra.embeddings.token_type_embeddings.weight", ("type_vocab_size", None)),
        ("electra.encoder.layer.0.attention.self.query.weight", ("hidden_size", None)),
        ("electra.encoder.layer.0.intermediate.dense.weight", ("intermediate_size", None)),
    ):
        if key in shapes:
            implied.update({field: size for field, size in zip(fields, shapes[key]) if field})
    layers = {int(key.split(".")[3]) for key in shapes if key.startswith("electra.encoder.layer.")}
    if layers:
        implied["num_hidden_layers"] = max(layers) + 1
    return implied


def _check_config_matches_weights(hf_config: dict[str, Any], state: dict[str, np.ndarray], hf_dir: str) -> None:
    implied = _architecture_of_weights(state)
    differences = [
        f"{field}={hf_config[field]} in config.json, {size} in the weights"
        for field, size in implied.items()
        if hf_config.get(field) is not None and hf_config[field] != size
    ]
    if differences:
        raise ValueError(
            f"{hf_dir}: config.json and the weights disagree ({'; '.join(differences)}); they must come from "
            "the same model: replace config.json with the one saved with these weights"
        )


def detect_kind(hf_config: dict[str, Any], state_keys) -> str:
    """'generator' or 'discriminator', from config.json's architectures, else the weights."""
    for kind, architecture in KINDS.items():
        if architecture in hf_config.get("architectures", []):
            return kind
    if any(k.startswith("discriminator_predictions.") for k in state_keys):
        return "discriminator"
    if any(k.startswith("generator_predictions.") for k in state_keys):
        return "generator"
    if "classifier.weight" in state_keys:
        return "token_classification"
    if any(k.startswith("classifier.") for k in state_keys):
        return "sequence_classification"
    if any(k.startswith("qa_outputs.") for k in state_keys):
        return "question_answering"
    raise ValueError(
        "cannot tell whether this checkpoint is an ElectraForPreTraining or an "
        f"ElectraForMaskedLM (architectures={hf_config.get('architectures')}); "
        "pass kind='discriminator' or kind='generator'"
    )


def load_pretrained(hf_dir: str, kind: str | None = None, **config_overrides):
    """(ElectraConfig, params) from a transformers ELECTRA directory.

    `config_overrides` set compute options (dtype, scan_layers, remat_policy, ...).
    """
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"no config.json in {hf_dir}; expected a transformers ELECTRA directory (config.json + model.safetensors)"
        )
    with open(config_path, encoding="utf-8") as f:
        hf_config = json.load(f)
    state = _read_state_dict(hf_dir)
    _check_config_matches_weights(hf_config, state, hf_dir)
    kind = kind or detect_kind(hf_config, state)
    cfg = config_from_hf(hf_config, **config_overrides)
    return cfg, params_from_hf(cfg, state, kind)


def save_pretrained(
    cfg: model.ElectraConfig,
    params: dict,
    out_dir: str,
    kind: str = "discriminator",
    extra_config: dict[str, Any] | None = None,
) -> None:
    """Write `params` as a transformers ELECTRA directory that `from_pretrained` loads.

    `extra_config` entries are added to config.json; a `sequence_classification` model
    needs `id2label` (its length is transformers' num_labels) and `problem_type`
    ('single_label_classification' or 'regression').

    Files are written under temporary names and renamed, so an interrupted export never
    leaves a half-written model behind a final name.
    """
    import safetensors.numpy

    state = params_to_hf(cfg, params, kind)
    files.write_bytes(
        os.path.join(out_dir, "model.safetensors"), safetensors.numpy.save(state, metadata={"format": "pt"})
    )
    files.write_json(
        os.path.join(out_dir, "config.json"), {**config_to_hf(cfg, kind), **(extra_config or {})}, sort_keys=True
    )
