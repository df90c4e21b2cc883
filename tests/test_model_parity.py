"""electra_jax vs HuggingFace transformers (PyTorch, CPU): weights both ways, same logits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from configs import pretrain as recipes
from electra_jax import hf, model

TOLERANCE = 1e-4  # float32 on both sides; observed differences are ~1e-6


def _configs(size):
    return model.configs_from_dict(recipes.model_config(size))


def _hf_model(cfg, kind, seed=0):
    torch.manual_seed(seed)
    hf_config = transformers.ElectraConfig(
        **{k: v for k, v in hf.config_to_hf(cfg, kind).items() if k != "architectures"}
    )
    cls = transformers.ElectraForPreTraining if kind == "discriminator" else transformers.ElectraForMaskedLM
    net = cls(hf_config).eval()
    with torch.no_grad():  # HF zero-inits biases and LayerNorms; randomise them so they are tested
        for name, p in net.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return net


def _inputs(vocab_size, batch=2, seq_len=16, seed=0):
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(5, vocab_size, size=(batch, seq_len)).astype(np.int32)
    attention_mask = np.ones((batch, seq_len), np.int32)
    attention_mask[1, 11:] = 0  # padding in the second sequence
    input_ids[1, 11:] = 0
    token_type_ids = np.zeros((batch, seq_len), np.int32)
    token_type_ids[:, 7:] = 1  # both segments present
    return input_ids, attention_mask, token_type_ids


def _hf_logits(net, inputs):
    ids, mask, types = (torch.from_numpy(x).long() for x in inputs)
    with torch.no_grad():
        return net(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()


def _jax_logits(cfg, params, kind, inputs):
    net = model.Discriminator(cfg) if kind == "discriminator" else model.Generator(cfg)
    ids, mask, types = (jnp.asarray(x) for x in inputs)
    return np.asarray(net.apply({"params": params}, ids, attention_mask=mask, token_type_ids=types, deterministic=True))


CASES = [(size, kind) for size in ("tiny", "small") for kind in ("discriminator", "generator")]


@pytest.mark.parametrize("size,kind", CASES)
def test_hf_to_jax_logits_match(size, kind):
    gen_cfg, disc_cfg = _configs(size)
    cfg = disc_cfg if kind == "discriminator" else gen_cfg
    net = _hf_model(cfg, kind)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    params = hf.params_from_hf(cfg, state, kind)
    inputs = _inputs(cfg.vocab_size)
    expected, got = _hf_logits(net, inputs), _jax_logits(cfg, params, kind, inputs)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= TOLERANCE


@pytest.mark.parametrize("size,kind", CASES)
def test_jax_to_hf_logits_match(size, kind, tmp_path):
    gen_cfg, disc_cfg = _configs(size)
    cfg = disc_cfg if kind == "discriminator" else gen_cfg
    net_class = model.Discriminator if kind == "discriminator" else model.Generator
    params = model.init_params(net_class(cfg), jax.random.PRNGKey(1))
    params = jax.tree_util.tree_map(  # non-trivial LayerNorms and biases
        lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(2), x.shape) if x.ndim == 1 else x, params
    )
    hf.save_pretrained(cfg, params, str(tmp_path), kind=kind)
    cls = transformers.ElectraForPreTraining if kind == "discriminator" else transformers.ElectraForMaskedLM
    net = cls.from_pretrained(str(tmp_path)).eval()
    inputs = _inputs(cfg.vocab_size, seed=1)
    assert np.max(np.abs(_hf_logits(net, inputs) - _jax_logits(cfg, params, kind, inputs))) <= TOLERANCE
    # and back again: identical parameters
    cfg_back, params_back = hf.load_pretrained(str(tmp_path))
    assert cfg_back == cfg
    jax.tree_util.tree_map(np.testing.assert_array_equal, params_back, jax.device_get(params))


def test_generator_logits_at_masked_positions_match_full_logits():
    gen_cfg, _ = _configs("tiny")
    gen = model.Generator(gen_cfg)
    params = model.init_params(gen, jax.random.PRNGKey(0))
    ids, mask, types = (jnp.asarray(x) for x in _inputs(gen_cfg.vocab_size))
    positions = jnp.array([[1, 5, 9], [2, 3, 10]])
    full = gen.apply({"params": params}, ids, mask, types)
    gathered = gen.apply({"params": params}, ids, mask, types, masked_positions=positions)
    assert gathered.shape == (2, 3, gen_cfg.vocab_size)
    np.testing.assert_allclose(gathered, jnp.take_along_axis(full, positions[..., None], 1), atol=1e-5)


def test_scanned_layers_load_and_match_unscanned():
    _, cfg = _configs("tiny")
    net = _hf_model(cfg, "discriminator")
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    scanned_cfg = dataclasses.replace(cfg, scan_layers=True, remat_policy="full")
    params = hf.params_from_hf(scanned_cfg, state, "discriminator")
    assert params["electra"]["encoder"]["layers"]["layer"]["output_dense"]["kernel"].shape[0] == cfg.num_layers
    inputs = _inputs(cfg.vocab_size)
    got = _jax_logits(scanned_cfg, params, "discriminator", inputs)
    assert np.max(np.abs(got - _hf_logits(net, inputs))) <= TOLERANCE
    back = hf.params_to_hf(scanned_cfg, params, "discriminator")
    assert set(back) == set(state) - {"electra.embeddings.position_ids"}
    for key, value in back.items():
        np.testing.assert_array_equal(value, state[key])


def test_unknown_and_missing_keys_are_listed():
    _, cfg = _configs("tiny")
    state = {k: v.numpy() for k, v in _hf_model(cfg, "discriminator").state_dict().items()}
    state["electra.pooler.weight"] = np.zeros(3)
    del state["discriminator_predictions.dense.bias"]
    with pytest.raises(
        ValueError,
        match=r"missing=\['discriminator_predictions.dense.bias'\].*"
        r"unknown=\['electra.pooler.weight'\]",
    ):
        hf.params_from_hf(cfg, state, "discriminator")


def test_unsupported_activation_is_refused():
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        hf.config_from_hf(
            {
                "model_type": "electra",
                "hidden_act": "relu",
                "vocab_size": 10,
                "hidden_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 1,
                "intermediate_size": 8,
            }
        )


def test_pytorch_bin_checkpoints_load(tmp_path):
    _, cfg = _configs("tiny")
    net = _hf_model(cfg, "discriminator")
    net.save_pretrained(str(tmp_path), safe_serialization=False)
    if not (tmp_path / "pytorch_model.bin").exists():  # newer transformers always write safetensors
        torch.save(net.state_dict(), tmp_path / "pytorch_model.bin")
        (tmp_path / "model.safetensors").unlink(missing_ok=True)
    loaded_cfg, params = hf.load_pretrained(str(tmp_path))
    inputs = _inputs(cfg.vocab_size)
    assert (
        np.max(np.abs(_jax_logits(loaded_cfg, params, "discriminator", inputs) - _hf_logits(net, inputs))) <= TOLERANCE
    )


def _saved_discriminator(directory):
    _, cfg = _configs("tiny")
    _hf_model(cfg, "discriminator").save_pretrained(str(directory))
    return directory


def test_a_pickle_holding_more_than_tensors_is_refused_without_torchs_advice(tmp_path):
    import json
    import pickle

    directory = _saved_discriminator(tmp_path)
    (directory / "model.safetensors").unlink()
    with open(directory / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weights": json.JSONDecoder}, f)  # a class: what weights_only refuses
    with pytest.raises(ValueError, match=r"pytorch_model.bin could not be read as tensors only") as raised:
        hf.load_pretrained(str(directory))
    assert "never loaded" in str(raised.value) and "safe_serialization=True" in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # torch's weights_only=False advice
    assert "weights_only" not in str(raised.value)


def test_a_truncated_safetensors_file_is_named(tmp_path):
    weights = _saved_discriminator(tmp_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ValueError, match=rf"{weights} is not a readable safetensors file .*truncated"):
        hf.load_pretrained(str(tmp_path))


@pytest.mark.parametrize(
    "field, value", [("hidden_size", 64), ("num_hidden_layers", 3), ("embedding_size", 16), ("intermediate_size", 7)]
)
def test_a_config_json_that_disagrees_with_the_weights_names_the_fields(tmp_path, field, value):
    import json

    directory = _saved_discriminator(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    saved = config[field]
    config[field] = value
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{field}={value} in config.json, {saved} in the weights"):
        hf.load_pretrained(str(directory))


@pytest.mark.parametrize("size", ["small", "base", "large"])
def test_parameter_counts_equal_transformers(size):
    gen_cfg, disc_cfg = _configs(size)
    counts = {}
    for kind, cfg, net_class in (
        ("discriminator", disc_cfg, model.Discriminator),
        ("generator", gen_cfg, model.Generator),
    ):
        shapes = jax.eval_shape(lambda: model.init_params(net_class(cfg), jax.random.PRNGKey(0)))
        ours = model.count_params(shapes)
        hf_config = transformers.ElectraConfig(**hf.config_to_hf(cfg, kind))
        cls = transformers.ElectraForPreTraining if kind == "discriminator" else transformers.ElectraForMaskedLM
        with torch.device("meta"):
            theirs = sum(p.numel() for p in cls(hf_config).parameters())  # tied matrix counted once
        counts[kind] = ours
        assert ours == theirs, (size, kind, ours, theirs)
    print(f"{size}: discriminator {counts['discriminator']:,} params, generator {counts['generator']:,} params")


@pytest.mark.parametrize("kind", ["discriminator", "generator"])
def test_padded_vocabulary_converts_both_ways_and_matches_hf(kind, tmp_path):
    gen_cfg, disc_cfg = _configs("tiny")
    cfg = dataclasses.replace(gen_cfg if kind == "generator" else disc_cfg, vocab_size=1000)
    padded_cfg = dataclasses.replace(cfg, vocab_pad_multiple=128)
    assert padded_cfg.padded_vocab_size == 1024
    net = _hf_model(cfg, kind)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    params = hf.params_from_hf(padded_cfg, state, kind)
    word = params["electra"]["embeddings"]["word_embeddings"]["embedding"]
    assert word.shape[0] == 1024 and not np.any(word[1000:])
    inputs = _inputs(cfg.vocab_size)
    got, expected = _jax_logits(padded_cfg, params, kind, inputs), _hf_logits(net, inputs)
    if kind == "generator":
        assert got.shape[-1] == 1024
        assert np.all(got[..., 1000:] == np.finfo(np.float32).min)  # never predicted or sampled
        got = got[..., :1000]
    assert np.max(np.abs(got - expected)) <= TOLERANCE
    # export drops the padding rows: transformers loads it with vocab_size=1000, same logits
    hf.save_pretrained(padded_cfg, params, str(tmp_path), kind=kind)
    cls = transformers.ElectraForPreTraining if kind == "discriminator" else transformers.ElectraForMaskedLM
    exported = cls.from_pretrained(str(tmp_path)).eval()
    assert exported.config.vocab_size == 1000
    np.testing.assert_allclose(_hf_logits(exported, inputs), expected, atol=1e-6)


def test_hf_weights_with_another_vocab_size_are_refused():
    _, cfg = _configs("tiny")
    state = {k: v.numpy() for k, v in _hf_model(cfg, "discriminator").state_dict().items()}
    wrong = dataclasses.replace(cfg, vocab_size=cfg.vocab_size - 1, vocab_pad_multiple=128)
    with pytest.raises(ValueError, match=r"word_embeddings.weight has 8192 rows but vocab_size=8191"):
        hf.params_from_hf(wrong, state, "discriminator")


def test_bad_vocab_pad_multiple_is_refused():
    with pytest.raises(ValueError, match="vocab_pad_multiple=0"):
        model.ElectraConfig(vocab_pad_multiple=0)
