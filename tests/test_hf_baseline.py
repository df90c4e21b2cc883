"""The transformers ELECTRA baseline does the same work as our JAX step, checked on CPU.

References: hand-computed counts and shapes, the paper's sizes, HF's own MLM loss path
(labels=-100) against our gathered one, scipy's chi-square test for the sampler, and the
linearity of gradients in the discriminator weight for the shared embeddings.
"""

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import sklearn.metrics
import torch

from benchmarks import hf_baseline as hb

TINY_BATCH, TINY_SEQ = 2, 32


def test_generator_shapes_follow_the_paper():
    # (gen hidden, gen heads, gen ffn) = (fraction * hidden, max(1, h // 64), 4 * h)
    expected = {"tiny": (32, 1, 128), "small": (64, 1, 256), "base": (256, 4, 1024), "large": (256, 4, 1024)}
    for size, (hidden, heads, ffn) in expected.items():
        gen, disc = hb.electra_configs(size)
        assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size) == (hidden, heads, ffn)
        assert gen.num_hidden_layers == disc.num_hidden_layers
        assert gen.embedding_size == disc.embedding_size


def test_small_discriminator_has_the_papers_14m_parameters():
    _, disc_config = hb.electra_configs("small")
    num_params = sum(p.numel() for p in transformers_discriminator(disc_config).parameters())
    assert 13.0e6 < num_params < 15.0e6, num_params


def transformers_discriminator(config):
    from transformers import ElectraForPreTraining

    return ElectraForPreTraining(config)


def test_max_predictions_per_seq_matches_the_original():
    assert hb.max_predictions_per_seq(128) == 19  # int(0.155 * 128) = int(19.84)
    assert hb.max_predictions_per_seq(512) == 79  # int(79.36)


def test_unknown_size_and_variant_are_named_in_the_error():
    with pytest.raises(ValueError, match="size='huge'"):
        hb.electra_configs("huge")
    with pytest.raises(ValueError, match="variant='jit'"):
        hb.run_hf_baseline("tiny", 1, 8, steps=1, warmup=0, variant="jit", device="cpu")


def test_scatter_where_skips_padding_slots():
    sequence = torch.tensor([[10, 11, 12, 13], [20, 21, 22, 23]])
    positions = torch.tensor([[2, 0], [1, 3]])
    weights = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    values = torch.tensor([[90, 91], [92, 93]])
    result = hb.scatter_where(sequence, positions, weights, values)
    assert result.tolist() == [[10, 11, 90, 13], [20, 92, 22, 93]]
    assert sequence[0, 2] == 12  # input untouched


def padded_batch(lengths, seq_length, seed=0):
    """[CLS] random tokens [SEP] then [PAD], one row per length."""
    rng = np.random.default_rng(seed)
    input_ids = np.zeros((len(lengths), seq_length), dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    for row, n in enumerate(lengths):
        input_ids[row, :n] = rng.integers(5, 1000, size=n)
        input_ids[row, 0], input_ids[row, n - 1] = hb.CLS_ID, hb.SEP_ID
        attention_mask[row, :n] = 1
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask)


def test_masked_count_and_positions_follow_the_original_rule():
    seq_length, cap = 128, 19
    # round(n * 0.15) for these n: 0.6, 1.05, 1.95, 3.0, 9.6, 15.0, 19.2 (no .5 ties)
    lengths = [4, 7, 13, 20, 64, 100, 128]
    expected_counts = [1, 1, 2, 3, 10, 15, 19]
    assert expected_counts == [max(1, min(cap, round(n * 0.15))) for n in lengths]
    input_ids, attention_mask = padded_batch(lengths * 30, seq_length)
    torch.manual_seed(0)
    masked = hb.mask_tokens(input_ids, attention_mask, cap)

    assert masked["weights"].sum(-1).tolist() == expected_counts * 30
    for row, n in enumerate(lengths * 30):
        real = masked["weights"][row] > 0
        chosen = masked["positions"][row][real]
        assert len(set(chosen.tolist())) == len(chosen)  # without replacement
        assert chosen.min() >= 1 and chosen.max() <= n - 2  # never [CLS], [SEP] or padding
        assert (masked["positions"][row][~real] == 0).all()
        changed = torch.nonzero(masked["masked_input_ids"][row] != input_ids[row]).flatten()
        assert set(changed.tolist()) <= set(chosen.tolist())
    assert torch.equal(masked["original_ids"], torch.gather(input_ids, 1, masked["positions"]))

    at_chosen = torch.gather(masked["masked_input_ids"], 1, masked["positions"])[masked["weights"] > 0]
    originals = masked["original_ids"][masked["weights"] > 0]
    assert ((at_chosen == hb.MASK_ID) | (at_chosen == originals)).all()  # no random tokens
    mask_fraction = (at_chosen == hb.MASK_ID).float().mean().item()
    num_chosen = len(at_chosen)  # 1530
    assert abs(mask_fraction - 0.85) < 4 * math.sqrt(0.85 * 0.15 / num_chosen), mask_fraction


def test_gumbel_max_samples_follow_the_softmax():
    logits = torch.tensor([2.0, 0.5, 0.0, -1.0, 1.0])
    num_draws = 20000
    torch.manual_seed(0)
    draws = hb.sample_gumbel_max(logits.expand(num_draws, -1))
    observed = np.bincount(draws.numpy(), minlength=5)
    probs = scipy.special.softmax(logits.numpy().astype(np.float64))
    _, p_value = scipy.stats.chisquare(observed, probs * num_draws)
    assert p_value > 1e-3, (observed, probs * num_draws)


def test_discriminator_loss_matches_sklearn_log_loss_over_real_tokens():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(3, 6))
    is_replaced = rng.random((3, 6)) < 0.3
    attention_mask = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    real = attention_mask > 0
    expected = sklearn.metrics.log_loss(is_replaced[real], scipy.special.expit(logits[real]), labels=[False, True])
    loss = hb.discriminator_loss(
        torch.from_numpy(logits), torch.from_numpy(is_replaced), torch.from_numpy(attention_mask)
    )
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)


@pytest.fixture(scope="module")
def tiny_models():
    generator, discriminator = hb.build_models("tiny", "cpu", seed=0)
    return generator.eval(), discriminator.eval()  # eval: no dropout, for exact comparisons


@pytest.fixture(scope="module")
def tiny_batch():
    """One full row and one padded row: 2 of its P = 4 masked slots are padding."""
    input_ids, attention_mask = padded_batch([TINY_SEQ, 12], TINY_SEQ, seed=1)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}


def test_generator_and_discriminator_share_one_embedding_module(tiny_models):
    generator, discriminator = tiny_models
    word_embeddings = generator.electra.embeddings.word_embeddings.weight
    assert discriminator.electra.embeddings is generator.electra.embeddings
    assert generator.generator_lm_head.weight is word_embeddings  # tied output matrix
    params = hb.unique_parameters(generator, discriminator)
    assert sum(p is word_embeddings for p in params) == 1
    shared = sum(p.numel() for p in generator.electra.embeddings.parameters())
    total_separately = sum(p.numel() for p in generator.parameters()) + sum(
        p.numel() for p in discriminator.parameters()
    )
    assert sum(p.numel() for p in params) == total_separately - shared


def loss_and_embedding_grad(generator, discriminator, batch, gather_masked, monkeypatch, disc_weight):
    monkeypatch.setattr(hb, "DISC_WEIGHT", disc_weight)
    generator.zero_grad(set_to_none=True)
    discriminator.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # same masking and sampling in every call
    losses = hb.electra_loss(generator, discriminator, batch, hb.max_predictions_per_seq(TINY_SEQ), gather_masked)
    losses["loss"].backward()
    grad = generator.electra.embeddings.word_embeddings.weight.grad.clone()
    return losses, grad


def test_shared_embeddings_get_gradient_from_both_losses(tiny_models, tiny_batch, monkeypatch):
    generator, discriminator = tiny_models
    _, grad_mlm_only = loss_and_embedding_grad(generator, discriminator, tiny_batch, True, monkeypatch, 0.0)
    _, grad_w25 = loss_and_embedding_grad(generator, discriminator, tiny_batch, True, monkeypatch, 25.0)
    _, grad_w50 = loss_and_embedding_grad(generator, discriminator, tiny_batch, True, monkeypatch, 50.0)
    grad_disc_per_unit = (grad_w25 - grad_mlm_only) / 25.0
    assert grad_mlm_only.abs().sum() > 0
    assert grad_disc_per_unit.abs().sum() > 0
    # Gradients are linear in the discriminator weight: total = mlm + 50 * disc.
    torch.testing.assert_close(grad_w50, grad_mlm_only + 50.0 * grad_disc_per_unit, rtol=1e-4, atol=1e-6)


def test_gathered_head_matches_hf_full_logits_loss(tiny_models, tiny_batch, monkeypatch):
    """Our gathered MLM path against HF's own `labels=` CrossEntropyLoss over all positions."""
    generator, discriminator = tiny_models
    full, grad_full = loss_and_embedding_grad(generator, discriminator, tiny_batch, False, monkeypatch, 50.0)
    gathered, grad_gathered = loss_and_embedding_grad(generator, discriminator, tiny_batch, True, monkeypatch, 50.0)
    assert math.isclose(full["mlm_loss"].item(), gathered["mlm_loss"].item(), rel_tol=1e-5)
    assert math.isclose(full["disc_loss"].item(), gathered["disc_loss"].item(), rel_tol=1e-5)
    # Untrained: MLM loss near ln(vocab), discriminator loss near ln 2.
    assert abs(full["mlm_loss"].item() - math.log(hb.SIZES["tiny"].vocab)) < 1.0
    assert abs(full["disc_loss"].item() - math.log(2)) < 0.3
    torch.testing.assert_close(grad_full, grad_gathered, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["eager", "eager-gathered"])
def test_eager_variants_run_and_report(variant):
    result = hb.run_hf_baseline("tiny", TINY_BATCH, TINY_SEQ, steps=2, warmup=1, variant=variant, device="cpu")
    assert result["dtype"] == "float32" and result["peak_memory_gib"] is None
    assert math.isfinite(result["loss"]) and result["loss"] > 0
    assert math.isclose(result["tokens_per_s"], TINY_BATCH * TINY_SEQ / result["step_s"])
    assert math.isclose(result["sequences_per_s"], TINY_BATCH / result["step_s"])


def test_loss_decreases_on_a_repeated_batch():
    generator, discriminator = hb.build_models("tiny", "cpu", seed=0)
    params = hb.unique_parameters(generator, discriminator)
    optimizer = hb.make_optimizer(params, learning_rate=1e-3)
    step = hb.make_train_step(
        generator,
        discriminator,
        optimizer,
        params,
        max_predictions=hb.max_predictions_per_seq(TINY_SEQ),
        variant="eager-gathered",
        device="cpu",
        dtype="float32",
    )
    batch = hb.synthetic_batch(8, TINY_SEQ, hb.SIZES["tiny"].vocab, seed=2)
    torch.manual_seed(0)
    losses = [step(batch)["loss"].item() for _ in range(20)]
    assert all(math.isfinite(loss) for loss in losses)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["compiled", "compiled-gathered"])
def test_compiled_variants_run(variant):
    result = hb.run_hf_baseline("tiny", TINY_BATCH, TINY_SEQ, steps=2, warmup=1, variant=variant, device="cpu")
    assert math.isfinite(result["loss"])
    assert abs(result["mlm_loss"] - math.log(hb.SIZES["tiny"].vocab)) < 1.0
