"""The ELECTRA pretraining objective as pure functions (static shapes; jit-friendly).

Follows google-research/electra `pretrain_helpers.py` / `run_pretraining.py`:
1. `mask_tokens`: choose up to `max_predictions` positions per sequence among real,
   non-special tokens; the number is max(1, min(cap, round(n_tokens * mask_prob))) with
   n_tokens counting every attended token (as the original). Of the chosen positions,
   `mask_token_frac` (paper: 85%) become [MASK], `random_token_frac` (paper: 0%) a random
   token, the rest stay unchanged (the MLM must still predict them). With `word_starts`
   (whole-word masking, as BERT's WWM and Chinese-ELECTRA) whole words are chosen, the
   cap still counted in pieces, and the policy applies to each piece.
2. `sample_replacements`: sampling from the generator's softmax at those positions
   (Gumbel-max as the original, or the same law by inverse CDF, faster on CPUs), under
   stop_gradient (the discriminator's loss never trains the generator).
3. `corrupt_inputs`: the sampled tokens go into the ORIGINAL sequence; a position counts
   as replaced only if the sampled token differs from the original.
4. Losses: MLM cross-entropy (weighted mean over the chosen positions) and the
   discriminator's sigmoid cross-entropy (mean over real tokens); total = mlm + lambda * disc.

Metrics are produced as (numerator, denominator) sums by `metric_sums`, so microbatches and
devices can be added before `metrics_from_sums` turns them into ratios; the replaced-token
ROC-AUC is carried the same way, as two logit histograms.

`OBJECTIVES` names what `objective.kind` may be: each objective lists the networks it
trains and its loss over them. The MLM-only baseline ("mlm") uses steps 1 and 4's MLM term
alone. A new objective is a loss function here and one line in `OBJECTIVES`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


class MaskedInputs(NamedTuple):
    masked_input_ids: Array  # [B, S] the generator's input
    masked_positions: Array  # [B, P] int32; padding slots point at 0 with weight 0
    masked_ids: Array  # [B, P] int32 original tokens at those positions
    masked_weights: Array  # [B, P] float32 1 for a real prediction, 0 for a padding slot


def _is_candidate(input_ids: Array, attention_mask: Array, special_token_ids: Sequence[int]) -> Array:
    special = jnp.isin(input_ids, jnp.asarray(tuple(special_token_ids), input_ids.dtype))
    return (attention_mask > 0) & ~special


def mask_tokens(
    rng: Array,
    input_ids: Array,
    attention_mask: Array,
    *,
    mask_prob: float,
    max_predictions: int,
    mask_token_id: int,
    special_token_ids: Sequence[int],
    mask_token_frac: float = 0.85,
    random_token_frac: float = 0.0,
    vocab_size: Optional[int] = None,
    word_starts: Optional[Array] = None,
) -> MaskedInputs:
    """Choose the positions the generator must predict and build its input.

    Per sequence, num_to_predict = max(1, min(max_predictions, round(n_tokens * mask_prob)))
    positions (n_tokens = sum(attention_mask), [CLS]/[SEP] included, as the original counts
    them) are drawn uniformly without replacement among the candidates: attended tokens
    not in `special_token_ids`. A sequence with fewer candidates gets all of them. Of the
    chosen positions, a `mask_token_frac` fraction (paper: 0.85) become `mask_token_id`, a
    `random_token_frac` fraction (paper: 0.0) become a uniformly random non-special token
    below `vocab_size`, and the rest (paper: 0.15) keep their token. The P =
    `max_predictions` slots beyond num_to_predict are padding: position 0, weight 0, and
    they never change the sequence.

    With `word_starts` ([B, S], 1 where a token begins a word) whole words are drawn
    instead, by `choose_whole_words`: all pieces of a chosen word are predicted, and the
    number of pieces stays at most num_to_predict.

    input_ids, attention_mask: [B, S]. Returns MaskedInputs (see its fields).
    """
    _check_masking_args(input_ids.shape[-1], mask_prob, max_predictions, mask_token_frac, random_token_frac, vocab_size)
    choose_rng, policy_rng, random_rng = jax.random.split(rng, 3)
    candidates = _is_candidate(input_ids, attention_mask, special_token_ids)  # [B, S]
    n_tokens = attention_mask.sum(-1).astype(jnp.float32)
    num_to_predict = jnp.clip(jnp.round(n_tokens * mask_prob).astype(jnp.int32), 1, max_predictions)
    num_to_predict = jnp.minimum(num_to_predict, candidates.sum(-1))  # [B]
    uniforms = jax.random.uniform(choose_rng, input_ids.shape)
    if word_starts is None:
        # A uniformly random order of the candidates: sort random keys, non-candidates last.
        keys = jnp.where(candidates, uniforms, 2.0)
        order = jnp.argsort(keys, axis=-1)[:, :max_predictions].astype(jnp.int32)  # [B, P]
        weights = (jnp.arange(max_predictions)[None, :] < num_to_predict[:, None]).astype(jnp.float32)
    else:
        order, weights = choose_whole_words(uniforms, word_starts, candidates, num_to_predict, max_predictions)
    positions = jnp.where(weights > 0, order, 0)
    original = jnp.take_along_axis(input_ids, positions, axis=-1)

    draw = jax.random.uniform(policy_rng, positions.shape)
    replacement = original
    if random_token_frac > 0:
        random_ids = _random_regular_tokens(random_rng, positions.shape, vocab_size, special_token_ids)
        replacement = jnp.where(draw < mask_token_frac + random_token_frac, random_ids, replacement)
    replacement = jnp.where(draw < mask_token_frac, mask_token_id, replacement).astype(input_ids.dtype)
    masked_input_ids = _scatter(input_ids, positions, weights, replacement)
    return MaskedInputs(masked_input_ids, positions, original.astype(jnp.int32), weights)


def choose_whole_words(
    uniforms: Array, word_starts: Array, candidates: Array, num_to_predict: Array, max_predictions: int
) -> tuple[Array, Array]:
    """Positions ([B, P] int32) and weights ([B, P]) of whole words, BERT's WWM rule.

    A word is a run of candidate tokens from a start to the next (a non-candidate token,
    and the token after one, always starts a word, so words never span [CLS] / [SEP]).
    Words are visited in the random order of `uniforms` at their first piece; a word is
    taken whole if its pieces fit in what is left of num_to_predict, else skipped (as
    BERT's `create_masked_lm_predictions`). Static shapes: one stable sort and a scan over
    the S positions, vectorized over the batch.
    """
    batch, seq_len = uniforms.shape
    index = jnp.arange(seq_len)
    after_other = jnp.pad(~candidates[:, :-1], ((0, 0), (1, 0)), constant_values=True)
    starts = (word_starts > 0) | ~candidates | after_other
    start_of = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)  # each token's word start
    word_length = jnp.zeros_like(uniforms, jnp.int32).at[jnp.arange(batch)[:, None], start_of].add(1)
    length = jnp.take_along_axis(word_length, start_of, axis=1)  # of each token's word
    keys = jnp.where(candidates, jnp.take_along_axis(uniforms, start_of, axis=1), 2.0)
    # Stable: a word's pieces (equal keys) stay together and in order.
    order = jnp.argsort(keys, axis=1, stable=True)
    sorted_first = jnp.take_along_axis(starts, order, axis=1)
    sorted_length = jnp.take_along_axis(length, order, axis=1)
    sorted_candidate = jnp.take_along_axis(candidates, order, axis=1)

    def visit(carry, column):
        count, taking = carry
        first, word_len, candidate = column
        fits = candidate & (count + word_len <= num_to_predict)
        taking = jnp.where(first, fits, taking)
        count = count + jnp.where(first & taking, word_len, 0)
        return (count, taking), taking

    zeros = jnp.zeros((batch,), jnp.int32)
    columns = (sorted_first.T, sorted_length.T, sorted_candidate.T)
    (num_taken, _), taken = jax.lax.scan(visit, (zeros, zeros > 0), columns)
    taken = taken.T  # [B, S] in visiting order
    # The taken positions first, still in visiting order; then the first P of them.
    chosen = jnp.take_along_axis(order, jnp.argsort(~taken, axis=1, stable=True), axis=1)[:, :max_predictions]
    weights = (jnp.arange(max_predictions)[None, :] < num_taken[:, None]).astype(jnp.float32)
    return chosen.astype(jnp.int32), weights


def _random_regular_tokens(rng, shape, vocab_size: int, special_token_ids: Sequence[int]) -> Array:
    logits = jnp.zeros((vocab_size,)).at[jnp.asarray(tuple(special_token_ids))].set(-jnp.inf)
    return jax.random.categorical(rng, logits, shape=shape).astype(jnp.int32)


def _check_masking_args(
    seq_len: int,
    mask_prob: float,
    max_predictions: int,
    mask_token_frac: float,
    random_token_frac: float,
    vocab_size: Optional[int],
) -> None:
    if not 0.0 < mask_prob <= 1.0:
        raise ValueError(f"mask_prob={mask_prob} must lie in (0, 1]; the paper uses 0.15")
    if not 1 <= max_predictions <= seq_len:
        raise ValueError(
            f"max_predictions={max_predictions} must lie in [1, seq_len={seq_len}]; "
            "the original uses int((mask_prob + 0.005) * seq_len)"
        )
    fracs_ok = 0.0 <= mask_token_frac and 0.0 <= random_token_frac
    if not (fracs_ok and mask_token_frac + random_token_frac <= 1.0):
        raise ValueError(
            f"mask_token_frac={mask_token_frac} and random_token_frac="
            f"{random_token_frac} must be >= 0 with a sum <= 1 (paper: 0.85, 0.0)"
        )
    if random_token_frac > 0 and vocab_size is None:
        raise ValueError(
            f"random_token_frac={random_token_frac} > 0 needs vocab_size to draw "
            "random tokens from; pass vocab_size=config.model.vocab_size"
        )


def _scatter(sequence: Array, positions: Array, weights: Array, values: Array) -> Array:
    """sequence[b, positions[b, p]] = values[b, p] where weights > 0.

    Padding slots are sent out of bounds and dropped, so they can never race with a real
    write at position 0 (scatter order of duplicate indices is undefined)."""
    sequence = jnp.asarray(sequence)
    rows = jnp.arange(sequence.shape[0])[:, None]
    targets = jnp.where(weights > 0, positions, sequence.shape[-1])  # [B, P]
    return sequence.at[rows, targets].set(values.astype(sequence.dtype), mode="drop")


SAMPLERS = ("gumbel", "inverse_cdf")
_SAMPLING_BLOCK = 128  # vocabulary entries per block of the two-level inverse CDF


def sample_replacements(
    rng: Array,
    gen_logits: Array,
    *,
    temperature: float = 1.0,
    disallow_ids: Optional[Array] = None,
    sampler: str = "gumbel",
) -> Array:
    """[B, P] tokens drawn from softmax(gen_logits / temperature).

    `sampler="gumbel"` (the original's): the Gumbel-max trick, one noise draw per
    vocabulary entry. `"inverse_cdf"`: the same law from one uniform per position, through
    a two-level CDF (block sums, then one block's entries, so no cumulative sum runs over
    the whole vocabulary); Gumbel's noise and argmax over [B, P, V] were 29% of the tiny
    step on a CPU. Tokens of zero probability (masked padding rows, `disallow_ids`) are
    never drawn by either. `disallow_ids` ([B, P]) is the original's `disallow_correct`
    ablation.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}; choose one of {SAMPLERS}")
    logits = jax.lax.stop_gradient(gen_logits).astype(jnp.float32) / temperature
    if disallow_ids is not None:
        logits = jnp.where(jax.nn.one_hot(disallow_ids, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    if sampler == "gumbel":
        gumbel = jax.random.gumbel(rng, logits.shape, jnp.float32)
        return jnp.argmax(logits + gumbel, axis=-1).astype(jnp.int32)
    probs = jnp.exp(logits - logits.max(axis=-1, keepdims=True))  # unnormalised
    vocab = probs.shape[-1]
    num_blocks = -(-vocab // _SAMPLING_BLOCK)
    blocks = jnp.pad(probs, [(0, 0)] * (probs.ndim - 1) + [(0, num_blocks * _SAMPLING_BLOCK - vocab)])
    blocks = blocks.reshape(*probs.shape[:-1], num_blocks, _SAMPLING_BLOCK)
    block_mass = blocks.sum(axis=-1)
    block_cdf = jnp.cumsum(block_mass, axis=-1)
    # (1 - u) lies in (0, 1]: the target mass is positive, so it is never met by a
    # zero-probability token at the start of the vocabulary
    target = (1.0 - jax.random.uniform(rng, probs.shape[:-1])) * block_cdf[..., -1]
    block = _first_reaching(block_cdf, block_mass, target)
    mass_before = jnp.take_along_axis(block_cdf - block_mass, block[..., None], axis=-1)[..., 0]
    entries = jnp.take_along_axis(blocks, block[..., None, None], axis=-2)[..., 0, :]
    entry = _first_reaching(jnp.cumsum(entries, axis=-1), entries, target - mass_before)
    return (block * _SAMPLING_BLOCK + entry).astype(jnp.int32)


def _first_reaching(cdf: Array, mass: Array, target: Array) -> Array:
    """Index of the first entry of positive mass whose cdf reaches `target`; the last entry
    of positive mass when rounding leaves `target` just above every cdf value."""
    index = jnp.arange(mass.shape[-1])
    positive = mass > 0
    last_positive = jnp.max(jnp.where(positive, index, -1), axis=-1, keepdims=True)
    reached = positive & ((cdf >= target[..., None]) | (index == last_positive))
    return jnp.argmax(reached, axis=-1)


def corrupt_inputs(
    input_ids: Array, masked_positions: Array, masked_weights: Array, sampled_ids: Array
) -> tuple[Array, Array]:
    """(the discriminator's input [B, S], is_replaced [B, S] bool)."""
    corrupted = _scatter(input_ids, masked_positions, masked_weights, sampled_ids)
    return corrupted, corrupted != input_ids


def _mlm_terms(gen_logits, masked_ids, masked_weights):
    log_probs = jax.nn.log_softmax(gen_logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, masked_ids[..., None], axis=-1)[..., 0]  # [B, P]
    return nll * masked_weights


def _disc_terms(disc_logits, is_replaced, attention_mask):
    logits = disc_logits.astype(jnp.float32)
    labels = is_replaced.astype(jnp.float32)
    # log(1 + exp(-|x|)) form: stable for large logits in either direction
    losses = jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return losses * attention_mask.astype(jnp.float32)


def mlm_loss(gen_logits: Array, masked_ids: Array, masked_weights: Array) -> Array:
    """Weighted mean cross-entropy at the chosen positions ([B, P, V] logits)."""
    return _mlm_terms(gen_logits, masked_ids, masked_weights).sum() / jnp.maximum(masked_weights.sum(), 1.0)


def disc_loss(disc_logits: Array, is_replaced: Array, attention_mask: Array) -> Array:
    """Sigmoid cross-entropy averaged over real (non-pad) tokens ([B, S] logits)."""
    mask = attention_mask.astype(jnp.float32)
    return _disc_terms(disc_logits, is_replaced, attention_mask).sum() / jnp.maximum(mask.sum(), 1.0)


# Discriminator scores are histogrammed on the logit scale, so the replaced-token ROC-AUC is
# a sum over microbatches and devices like every other metric: 4096 bins over [-16, 16]
# tell logits 1/128 apart, finer than any ranking a discriminator has learned. Logits
# outside the range share the end bins (ties count one half, as in sklearn).
AUC_BINS = 4096
AUC_LOGIT_RANGE = 16.0


def mlm_metric_sums(
    gen_logits: Array, masked_ids: Array, masked_weights: Array, attention_mask: Array
) -> dict[str, tuple[Array, Array]]:
    """The generator's (numerator, denominator) sums over one (micro)batch."""
    mlm_correct = (jnp.argmax(gen_logits, -1) == masked_ids).astype(jnp.float32) * masked_weights
    n_masked = masked_weights.sum()
    return {
        "mlm_loss": (_mlm_terms(gen_logits, masked_ids, masked_weights).sum(), n_masked),
        "mlm_accuracy": (mlm_correct.sum(), n_masked),
        "masked_fraction": (n_masked, attention_mask.astype(jnp.float32).sum()),
    }


def disc_metric_sums(disc_logits: Array, is_replaced: Array, attention_mask: Array) -> dict[str, tuple[Array, Array]]:
    """The discriminator's sums over one (micro)batch. `disc_auc` holds the histograms of
    the replaced and of the original tokens' logits, not a ratio (see `roc_auc`);
    `disc_baseline_accuracy` is the accuracy of calling every token original."""
    real = attention_mask.astype(jnp.float32)
    replaced = is_replaced.astype(jnp.float32) * real
    original = real - replaced
    predicted = (disc_logits > 0).astype(jnp.float32) * real
    disc_correct = (predicted == replaced).astype(jnp.float32) * real
    true_positive = predicted * replaced
    n_real = real.sum()
    return {
        "disc_loss": (_disc_terms(disc_logits, is_replaced, attention_mask).sum(), n_real),
        "disc_accuracy": (disc_correct.sum(), n_real),
        "disc_baseline_accuracy": (original.sum(), n_real),
        "disc_precision": (true_positive.sum(), predicted.sum()),
        "disc_recall": (true_positive.sum(), replaced.sum()),
        "disc_auc": (_logit_histogram(disc_logits, replaced), _logit_histogram(disc_logits, original)),
        "replaced_fraction": (replaced.sum(), n_real),
    }


def metric_sums(
    gen_logits: Array,
    masked_ids: Array,
    masked_weights: Array,
    disc_logits: Array,
    is_replaced: Array,
    attention_mask: Array,
) -> dict[str, tuple[Array, Array]]:
    """name -> (numerator, denominator) sums of both networks over one (micro)batch; add
    them across microbatches/devices, then `metrics_from_sums`."""
    return {
        **mlm_metric_sums(gen_logits, masked_ids, masked_weights, attention_mask),
        **disc_metric_sums(disc_logits, is_replaced, attention_mask),
    }


def _logit_histogram(logits: Array, weights: Array) -> Array:
    """[AUC_BINS] sum of `weights` per logit bin."""
    scaled = (logits.astype(jnp.float32) + AUC_LOGIT_RANGE) * (AUC_BINS / (2 * AUC_LOGIT_RANGE))
    bins = jnp.clip(jnp.floor(scaled), 0, AUC_BINS - 1).astype(jnp.int32)
    return jnp.zeros((AUC_BINS,), jnp.float32).at[bins.ravel()].add(weights.ravel())


def roc_auc(positive_histogram: Array, negative_histogram: Array) -> Array:
    """P(score of a positive > score of a negative) + P(tie) / 2, from binned scores; NaN
    when either class is empty (the AUC is undefined there, not 0.5)."""
    negatives_below = jnp.cumsum(negative_histogram) - negative_histogram
    pairs = (positive_histogram * (negatives_below + 0.5 * negative_histogram)).sum()
    total = positive_histogram.sum() * negative_histogram.sum()
    return jnp.where(total > 0, pairs / jnp.maximum(total, 1e-12), jnp.nan)


def metrics_from_sums(sums: dict[str, tuple[Array, Array]], disc_weight: Optional[float] = None) -> dict[str, Array]:
    """Ratios from summed (numerator, denominator) pairs; 0 where the denominator is 0.
    With `disc_weight`, also the total loss mlm + disc_weight * disc (ELECTRA runs)."""
    metrics = {
        name: roc_auc(num, den) if name == "disc_auc" else jnp.where(den > 0, num / jnp.maximum(den, 1e-12), 0.0)
        for name, (num, den) in sums.items()
    }
    if disc_weight is not None and "disc_loss" in metrics:
        metrics["total_loss"] = metrics["mlm_loss"] + disc_weight * metrics["disc_loss"]
    return metrics


# ---------------------------------------------------------------------------- objectives


class Networks(NamedTuple):
    """The pretraining networks on one (micro)batch, as an objective calls them."""

    generate: Callable[[], Array]  # () -> the generator's logits at the masked positions [b, P, V]
    discriminate: Callable[[Array], Array]  # input ids [b, S] -> the discriminator's logits [b, S]
    # the generator's logits -> (the discriminator's input [b, S], is_replaced [b, S]),
    # replacements sampled at the masked positions
    corrupt: Callable[[Array], tuple[Array, Array]]


def mlm_objective(networks: Networks, batch: dict, totals: dict, disc_weight: float):
    """(loss, metric sums): the masked-LM loss, normalised by the whole batch's masked count."""
    gen_logits = networks.generate()
    sums = mlm_metric_sums(gen_logits, batch["masked_ids"], batch["masked_weights"], batch["attention_mask"])
    return sums["mlm_loss"][0] / totals["masked"], sums


def electra_objective(networks: Networks, batch: dict, totals: dict, disc_weight: float):
    """(loss, metric sums): the generator's MLM loss + disc_weight x the discriminator's
    replaced-token loss on the generator's samples (normalised by the batch's real tokens)."""
    gen_logits = networks.generate()
    sums = mlm_metric_sums(gen_logits, batch["masked_ids"], batch["masked_weights"], batch["attention_mask"])
    corrupted_ids, is_replaced = networks.corrupt(gen_logits)
    disc_logits = networks.discriminate(corrupted_ids)
    sums.update(disc_metric_sums(disc_logits, is_replaced, batch["attention_mask"]))
    loss = sums["mlm_loss"][0] / totals["masked"]
    return loss + disc_weight * sums["disc_loss"][0] / totals["tokens"], sums


@dataclasses.dataclass(frozen=True)
class Objective:
    networks: tuple[str, ...]  # what it trains: "generator" (a masked LM), "discriminator"
    loss: Callable  # (Networks, batch with its masking, whole-batch totals, disc_weight) -> (loss, sums)


OBJECTIVES = {
    "electra": Objective(("generator", "discriminator"), electra_objective),
    # BERT-style, the baseline ELECTRA is measured against: one masked LM at the
    # discriminator's size, named "generator" since it is an ElectraForMaskedLM
    "mlm": Objective(("generator",), mlm_objective),
}


def named(kind: str) -> Objective:
    if kind not in OBJECTIVES:
        raise ValueError(f"objective.kind={kind!r}; choose one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[kind]
