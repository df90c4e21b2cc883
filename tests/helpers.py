"""What the tests share: the tiny encoder, WordPiece vocabularies, transformers-format
model directories, and the shared data folder (a test that needs it is skipped cleanly
where it is absent)."""

import os
from typing import Sequence

import jax
import numpy as np
import pytest
import safetensors.numpy

from benchmarks.shared_data import ENV_VAR, shared_path
from electra_jax import hf, model

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0-4, as every tokenizer here
# The encoder most tests fine-tune or compare: 2 layers of 32, embeddings 16 (projected).
TINY = dict(
    embedding_size=16,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
    initializer_range=0.2,
)


def write_vocab(path, words: Sequence[str] = (), extra: Sequence[str] = ()) -> int:
    """A WordPiece vocab.txt: SPECIALS, the sorted distinct `words`, then `extra` as given.
    Returns its size."""
    tokens = SPECIALS + sorted(set(words)) + list(extra)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    return len(tokens)


def write_hf_model(
    out_dir: str, words: Sequence[str], seed: int, kind: str = "discriminator", extra: Sequence[str] = (), **overrides
) -> model.ElectraConfig:
    """A transformers ELECTRA directory with random weights (`kind` as hf.save_pretrained
    takes it) and its vocab.txt (`write_vocab(words, extra)`), on the TINY encoder with
    `overrides`."""
    vocab_size = write_vocab(os.path.join(out_dir, "vocab.txt"), words, extra)
    cfg = model.ElectraConfig(vocab_size=vocab_size, **{**TINY, **overrides})
    network = model.Generator(cfg) if kind == "generator" else model.Discriminator(cfg)
    hf.save_pretrained(cfg, model.init_params(network, jax.random.PRNGKey(seed)), out_dir, kind=kind)
    return cfg


def read_safetensors(directory) -> dict[str, np.ndarray]:
    """The arrays of DIRECTORY/model.safetensors (an export), by name."""
    return safetensors.numpy.load_file(os.path.join(directory, "model.safetensors"))


def shared_data_or_skip(*parts: str) -> str:
    """The path of `parts` inside the shared data folder; skips the test where it is absent."""
    path = shared_path(*parts)
    if not os.path.exists(path):
        pytest.skip(f"{path} not present (set {ENV_VAR} to the shared data folder)")
    return path


WORDS = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher"
).split()


def write_corpus(path, num_documents=12, sentences_per_document=20):
    """Random sentences over a fixed vocabulary: ELECTRA's text format (a sentence a line,
    a blank line between documents), instant to write, unlike the embedded corpus."""
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(num_documents):
            for _ in range(sentences_per_document):
                f.write(" ".join(rng.choice(WORDS, rng.integers(6, 16))).capitalize() + ".\n")
            f.write("\n")
