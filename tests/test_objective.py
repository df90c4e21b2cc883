"""electra_jax.objective against independent references: the original's counting formula
written in NumPy, sampling statistics (scipy chi-square), hand-written NumPy losses and
sklearn metrics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from sklearn import metrics as skm

from electra_jax import objective

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
VOCAB = 100
MASK_PROB = 0.15
SEQ = 128
MAX_PREDICTIONS = int((MASK_PROB + 0.005) * SEQ)  # 19, the original's cap


def _random_batch(seed: int, batch: int, seq: int = SEQ, min_length: int = 8):
    """[CLS] A [SEP] B [SEP] [PAD]..., random lengths, a few [UNK]s among the words."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(len(SPECIALS), VOCAB, size=(batch, seq))
    ids[rng.random((batch, seq)) < 0.02] = UNK
    lengths = rng.integers(min_length, seq + 1, size=batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)
    ids[:, 0] = CLS
    rows = np.arange(batch)
    ids[rows, lengths - 1] = SEP
    ids[rows, lengths // 2] = SEP
    ids = np.where(mask > 0, ids, PAD)
    return ids.astype(np.int32), mask


@functools.partial(jax.jit, static_argnames=("mask_prob", "max_predictions", "mask_token_frac", "random_token_frac"))
def _mask(
    rng,
    ids,
    mask,
    mask_prob=MASK_PROB,
    max_predictions=MAX_PREDICTIONS,
    mask_token_frac=0.85,
    random_token_frac=0.0,
    word_starts=None,
):
    return objective.mask_tokens(
        rng,
        ids,
        mask,
        mask_prob=mask_prob,
        max_predictions=max_predictions,
        mask_token_id=MASK,
        special_token_ids=SPECIALS,
        mask_token_frac=mask_token_frac,
        random_token_frac=random_token_frac,
        vocab_size=VOCAB,
        word_starts=word_starts,
    )


@pytest.fixture(scope="module")
def big_masking():
    ids, mask = _random_batch(0, 2000)
    out = jax.tree_util.tree_map(np.asarray, _mask(jax.random.PRNGKey(1), ids, mask))
    return ids, mask, out


def _chosen(out):
    """Set of (row, position) pairs with weight 1."""
    rows, slots = np.nonzero(out.masked_weights)
    return rows, out.masked_positions[rows, slots]


def test_masked_count_follows_original_formula_and_fraction(big_masking):
    ids, mask, out = big_masking
    n_tokens = mask.sum(-1)
    n_candidates = (mask.astype(bool) & ~np.isin(ids, SPECIALS)).sum(-1)
    expected = np.minimum(np.clip(np.round(n_tokens * MASK_PROB), 1, MAX_PREDICTIONS), n_candidates)
    np.testing.assert_array_equal(out.masked_weights.sum(-1), expected)
    assert abs(out.masked_weights.sum() / mask.sum() - MASK_PROB) < 0.01
    # Real slots come first; padding slots point at position 0.
    np.testing.assert_array_equal(out.masked_weights, np.sort(out.masked_weights, -1)[:, ::-1])
    assert np.all(out.masked_positions[out.masked_weights == 0] == 0)
    assert out.masked_positions.dtype == np.int32 and out.masked_ids.dtype == np.int32
    assert out.masked_weights.dtype == np.float32


def test_chosen_positions_are_distinct_real_non_special_tokens(big_masking):
    ids, mask, out = big_masking
    rows, positions = _chosen(out)
    assert np.all(mask[rows, positions] == 1)
    assert not np.any(np.isin(ids[rows, positions], SPECIALS))
    for row in range(len(ids)):
        real = out.masked_positions[row][out.masked_weights[row] > 0]
        assert len(np.unique(real)) == len(real)
    np.testing.assert_array_equal(out.masked_ids[out.masked_weights > 0], ids[rows, positions])


def test_only_chosen_positions_change_and_mask_proportion(big_masking):
    ids, mask, out = big_masking
    rows, positions = _chosen(out)
    chosen = np.zeros_like(ids, bool)
    chosen[rows, positions] = True
    np.testing.assert_array_equal(out.masked_input_ids[~chosen], ids[~chosen])
    became_mask = out.masked_input_ids[rows, positions] == MASK
    unchanged = out.masked_input_ids[rows, positions] == ids[rows, positions]
    assert np.all(became_mask | unchanged)  # no random tokens with random_token_frac=0
    assert abs(became_mask.mean() - 0.85) < 0.01, became_mask.mean()
    assert abs(unchanged.mean() - 0.15) < 0.01


def test_positions_uniform_over_candidates():
    """Fixed-length sequences: each candidate position is chosen equally often."""
    ids, _ = _random_batch(2, 4000, seq=32)
    ids = np.where(np.isin(ids, SPECIALS), 50, ids)
    ids[:, 0], ids[:, -1] = CLS, SEP
    mask = np.ones_like(ids)
    out = _mask(jax.random.PRNGKey(3), ids, mask, max_predictions=6)
    rows, positions = _chosen(jax.tree_util.tree_map(np.asarray, out))
    counts = np.bincount(positions, minlength=32)
    assert counts[0] == 0 and counts[-1] == 0
    assert scipy.stats.chisquare(counts[1:-1]).pvalue > 1e-3


def test_cap_and_few_candidates():
    ids, mask = _random_batch(4, 64, seq=40, min_length=20)  # >= 7 candidates, formula >= 10
    out = _mask(jax.random.PRNGKey(5), ids, mask, mask_prob=0.5, max_predictions=5)
    np.testing.assert_array_equal(np.asarray(out.masked_weights).sum(-1), 5)
    # Three candidates, formula asks for 5: take all three, pad the rest.
    short = np.array([[CLS, 10, 11, SEP, 12, SEP, PAD, PAD]], np.int32)
    short_mask = (short != PAD).astype(np.int32)
    out = _mask(jax.random.PRNGKey(6), short, short_mask, mask_prob=0.9, max_predictions=5)
    np.testing.assert_array_equal(out.masked_weights, [[1, 1, 1, 0, 0]])
    assert sorted(np.asarray(out.masked_positions[0, :3]).tolist()) == [1, 2, 4]


def test_padding_slots_never_undo_a_real_write_at_position_zero():
    """Position 0 is a candidate here; padding slots also point at 0 and must not race."""
    ids = np.array([[10, 11, 12, 13]], np.int32)
    for seed in range(40):
        out = objective.mask_tokens(
            jax.random.PRNGKey(seed),
            ids,
            np.ones_like(ids),
            mask_prob=0.25,
            max_predictions=4,
            mask_token_id=MASK,
            special_token_ids=SPECIALS,
            mask_token_frac=1.0,
        )
        position = int(out.masked_positions[0, 0])
        expected = ids.copy()
        expected[0, position] = MASK
        np.testing.assert_array_equal(out.masked_input_ids, expected)


def test_random_token_fraction():
    ids, mask = _random_batch(7, 2000)
    out = jax.tree_util.tree_map(
        np.asarray, _mask(jax.random.PRNGKey(8), ids, mask, mask_token_frac=0.7, random_token_frac=0.2)
    )
    rows, positions = _chosen(out)
    new = out.masked_input_ids[rows, positions]
    assert not np.any(np.isin(new, SPECIALS[:-1]))
    assert new.max() < VOCAB
    random_and_changed = (new != MASK) & (new != ids[rows, positions])
    n_regular = VOCAB - len(SPECIALS)
    # A random token equals the original with probability 1 / n_regular.
    assert abs(random_and_changed.mean() - 0.2 * (1 - 1 / n_regular)) < 0.01
    assert abs((new == MASK).mean() - 0.7) < 0.01


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mask_token_frac=0.9, random_token_frac=0.2), "sum <= 1"),
        (dict(mask_token_frac=-0.1), "must be >= 0"),
        (dict(max_predictions=0), "max_predictions=0"),
        (dict(max_predictions=9), "seq_len=8"),
        (dict(mask_prob=0.0), "mask_prob=0.0"),
        (dict(random_token_frac=0.1, vocab_size=None), "needs vocab_size"),
    ],
)
def test_bad_masking_arguments_are_named(kwargs, match):
    args = dict(mask_prob=0.15, max_predictions=2, mask_token_id=MASK, special_token_ids=SPECIALS, vocab_size=VOCAB)
    args.update(kwargs)
    ids = np.full((1, 8), 10, np.int32)
    with pytest.raises(ValueError, match=match):
        objective.mask_tokens(jax.random.PRNGKey(0), ids, np.ones_like(ids), **args)


LOGITS = np.array([2.0, 0.5, -1.0, 1.0, 0.0, -0.5, 1.5, -2.0], np.float32)
# The same 8 tokens spread over a 300-entry vocabulary; every other entry has zero
# probability, the last 20 as masked vocabulary-padding rows (dtype min), the rest -inf.
SPREAD_IDS = np.array([0, 127, 128, 129, 200, 255, 256, 279])


def _spread_logits() -> np.ndarray:
    logits = np.full(300, -np.inf, np.float32)
    logits[280:] = np.finfo(np.float32).min
    logits[SPREAD_IDS] = LOGITS
    return logits


def _sample_counts(temperature, disallow=None, draws=40000, seed=0, spread=False, sampler="gumbel"):
    row = _spread_logits() if spread else LOGITS
    logits = jnp.broadcast_to(jnp.asarray(row), (draws // 8, 8, row.size))  # [B, P, V]
    disallow_ids = None if disallow is None else jnp.full((draws // 8, 8), disallow, jnp.int32)
    sampled = objective.sample_replacements(
        jax.random.PRNGKey(seed), logits, temperature=temperature, disallow_ids=disallow_ids, sampler=sampler
    )
    assert sampled.shape == (draws // 8, 8) and sampled.dtype == jnp.int32
    counts = np.bincount(np.asarray(sampled).ravel(), minlength=row.size)
    if spread:  # nothing outside the 8 tokens, then their counts in LOGITS order
        assert counts.sum() == counts[SPREAD_IDS].sum()
        counts = counts[SPREAD_IDS]
    return counts


@pytest.mark.parametrize("sampler", objective.SAMPLERS)
@pytest.mark.parametrize("spread", [False, True], ids=["dense", "spread"])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_samples_follow_tempered_softmax(temperature, spread, sampler):
    counts = _sample_counts(temperature, spread=spread, sampler=sampler)
    expected = scipy.special.softmax(LOGITS.astype(np.float64) / temperature) * counts.sum()
    assert scipy.stats.chisquare(counts, expected).pvalue > 1e-3


def test_chi_square_detects_a_wrong_temperature():
    """The check above has power: temperature 1 samples reject the temperature-0.5 law."""
    counts = _sample_counts(1.0)
    wrong = scipy.special.softmax(LOGITS.astype(np.float64) / 0.5) * counts.sum()
    assert scipy.stats.chisquare(counts, wrong).pvalue < 1e-6


@pytest.mark.parametrize("sampler", objective.SAMPLERS)
@pytest.mark.parametrize("spread", [False, True], ids=["dense", "spread"])
def test_disallow_never_samples_the_token_and_renormalises(spread, sampler):
    counts = _sample_counts(1.0, disallow=SPREAD_IDS[0] if spread else 0, spread=spread, sampler=sampler)
    assert counts[0] == 0
    expected = scipy.special.softmax(LOGITS[1:].astype(np.float64)) * counts.sum()
    assert scipy.stats.chisquare(counts[1:], expected).pvalue > 1e-3


def test_inverse_cdf_never_draws_zero_probability_tokens_when_rounding_misses_the_target():
    """The two-level CDF's rounding cases: a target above every cdf value (u near 0 with a
    cdf that rounds low) or at most zero (mass before the block rounding high) still lands
    on a token of positive probability."""
    mass = jnp.asarray([[0.0, 0.5, 0.0, 0.25, 0.0]])
    cdf = jnp.cumsum(mass, axis=-1)
    first_reaching = objective._first_reaching
    assert int(first_reaching(cdf, mass, jnp.asarray([0.75 + 1e-6]))[0]) == 3
    assert int(first_reaching(cdf, mass, jnp.asarray([-1e-6]))[0]) == 1
    assert int(first_reaching(cdf, mass, jnp.asarray([0.5]))[0]) == 1
    assert int(first_reaching(cdf, mass, jnp.asarray([0.5 + 1e-6]))[0]) == 3


def test_unknown_sampler_is_named():
    with pytest.raises(ValueError, match="sampler='topk'; choose one of"):
        objective.sample_replacements(jax.random.PRNGKey(0), jnp.zeros((1, 2, 8)), sampler="topk")


@pytest.mark.parametrize("sampler", objective.SAMPLERS)
def test_no_gradient_through_sampling(sampler):
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 8)), jnp.float32)

    def uses_samples(gen_logits):
        sampled = objective.sample_replacements(jax.random.PRNGKey(0), gen_logits, sampler=sampler)
        # A straight-through or relaxed sampler would make this depend on the logits.
        return jnp.sum(sampled.astype(jnp.float32) * gen_logits.mean())

    grad = jax.grad(uses_samples)(logits)
    sampled = objective.sample_replacements(jax.random.PRNGKey(0), logits, sampler=sampler)
    # d/dlogits of mean(logits) * const only: no contribution through the samples.
    np.testing.assert_allclose(grad, np.full(logits.shape, float(sampled.sum()) / logits.size), rtol=1e-6)


def test_corrupt_inputs_uses_original_tokens_and_labels_equal_samples_original():
    input_ids = np.array([[CLS, 10, 11, 12, SEP, PAD], [CLS, 20, 21, SEP, PAD, PAD]], np.int32)
    positions = np.array([[1, 3, 0], [2, 0, 0]], np.int32)
    weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    sampled = np.array([[10, 40, 77], [55, 66, 88]], np.int32)  # row 0 slot 0 equals the original
    corrupted, is_replaced = objective.corrupt_inputs(input_ids, positions, weights, sampled)
    expected = input_ids.copy()
    expected[0, 1], expected[0, 3], expected[1, 2] = 10, 40, 55
    np.testing.assert_array_equal(corrupted, expected)
    expected_replaced = np.zeros_like(input_ids, bool)
    expected_replaced[0, 3] = expected_replaced[1, 2] = True
    np.testing.assert_array_equal(is_replaced, expected_replaced)


def test_end_to_end_masking_then_corruption_under_jit(big_masking):
    ids, mask, out = big_masking
    # A generator that never proposes special tokens, so any [MASK] left would come from the
    # masked input.
    gen_logits = jnp.zeros(out.masked_ids.shape + (VOCAB,)).at[..., : len(SPECIALS)].set(-1e9)
    sampled = objective.sample_replacements(jax.random.PRNGKey(9), gen_logits, disallow_ids=jnp.asarray(out.masked_ids))
    corrupted, is_replaced = jax.jit(objective.corrupt_inputs)(ids, out.masked_positions, out.masked_weights, sampled)
    assert not np.any(np.asarray(is_replaced)[mask == 0])
    assert not np.any(np.asarray(corrupted) == MASK)  # built from the original, not the masked input
    # disallow_correct: every real masked position is replaced.
    np.testing.assert_array_equal(np.asarray(is_replaced).sum(-1), out.masked_weights.sum(-1))


# --- losses and metrics against NumPy / sklearn -------------------------------------------

GEN_LOGITS = np.random.default_rng(10).normal(size=(2, 3, 5)).astype(np.float32) * 3
MASKED_IDS = np.array([[1, 4, 0], [2, 0, 0]], np.int32)
MASKED_WEIGHTS = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
DISC_LOGITS = np.array([[-3.0, 2.5, 0.3, -60.0, 45.0, 9.0], [1.0, -0.2, -4.0, 0.7, 3.0, -8.0]], np.float32)
IS_REPLACED = np.array([[0, 1, 0, 1, 0, 1], [1, 0, 0, 0, 1, 0]], bool)
ATTENTION = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], np.int32)


def _np_mlm(logits, ids, weights):
    nll = -np.take_along_axis(scipy.special.log_softmax(logits.astype(np.float64), -1), ids[..., None], -1)[..., 0]
    return (nll * weights).sum() / weights.sum()


def _np_disc(logits, labels, attention):
    logits = logits.astype(np.float64)
    # -log(sigmoid(x)) = logaddexp(0, -x), -log(1 - sigmoid(x)) = logaddexp(0, x): exact at |x|=60
    losses = np.where(labels, np.logaddexp(0, -logits), np.logaddexp(0, logits))
    return (losses * attention).sum() / attention.sum()


def test_mlm_loss_matches_numpy():
    loss = objective.mlm_loss(GEN_LOGITS, MASKED_IDS, MASKED_WEIGHTS)
    np.testing.assert_allclose(loss, _np_mlm(GEN_LOGITS, MASKED_IDS, MASKED_WEIGHTS), rtol=1e-6)


def test_mlm_loss_in_float32_for_bf16_logits():
    big = GEN_LOGITS * 10 + 100  # large offsets: bf16 log_softmax would be off by ~1
    bf16 = jnp.asarray(big, jnp.bfloat16)
    loss = objective.mlm_loss(bf16, MASKED_IDS, MASKED_WEIGHTS)
    assert loss.dtype == jnp.float32
    reference = _np_mlm(np.asarray(bf16.astype(jnp.float32)), MASKED_IDS, MASKED_WEIGHTS)
    np.testing.assert_allclose(loss, reference, rtol=1e-5)


def test_disc_loss_matches_numpy_including_extreme_logits_and_padding():
    loss = objective.disc_loss(DISC_LOGITS, IS_REPLACED, ATTENTION)
    np.testing.assert_allclose(loss, _np_disc(DISC_LOGITS, IS_REPLACED, ATTENTION), rtol=1e-6)
    loss_bf16 = objective.disc_loss(jnp.asarray(DISC_LOGITS, jnp.bfloat16), IS_REPLACED, ATTENTION)
    assert loss_bf16.dtype == jnp.float32 and np.isfinite(loss_bf16)


def _metrics(gen_logits=GEN_LOGITS, disc_logits=DISC_LOGITS, is_replaced=IS_REPLACED):
    sums = objective.metric_sums(gen_logits, MASKED_IDS, MASKED_WEIGHTS, disc_logits, is_replaced, ATTENTION)
    return sums, {k: float(v) for k, v in objective.metrics_from_sums(sums, 50.0).items()}


def test_metrics_match_numpy_and_sklearn():
    _, m = _metrics()
    real = ATTENTION.astype(bool)
    slots = MASKED_WEIGHTS > 0
    labels, predicted = IS_REPLACED[real], DISC_LOGITS[real] > 0
    mlm = _np_mlm(GEN_LOGITS, MASKED_IDS, MASKED_WEIGHTS)
    disc = _np_disc(DISC_LOGITS, IS_REPLACED, ATTENTION)
    expected = {
        "mlm_loss": mlm,
        "mlm_accuracy": skm.accuracy_score(MASKED_IDS[slots], GEN_LOGITS.argmax(-1)[slots]),
        "disc_loss": disc,
        "disc_accuracy": skm.accuracy_score(labels, predicted),
        "disc_precision": skm.precision_score(labels, predicted),
        "disc_recall": skm.recall_score(labels, predicted),
        # logits here are in distinct bins (the clipped -60 and 45 keep their rank), so exact
        "disc_auc": skm.roc_auc_score(labels, DISC_LOGITS[real]),
        "disc_baseline_accuracy": 1.0 - labels.mean(),
        "replaced_fraction": labels.mean(),
        "masked_fraction": MASKED_WEIGHTS.sum() / ATTENTION.sum(),
        "total_loss": mlm + 50.0 * disc,
    }
    assert set(m) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(m[name], value, rtol=1e-5, err_msg=name)


def test_precision_recall_safe_without_positives():
    _, m = _metrics(disc_logits=-np.abs(DISC_LOGITS) - 1, is_replaced=np.zeros_like(IS_REPLACED))
    assert m["disc_precision"] == 0.0 and m["disc_recall"] == 0.0
    assert m["disc_accuracy"] == 1.0
    assert np.isnan(m["disc_auc"])  # undefined without replaced tokens, not a made-up 0.5


@pytest.mark.parametrize("separation", [0.0, 0.3, 1.5])
def test_binned_auc_matches_sklearn_on_many_scores(separation):
    rng = np.random.default_rng(3)
    labels = rng.random((64, 128)) < 0.15
    logits = (rng.normal(size=labels.shape) * 2.0 - 2.0 + separation * labels).astype(np.float32)
    attention = (rng.random(labels.shape) < 0.9).astype(np.int32)
    sums = objective.disc_metric_sums(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(attention))
    got = float(objective.metrics_from_sums(sums)["disc_auc"])
    real = attention.astype(bool)
    # bins 1/128 of a logit wide: ties between close scores move the AUC by far less than 1e-3
    np.testing.assert_allclose(got, skm.roc_auc_score(labels[real], logits[real]), atol=1e-3)


def test_binned_auc_separates_and_ranks_exactly():
    labels = jnp.asarray([[1, 1, 0, 0, 0]], bool)
    attention = jnp.ones((1, 5), jnp.int32)

    def auc(logits):
        sums = objective.disc_metric_sums(jnp.asarray([logits], jnp.float32), labels, attention)
        return float(objective.metrics_from_sums(sums)["disc_auc"])

    assert auc([0.5, 0.4, 0.1, 0.0, -1.0]) == 1.0
    assert auc([-0.5, -0.4, 0.1, 0.0, 1.0]) == 0.0
    assert auc([0.1, 0.1, 0.1, 0.1, 0.1]) == 0.5  # all tied
    # 0.3 beats 0.0 and -1.0; 0.0 ties 0.0 (one half) and beats -1.0: 3.5 of 6 pairs
    np.testing.assert_allclose(auc([0.3, 0.0, 0.0, -1.0, 1.0]), 3.5 / 6, rtol=1e-6)


def test_metric_sums_add_over_microbatches():
    whole, m = _metrics()
    halves = [
        objective.metric_sums(
            GEN_LOGITS[i : i + 1],
            MASKED_IDS[i : i + 1],
            MASKED_WEIGHTS[i : i + 1],
            DISC_LOGITS[i : i + 1],
            IS_REPLACED[i : i + 1],
            ATTENTION[i : i + 1],
        )
        for i in range(2)
    ]
    added = jax.tree_util.tree_map(jnp.add, *halves)
    for name, value in objective.metrics_from_sums(added, 50.0).items():
        np.testing.assert_allclose(value, m[name], rtol=1e-6, err_msg=name)
    # Averaging the per-microbatch ratios instead would be wrong here (unequal counts).
    naive = np.mean([float(objective.metrics_from_sums(h)["mlm_loss"]) for h in halves])
    assert abs(naive - m["mlm_loss"]) > 1e-3


# ---------------------------------------------------------------------------- whole-word masking


def _random_words(seed: int, shape, mean_length: float = 2.0) -> np.ndarray:
    """word_starts with words of random lengths (geometric, mean `mean_length` pieces)."""
    return (np.random.default_rng(seed).random(shape) < 1 / mean_length).astype(np.int32)


def _whole_words_numpy(uniforms, word_starts, candidates, num_to_predict):
    """BERT's create_masked_lm_predictions for one sequence, written plainly: words in the
    order of their first piece's uniform, each taken whole if it fits, else skipped."""
    words, current = [], None
    for i, is_candidate in enumerate(candidates):
        starts = word_starts[i] or not is_candidate or i == 0 or not candidates[i - 1]
        if starts:
            current = [i]
            words.append(current)
        else:
            current.append(i)
    words = sorted((w for w in words if candidates[w[0]]), key=lambda w: (uniforms[w[0]], w[0]))
    chosen = []
    for word in words:
        if len(chosen) + len(word) <= num_to_predict:
            chosen += word
    return chosen


@pytest.fixture(scope="module")
def word_masking():
    ids, mask = _random_batch(10, 2000)
    word_starts = _random_words(11, ids.shape)
    out = jax.tree_util.tree_map(np.asarray, _mask(jax.random.PRNGKey(12), ids, mask, word_starts=word_starts))
    return ids, mask, word_starts, out


def test_whole_word_masking_matches_numpy_reference_under_jit():
    ids, mask = _random_batch(13, 16, seq=48)
    word_starts = _random_words(14, ids.shape, mean_length=3.0)
    rng = jax.random.PRNGKey(15)
    out = jax.tree_util.tree_map(np.asarray, _mask(rng, ids, mask, max_predictions=8, word_starts=word_starts))
    # mask_tokens draws its choosing uniforms from the first of three keys.
    uniforms = np.asarray(jax.random.uniform(jax.random.split(rng, 3)[0], ids.shape))
    candidates = mask.astype(bool) & ~np.isin(ids, SPECIALS)
    num_to_predict = np.minimum(np.clip(np.round(mask.sum(-1) * MASK_PROB), 1, 8), candidates.sum(-1))
    for row in range(len(ids)):
        expected = _whole_words_numpy(uniforms[row], word_starts[row], candidates[row], num_to_predict[row])
        weights = out.masked_weights[row]
        assert out.masked_positions[row][weights > 0].tolist() == expected
        assert weights.tolist() == [1.0] * len(expected) + [0.0] * (8 - len(expected))


def test_whole_word_masking_masks_whole_words_at_the_fraction_under_the_cap(word_masking):
    ids, mask, word_starts, out = word_masking
    candidates = mask.astype(bool) & ~np.isin(ids, SPECIALS)
    num_to_predict = np.minimum(np.clip(np.round(mask.sum(-1) * MASK_PROB), 1, MAX_PREDICTIONS), candidates.sum(-1))
    num_masked = out.masked_weights.sum(-1)
    assert np.all(num_masked <= num_to_predict) and num_masked.max() == MAX_PREDICTIONS
    assert abs(num_masked.sum() / mask.sum() - MASK_PROB) < 0.01, num_masked.sum() / mask.sum()
    words_seen = 0
    for row in range(len(ids)):
        chosen = np.zeros(ids.shape[1], bool)
        chosen[out.masked_positions[row][out.masked_weights[row] > 0]] = True
        assert not np.any(chosen & ~candidates[row])  # never a special token or padding
        # A word: a start (or the token after a non-candidate) and the candidates after it.
        starts = word_starts[row].astype(bool) | ~candidates[row] | np.r_[True, ~candidates[row][:-1]]
        word_of = np.cumsum(starts)
        for word in np.unique(word_of[chosen]):
            assert chosen[word_of == word].all(), (row, word)  # every piece of it
            words_seen += 1
    assert words_seen > 10_000


def test_whole_word_masking_policy_applies_to_each_piece(word_masking):
    ids, _, _, out = word_masking
    rows, positions = _chosen(out)
    became_mask = out.masked_input_ids[rows, positions] == MASK
    assert abs(became_mask.mean() - 0.85) < 0.01
    np.testing.assert_array_equal(out.masked_ids[out.masked_weights > 0], ids[rows, positions])


def test_whole_word_masking_skips_a_word_longer_than_what_is_left():
    # One 6-piece word and singletons; num_to_predict = round(12 * 0.5) = 6 with cap 6:
    # whatever the order, the pieces taken are whole words and never more than 6.
    ids = np.array([[CLS, *range(10, 20), SEP]], np.int32)
    word_starts = np.array([[1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]], np.int32)
    for seed in range(20):
        out = _mask(
            jax.random.PRNGKey(seed), ids, np.ones_like(ids), mask_prob=0.5, max_predictions=6, word_starts=word_starts
        )
        chosen = set(np.asarray(out.masked_positions[0])[np.asarray(out.masked_weights[0]) > 0].tolist())
        assert len(chosen) <= 6 and (chosen >= set(range(1, 7)) or not chosen & set(range(1, 7)))
