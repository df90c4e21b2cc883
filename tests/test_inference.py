"""Fill-mask vs transformers' ElectraForMaskedLM, jitted task predictors, and int8
weight quantization (hand-checked quantizer, logits close to float, exact vs dequantized)."""

import os
import subprocess
import sys

import helpers
import jax
import numpy as np
import pytest

from data_pipelines import tokenizer as tokenizer_lib
from electra_jax import fill_mask, heads, hf, inference, loading, model
from electra_jax.finetune import common

WORDS = "the capital of france is paris london a city big river".split()
TINY = {**helpers.TINY, "max_position_embeddings": 32, "initializer_range": 0.5}


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    """A transformers ElectraForMaskedLM dir (random weights) with its vocab.txt."""
    out = str(tmp_path_factory.mktemp("generator"))
    with open(os.path.join(out, "vocab.txt"), "w") as f:
        f.write("\n".join(helpers.SPECIALS + WORDS) + "\n")
    cfg = model.ElectraConfig(vocab_size=len(helpers.SPECIALS) + len(WORDS), **TINY)
    hf.save_pretrained(cfg, model.init_params(model.Generator(cfg), jax.random.PRNGKey(3)), out, kind="generator")
    return out


# ---------------------------------------------------------------------------- fill-mask


def test_fill_mask_top_k_equals_transformers(generator_dir):
    import torch
    import transformers

    generator = fill_mask.load_generator(generator_dir)
    text = "The capital of [MASK] is [MASK]."
    completions = fill_mask.fill_mask(generator, text, top_k=4)
    assert len(completions) == 2 and all(len(c) == 4 for c in completions)
    tok = tokenizer_lib.load_tokenizer(generator_dir)
    ids = fill_mask.encode_masked_text(tok, text, 32)
    assert ids == [
        tok.cls_id,
        *tok.encode("the capital of"),
        tok.mask_id,
        tok.encode("is")[0],
        tok.mask_id,
        *tok.encode("."),
        tok.sep_id,
    ]
    torch_model = transformers.ElectraForMaskedLM.from_pretrained(generator_dir).eval()
    with torch.no_grad():
        logits = torch_model(input_ids=torch.tensor([ids])).logits[0]
    probabilities = torch.softmax(logits, -1).numpy()
    for completion, position in zip(completions, np.flatnonzero(np.array(ids) == tok.mask_id)):
        top = torch.topk(logits[position].index_fill(0, torch.tensor(tok.special_ids), -torch.inf), 4)
        assert [c["id"] for c in completion] == top.indices.tolist()
        np.testing.assert_allclose(
            [c["probability"] for c in completion], probabilities[position][top.indices.numpy()], atol=1e-5
        )
        assert completion[0]["token"] == tok.decode([completion[0]["id"]])


def test_fill_mask_never_offers_a_special_token(generator_dir):
    # [PAD], [CLS], [SEP] were offered as completions.
    generator = fill_mask.load_generator(generator_dir)
    tok = generator.tokenizer
    words = generator.model_config.vocab_size - len(tok.special_ids)
    (completion,) = fill_mask.fill_mask(generator, "the capital of france is [MASK] .", top_k=words)
    assert sorted(c["id"] for c in completion) == sorted(
        set(range(generator.model_config.vocab_size)) - set(tok.special_ids)
    )
    with pytest.raises(ValueError, match=rf"top_k={words + 1}; ask for 1 to {words} completions"):
        fill_mask.fill_mask(generator, "[MASK]", top_k=words + 1)


def test_fill_mask_refuses_a_text_without_mask_and_a_discriminator(generator_dir, tmp_path):
    generator = fill_mask.load_generator(generator_dir)
    with pytest.raises(ValueError, match=r"no \[MASK\] in 'paris'"):
        fill_mask.fill_mask(generator, "paris")
    cfg = model.ElectraConfig(vocab_size=generator.model_config.vocab_size, **TINY)
    hf.save_pretrained(cfg, model.init_params(model.Discriminator(cfg), jax.random.PRNGKey(0)), str(tmp_path))
    os.link(os.path.join(generator_dir, "vocab.txt"), tmp_path / "vocab.txt")
    with pytest.raises(ValueError, match="holds no generator .* ElectraForMaskedLM"):
        fill_mask.load_generator(str(tmp_path))


@pytest.mark.integration
@pytest.mark.slow
def test_fill_mask_cli_prints_json(generator_dir):
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "electra_jax.fill_mask",
            f"--config.init={generator_dir}",
            "--config.top_k=2",
            "the capital of france is [MASK] .",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert '"masks"' in finished.stdout and finished.stdout.count('"id"') == 2


# ---------------------------------------------------------------------------- int8


def test_quantize_kernel_per_output_channel_by_hand():
    kernel = np.array([[1.0, -0.5, 0.0], [-2.0, 0.25, 0.0]], np.float32)  # [in 2, out 3]
    quantized, scale = inference.quantize_kernel(kernel)
    np.testing.assert_allclose(scale, [2 / 127, 0.5 / 127, 1.0])  # all-zero channel: scale 1
    assert quantized.dtype == np.int8
    assert quantized.tolist() == [[64, -127, 0], [-127, 64, 0]]  # round(1 / (2/127)) = 63.5 -> 64
    stacked = np.stack([kernel, 3 * kernel])  # a scanned [layers, in, out] kernel
    _, stacked_scale = inference.quantize_kernel(stacked)
    np.testing.assert_allclose(stacked_scale[1], [6 / 127, 1.5 / 127, 1.0], rtol=1e-6)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 16)).astype(np.float32)
    q, s = inference.quantize_kernel(w)
    assert np.all(np.abs(q * s - w) <= s / 2 + 1e-7)  # rounding error at most half a step


@pytest.mark.parametrize("scan_layers", [False, True])
def test_int8_predictor_stays_close_to_float_and_equals_dequantized(scan_layers):
    cfg = model.ElectraConfig(vocab_size=40, **{**TINY, "initializer_range": 0.05}, scan_layers=scan_layers)
    net = heads.SequenceClassifier(cfg, 3)
    params = model.init_params(net, jax.random.PRNGKey(0), 16)
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(5, 40, size=(8, 16)).astype(np.int32),
        "attention_mask": np.ones((8, 16), np.int32),
        "token_type_ids": np.zeros((8, 16), np.int32),
    }
    batch["attention_mask"][3, 9:] = 0
    float_logits = np.asarray(inference.make_predictor(net, params)(batch))
    int8_logits = np.asarray(inference.make_predictor(net, params, int8=True)(batch))
    # int8 weights really are used: not bit-equal to float, equal to the dequantized weights
    quantized = inference.quantize_params(jax.device_get(params))
    kernels = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(quantized)
        if "kernel_int8" in jax.tree_util.keystr(path)
    ]
    assert kernels and all(k.dtype == np.int8 for k in kernels)
    assert not any("'kernel'" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(quantized))
    dequantized = inference.dequantize_params(quantized)
    np.testing.assert_allclose(int8_logits, inference.make_predictor(net, dequantized)(batch), atol=1e-5)
    assert not np.array_equal(int8_logits, float_logits)
    spread = np.max(np.abs(float_logits))
    assert np.max(np.abs(int8_logits - float_logits)) < 0.02 * spread + 1e-3
    assert inference.quantized_size_bytes(quantized) < 0.6 * inference.quantized_size_bytes(params)


def test_token_predictor_int8_and_load_finetuned(tmp_path):
    cfg = model.ElectraConfig(vocab_size=40, **TINY)
    batch = {
        "input_ids": np.full((2, 8), 7, np.int32),
        "attention_mask": np.ones((2, 8), np.int32),
        "token_type_ids": np.zeros((2, 8), np.int32),
    }
    net = heads.TokenClassifier(cfg, 4)
    params = model.init_params(net, jax.random.PRNGKey(1))
    float_logits = np.asarray(inference.make_predictor(net, params)(batch))
    int8_logits = np.asarray(inference.make_predictor(net, params, int8=True)(batch))
    assert float_logits.shape == (2, 8, 4)
    assert np.max(np.abs(int8_logits - float_logits)) < 0.05 * np.max(np.abs(float_logits))
    # an exported tagger loads back as (net, params, tokenizer) and predicts the same
    with open(tmp_path / "vocab.txt", "w") as f:
        f.write("\n".join(helpers.SPECIALS + [f"w{i}" for i in range(35)]) + "\n")
    pretrained = loading.Network(cfg, {}, tokenizer_lib.load_tokenizer(str(tmp_path / "vocab.txt")))
    common.export_model(
        pretrained,
        params,
        str(tmp_path / "tagger"),
        "token_classification",
        {"id2label": {str(i): t for i, t in enumerate(["O", "B-X", "I-X", "B-Y"])}},
    )
    loaded_net, loaded_params, tokenizer = inference.load_finetuned(str(tmp_path / "tagger"))
    assert loaded_net.num_labels == 4 and tokenizer.vocab_size == 40
    np.testing.assert_allclose(inference.make_predictor(loaded_net, loaded_params)(batch), float_logits, atol=1e-6)


def test_inference_refuses_a_task_the_model_was_not_fine_tuned_on(tmp_path):
    # An RTE export scored on STS-B reported "accuracy 9.27" and exited 0.
    cfg = model.ElectraConfig(vocab_size=40, **TINY)
    with open(tmp_path / "vocab.txt", "w") as f:
        f.write("\n".join(helpers.SPECIALS + [f"w{i}" for i in range(35)]) + "\n")
    pretrained = loading.Network(cfg, {}, tokenizer_lib.load_tokenizer(str(tmp_path / "vocab.txt")))
    params = model.init_params(heads.SequenceClassifier(cfg, 2), jax.random.PRNGKey(1))
    common.export_model(
        pretrained, params, str(tmp_path / "rte"), "sequence_classification", {"finetuning_task": "rte"}
    )
    config = inference.inference_config()
    config.update(model=str(tmp_path / "rte"), task="stsb", data_dir=str(tmp_path))
    with pytest.raises(
        ValueError, match=r"rte was fine-tuned on 'rte' \(its config.json\), not on --config.task='stsb'"
    ):
        inference.main(config, [])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"split": "test"}, r"--config\.split=test of sst2 has no labels .*; use a split with labels: train or dev"),
        ({"batch_size": 0}, r"batch_size=0; it must be >= 1 \(--config\.batch_size\)"),
        ({"batch_size": -4}, r"batch_size=-4; it must be >= 1"),
    ],
)
def test_inference_refuses_an_unlabelled_split_and_a_batch_size_below_one(tmp_path, overrides, message):
    # A test split scored "accuracy 100" against its placeholder 0 labels; batch_size=0 was range()'s error.
    config = inference.inference_config()
    config.update(model=str(tmp_path / "never_loaded"), task="sst2", data_dir=str(tmp_path), **overrides)
    with pytest.raises(ValueError, match=message):
        inference.main(config, [])
