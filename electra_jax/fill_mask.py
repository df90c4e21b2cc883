"""Fill-mask with the ELECTRA generator: the top-k tokens for every [MASK] in a text.

    python -m electra_jax.fill_mask --config.init=DIR "The capital of France is [MASK]."
    python -m electra_jax.fill_mask --config.init=PRETRAIN_WORKDIR --config.init_step=1000 --config.top_k=10 "..."

`DIR` is a pretraining workdir of `electra_jax.train` (its generator) or a transformers
`ElectraForMaskedLM` directory (with its vocab.txt / sentencepiece model). In Python:

    generator = load_generator(init)
    fill_mask(generator, "The capital of France is [MASK].", top_k=5)
    # -> [[{"token": "paris", "id": 3000, "probability": 0.41}, ...]]  (one list per [MASK])
"""

import functools
import json
from typing import Optional

import ml_collections
from absl import app

from data_pipelines import errors

MASK_TEXT = "[MASK]"


def load_generator(init: str, init_step: Optional[int] = None, tokenizer_path: str = ""):
    """The generator network (config, params, tokenizer) of a workdir or HF directory."""
    from electra_jax import loading

    return loading.load_network(init, init_step, tokenizer_path, network="generator")


def encode_masked_text(tokenizer, text: str, max_length: int) -> list[int]:
    """[CLS] ids [SEP] of `text` with every literal "[MASK]" as the mask id (a tokenizer
    would split the bracketed word into pieces)."""
    parts = text.split(MASK_TEXT)
    if len(parts) == 1:
        raise ValueError(f"no {MASK_TEXT} in {text!r}; write {MASK_TEXT} where a word should be predicted")
    ids = tokenizer.encode(parts[0])
    for part in parts[1:]:
        ids += [tokenizer.mask_id, *tokenizer.encode(part)]
    ids = [tokenizer.cls_id, *ids, tokenizer.sep_id]
    if len(ids) > max_length:
        raise ValueError(
            f"the text is {len(ids)} tokens but the generator takes at most "
            f"{max_length} (max_position_embeddings); shorten it"
        )
    return ids


@functools.lru_cache(maxsize=4)
def _generator_forward(cfg):
    """jitted (params, ids [S]) -> [S, V] logits, built once per config."""
    import jax
    import jax.numpy as jnp

    from electra_jax import model

    @jax.jit
    def forward(params, ids):
        ids = ids[None]
        logits = model.Generator(cfg).apply(
            {"params": params}, ids, jnp.ones_like(ids), jnp.zeros_like(ids), deterministic=True
        )[0]
        return logits[:, : cfg.vocab_size]  # without a padded vocabulary's masked columns

    return forward


def fill_mask(generator, text: str, top_k: int = 5) -> list[list[dict]]:
    """Per [MASK] of `text` (left to right), the `top_k` most probable tokens other than
    the special ones: {"token", "id", "probability"}, most probable first. Each mask is predicted with all
    masks in place (one forward pass), as transformers' fill-mask pipeline does."""
    import numpy as np

    tokenizer, cfg = generator.tokenizer, generator.model_config
    # [PAD], [CLS], [SEP], [MASK], [UNK] are no completion of a text.
    candidates = np.setdiff1d(np.arange(cfg.vocab_size), tokenizer.special_ids)
    if not 1 <= top_k <= len(candidates):
        raise ValueError(
            f"top_k={top_k}; ask for 1 to {len(candidates)} completions (the vocabulary's tokens, special ones aside)"
        )
    input_ids = encode_masked_text(tokenizer, text, cfg.max_position_embeddings)
    logits = np.asarray(_generator_forward(cfg)(generator.params, np.array(input_ids, np.int32)), np.float64)
    completions = []
    for position in np.flatnonzero(np.array(input_ids) == tokenizer.mask_id):
        scores = logits[position]
        probabilities = np.exp(scores - scores.max())
        probabilities /= probabilities.sum()  # over the whole vocabulary: the model's own probabilities
        best = candidates[np.argsort(-scores[candidates], kind="stable")[:top_k]]
        completions.append(
            [
                {
                    "token": tokenizer.decode([int(i)]) or tokenizer.id_to_piece(int(i)),
                    "id": int(i),
                    "probability": float(probabilities[i]),
                }
                for i in best
            ]
        )
    return completions


def fill_mask_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.init = ""  # pretraining workdir or transformers ElectraForMaskedLM directory
    c.init_step = ml_collections.config_dict.placeholder(int)  # pretraining step; None = the latest
    c.tokenizer = ""  # tokenizer override; default: the one that comes with init
    c.top_k = 5  # completions per [MASK]
    return c


def main(config, texts):
    if not texts:
        raise app.UsageError('give the text(s) to complete, e.g. "The capital of France is [MASK]."')
    generator = load_generator(config.init, config.init_step, config.tokenizer)
    for text in texts:
        print(json.dumps({"text": text, "masks": fill_mask(generator, text, config.top_k)}, ensure_ascii=False))


def run():
    errors.run_tool(fill_mask_config(), main, required=("init",), takes_arguments=True)


if __name__ == "__main__":
    run()
