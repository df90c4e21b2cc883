"""Does the discriminator use context, or only which token it sees?

    python -m benchmarks.studies.rtd_context_check --workdir=workdirs/tiny_default

On the held-out batches, corrupted exactly as the run's evaluation corrupts them (same
masking and sampling seed, dropout off), compares the discriminator's replaced-token
ROC-AUC with that of a context-free detector that scores each token by the fraction of
its occurrences that were replaced (smoothed towards the overall rate), fitted on one half
of the batches and scored on the other, both ways. A discriminator whose AUC is not above
it has learned which tokens get sampled, not language. Needs scikit-learn.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from data_pipelines import input_pipeline
from electra_jax import checkpoints, pretrain, sharding


def corrupted_eval_tokens(config, workdir: str, step: int | None = None):
    """(token ids, is_replaced, discriminator logits) of every real held-out token."""
    trainer, state = pretrain.restore_train_state(config, workdir, step)
    net, params = trainer.net, state.params
    tokens, labels, logits = [], [], []
    for index, batch in enumerate(input_pipeline.eval_batches(config, sharding.batch_sharding(trainer.mesh))):
        inputs = pretrain.eval_inputs(config, batch, config.train.eval_seed, index)  # evaluation's masking
        gen_logits = net.apply(
            {"params": params},
            inputs["masked_input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
            inputs["masked_positions"],
            True,
            method=net.generate,
        )
        corrupted, is_replaced = pretrain.corrupt(config, inputs, gen_logits)
        disc_logits = net.apply(
            {"params": params},
            corrupted,
            batch["attention_mask"],
            batch["token_type_ids"],
            True,
            method=net.discriminate,
        )
        real = np.asarray(batch["attention_mask"]) > 0
        tokens.append(np.asarray(corrupted)[real])
        labels.append(np.asarray(is_replaced)[real])
        logits.append(np.asarray(disc_logits)[real])
    return np.concatenate(tokens), np.concatenate(labels), np.concatenate(logits)


def token_only_scores(tokens: np.ndarray, labels: np.ndarray, prior_weight: float = 5.0) -> np.ndarray:
    """Each token's replaced fraction in the OTHER half of the data (2-fold cross-fitting;
    in-sample, a token seen once would be classified perfectly), smoothed towards the
    overall rate with `prior_weight` pseudo-counts."""
    halves = np.arange(tokens.size) % 2
    scores = np.empty(tokens.size)
    for half in (0, 1):
        fit, score = halves != half, halves == half
        length = tokens.max() + 1
        replaced = np.bincount(tokens[fit], weights=labels[fit].astype(np.float64), minlength=length)
        seen = np.bincount(tokens[fit], minlength=length)
        rate = labels[fit].mean()
        scores[score] = ((replaced + prior_weight * rate) / (seen + prior_weight))[tokens[score]]
    return scores


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--step", type=int, default=None)
    args = parser.parse_args(argv)
    from sklearn.metrics import roc_auc_score

    config = checkpoints.load_run_config(args.workdir)
    tokens, labels, logits = corrupted_eval_tokens(config, args.workdir, args.step)
    result = {
        "tokens": int(tokens.size),
        "replaced_fraction": float(labels.mean()),
        "disc_auc": float(roc_auc_score(labels, logits)),
        "token_only_auc": float(roc_auc_score(labels, token_only_scores(tokens, labels))),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
