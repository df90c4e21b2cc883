"""Tokenizer tests: sentencepiece training with fixed special ids, WordPiece vs transformers."""

import os

import numpy as np
import pytest
import sentencepiece as spm

from benchmarks.shared_data import shared_path
from data_pipelines import tokenizer as tokenizer_lib

BERT_VOCAB = shared_path("bert-base-uncased-vocab", "vocab.txt")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "All that glitters is not gold; all who wander are not lost.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea.",
]


def write_corpus(path, repeats=20, num_topics=20):
    """A tiny real-English corpus: the sentences above in shuffled paragraphs, plus a few
    pages of the Python reference that ships with Python (pydoc_data)."""
    from pydoc_data import topics

    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(repeats):
            f.write(" ".join(rng.permutation(SENTENCES)) + "\n\n")
        for name in sorted(topics.topics)[:num_topics]:
            f.write(topics.topics[name] + "\n\n")
    return str(path)


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("spm")
    corpus = write_corpus(root / "corpus.txt")
    return tokenizer_lib.train_sentencepiece(corpus, str(root / "spm.model"), vocab_size=300)


def test_special_tokens_at_fixed_ids(spm_model):
    # Read the pieces with sentencepiece itself, not through our wrapper.
    processor = spm.SentencePieceProcessor(model_file=spm_model.path)
    assert [processor.id_to_piece(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (spm_model.pad_id, spm_model.unk_id, spm_model.cls_id, spm_model.sep_id, spm_model.mask_id) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert set(spm_model.special_ids) >= {0, 2, 3, 4}
    assert spm_model.vocab_size == processor.get_piece_size() == 300


def test_sentencepiece_round_trip(spm_model):
    for sentence in SENTENCES:
        ids = spm_model.encode(sentence)
        assert ids and min(ids) >= 5  # plain text never yields special ids
        assert spm_model.decode(ids) == sentence
    # "[MASK]" in raw text is text, not the mask token.
    assert 4 not in spm_model.encode("a [MASK] b")


def test_bpe_option(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt")
    bpe = tokenizer_lib.train_sentencepiece(corpus, str(tmp_path / "bpe.model"), vocab_size=150, model_type="bpe")
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(open(tmp_path / "bpe.model", "rb").read())
    assert proto.trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE
    assert bpe.decode(bpe.encode(SENTENCES[0])) == SENTENCES[0]


def test_encode_pair_truncation_hand_computed(spm_model):
    ids_a = spm_model.encode(SENTENCES[3])  # the longer one
    ids_b = spm_model.encode("the sea")
    features = spm_model.encode_pair(SENTENCES[3], "the sea", max_length=12)
    # 12 - 3 specials = 9 tokens; longest-first trims a down to 9 - len(b).
    keep_a = 9 - len(ids_b)
    expected = [2, *ids_a[:keep_a], 3, *ids_b, 3]
    assert features["input_ids"].tolist() == expected
    assert features["token_type_ids"].tolist() == [0] * (keep_a + 2) + [1] * (len(ids_b) + 1)
    assert features["attention_mask"].tolist() == [1] * 12
    single = spm_model.encode_pair("the sea", max_length=8)
    assert single["input_ids"].tolist() == [2, *ids_b, 3] + [0] * (8 - len(ids_b) - 2)
    assert single["attention_mask"].sum() == len(ids_b) + 2
    assert single["input_ids"].dtype == np.int32


def test_truncate_longest_first_ties_trim_b():
    assert tokenizer_lib.truncate_longest_first([1, 2, 3], [4, 5, 6], 4) == ([1, 2], [4, 5])
    assert tokenizer_lib.truncate_longest_first([1, 2, 3, 4, 5], [6], 3) == ([1, 2], [6])


WORDPIECE_TEXTS = [
    "Hello, World! This is ELECTRA's tokenizer test.",
    "Café déjà vu: naïve résumé façade, über-cool.",
    "unaffable pneumonoultramicroscopicsilicovolcanoconiosis $3.50 (approx.) 12:30pm",
    "Chinese 中文字符 mixed with english; emojis 🙂 stay [UNK]?",
    "tabs\tand\nnewlines\r\n  and   spaces",
    "a" * 120 + " long word",
    "The [MASK] sat on the mat.",
]


@pytest.fixture(scope="module")
def bert_pair():
    transformers = pytest.importorskip("transformers")
    if not os.path.exists(BERT_VOCAB):
        pytest.skip(f"{BERT_VOCAB} not present")
    return (
        tokenizer_lib.load_tokenizer(BERT_VOCAB),
        transformers.BertTokenizer.from_pretrained(os.path.dirname(BERT_VOCAB), do_lower_case=True),
    )


def test_wordpiece_matches_transformers(bert_pair):
    ours, reference = bert_pair
    assert ours.do_lower_case  # inferred from the uncased vocabulary
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (0, 100, 101, 102, 103)
    assert ours.vocab_size == 30522
    for text in WORDPIECE_TEXTS:
        expected = reference.encode(text, add_special_tokens=False)
        assert ours.encode(text) == expected, text


def test_wordpiece_pairs_match_transformers(bert_pair):
    ours, reference = bert_pair
    # max_length 17 leaves an even budget (14) for a + b: when both must be cut, BERT's
    # pop-from-the-longer loop (ours, as google-research/electra) and the Rust tokenizers'
    # split agree; with an odd budget they give the spare token to different segments.
    cases = [(a, b, n) for a, b in zip(WORDPIECE_TEXTS, WORDPIECE_TEXTS[1:] + [None]) for n in (17, 64)]
    for text_a, text_b, max_length in cases:
        expected = reference(text_a, text_b, max_length=max_length, truncation="longest_first", padding="max_length")
        features = ours.encode_pair(text_a, text_b, max_length=max_length)
        assert features["input_ids"].tolist() == expected["input_ids"]
        assert features["token_type_ids"].tolist() == expected["token_type_ids"]
        assert features["attention_mask"].tolist() == expected["attention_mask"]


def test_wordpiece_decode(bert_pair):
    ours, _ = bert_pair
    assert ours.decode(ours.encode("Unaffable tokenizers, indeed!")) == "unaffable tokenizers , indeed !"


def test_missing_input_is_an_error_and_writes_nothing(tmp_path):
    output = tmp_path / "out" / "spm.model"
    with pytest.raises(FileNotFoundError, match="no_such"):
        tokenizer_lib.train_sentencepiece(str(tmp_path / "no_such*.txt"), str(output), vocab_size=50)
    assert not output.parent.exists()


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(ValueError, match="no text"):
        tokenizer_lib.train_sentencepiece(str(tmp_path / "empty.txt"), str(tmp_path / "spm.model"), vocab_size=50)
    assert not (tmp_path / "spm.model").exists()


def test_vocab_too_large_names_the_limit(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", repeats=1, num_topics=1)
    with pytest.raises(ValueError, match=r"vocab_size=5000 is more than .* set vocab_size=\d+"):
        tokenizer_lib.train_sentencepiece(corpus, str(tmp_path / "spm.model"), vocab_size=5000)
    assert not list(tmp_path.glob("spm.model*"))


def test_invalid_utf8_policy(tmp_path):
    corpus = tmp_path / "bad.txt"
    good = "".join(f"{s}\n" for s in SENTENCES * 10)
    more = open(write_corpus(tmp_path / "more.txt"), "rb").read()
    corpus.write_bytes(good.encode() + b"caf\xe9 latin-1 line\n" + more)
    with pytest.raises(ValueError, match=r"bad.txt:61: invalid UTF-8"):
        tokenizer_lib.train_sentencepiece(
            str(corpus), str(tmp_path / "a.model"), vocab_size=100, on_invalid_utf8="error"
        )
    assert not (tmp_path / "a.model").exists()
    skipped = tokenizer_lib.train_sentencepiece(str(corpus), str(tmp_path / "b.model"), vocab_size=100)
    assert skipped.vocab_size == 100


def test_check_vocab_size_names_the_flag(spm_model):
    tokenizer_lib.check_vocab_size(300, spm_model)
    with pytest.raises(ValueError, match=r"vocab_size=30522 .* set --config.model.vocab_size=300"):
        tokenizer_lib.check_vocab_size(30522, spm_model)


def test_load_tokenizer_rejects_unknown_files(tmp_path):
    weird = tmp_path / "tokenizer.json"
    weird.write_text("{}")
    with pytest.raises(ValueError, match="cannot tell the tokenizer kind"):
        tokenizer_lib.load_tokenizer(str(weird))
    with pytest.raises(FileNotFoundError):
        tokenizer_lib.load_tokenizer(str(tmp_path / "missing.model"))
    bad_vocab = tmp_path / "vocab.txt"
    bad_vocab.write_text("[PAD]\nhello\n")
    with pytest.raises(ValueError, match=r"lacks special tokens \['\[UNK\]'"):
        tokenizer_lib.load_tokenizer(str(bad_vocab))


def test_a_truncated_sentencepiece_model_is_named(spm_model, tmp_path):
    truncated = tmp_path / "spm.model"
    with open(spm_model.path, "rb") as f:
        truncated.write_bytes(f.read()[:1000])
    with pytest.raises(ValueError, match=rf"{truncated} is not a sentencepiece model .*truncated"):
        tokenizer_lib.load_tokenizer(str(truncated))


def test_the_cli_refuses_an_existing_output_before_training(tmp_path, monkeypatch):
    existing = tmp_path / "mine.model"
    existing.write_bytes(b"the model my shards were built with")
    monkeypatch.setattr(tokenizer_lib, "train_sentencepiece", lambda **_: pytest.fail("trained"))
    config = tokenizer_lib.tokenizer_config()
    config.update(inputs=write_corpus(tmp_path / "c.txt"), output_path=str(existing), vocab_size=100)
    with pytest.raises(FileExistsError, match=r"mine\.model already exists; give another output_path"):
        tokenizer_lib.main(config, [])
    assert existing.read_bytes() == b"the model my shards were built with"
