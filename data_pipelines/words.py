"""Word boundaries of tokenized text, for whole-word masking (stored in the shards).

`word_starts(ids)[i]` is 1 where token i begins a word and 0 where it continues the
previous token's word. Two sources:

* ``"pieces"`` (default): the tokenizer's own marks. A WordPiece token continues a word
  when it starts with ``##``; a sentencepiece piece begins one when it starts with ``▁``
  (the whitespace mark). Right for spaced scripts; in Chinese or Japanese text without
  spaces a whole sentence would be one "word".
* ``"jieba"``: a Chinese word segmenter (`pip install jieba`) run on the raw sentence. A
  token begins a word unless its first character lies in the same segmenter word as the
  previous token's last character, so a piece that straddles two words (sentencepiece
  can merge "是学" of "是/学生") joins them into one masking unit rather than split one.

Special tokens always begin a word; the masking step also starts a word after any
special token, so a word never spans [CLS] or [SEP].
"""

from typing import Sequence

import numpy as np

from data_pipelines import tokenizer as tokenizer_lib

WORD_SEGMENTERS = ("pieces", "jieba")
SENTENCEPIECE_SPACE = "\u2581"


def piece_word_start_table(tokenizer: tokenizer_lib.Tokenizer) -> np.ndarray:
    """[vocab_size] bool: whether a token of each id begins a word by its mark."""
    pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    if isinstance(tokenizer, tokenizer_lib.WordPieceTokenizer):
        table = np.array([not p.startswith("##") for p in pieces])
    else:
        table = np.array([p.startswith(SENTENCEPIECE_SPACE) for p in pieces])
    table[list(tokenizer.special_ids)] = True
    return table


def check_segmenter(segmenter: str) -> None:
    if segmenter not in WORD_SEGMENTERS:
        raise ValueError(f"word_segmenter={segmenter!r}; use one of {WORD_SEGMENTERS}")


class WordBoundaries:
    """Token ids and their word starts for one sentence at a time, by `segmenter`."""

    def __init__(self, tokenizer: tokenizer_lib.Tokenizer, segmenter: str = "pieces"):
        check_segmenter(segmenter)
        self._tokenizer = tokenizer
        self._segmenter = segmenter
        self._table = piece_word_start_table(tokenizer)
        if segmenter == "jieba":
            self._jieba = _import_jieba()

    def encode(self, sentence: str) -> tuple[list[int], list[int]]:
        """(token ids, word starts) of `sentence`, both of one length."""
        if self._segmenter == "pieces":
            ids = self._tokenizer.encode(sentence)
            return ids, self._table[ids].astype(int).tolist() if ids else []
        ids, offsets = self._tokenizer.encode_with_offsets(sentence)
        word_of_char = np.zeros(len(sentence) + 1, np.int64)  # + 1: an empty span at the end
        for index, (_, start, end) in enumerate(self._jieba.tokenize(sentence)):
            word_of_char[start:end] = index
        word_of_char[len(sentence)] = word_of_char[len(sentence) - 1] if sentence else 0
        return ids, starts_from_char_words(offsets, word_of_char)


def starts_from_char_words(offsets: Sequence[tuple[int, int]], word_of_char: np.ndarray) -> list[int]:
    """Word starts of tokens with character spans `offsets`, given the word index of every
    character. An empty span (a lone whitespace mark) belongs to the word of the character
    after it."""
    starts, previous_last_word = [], None
    for start, end in offsets:
        first_word = word_of_char[start]
        last_word = word_of_char[end - 1] if end > start else first_word
        starts.append(int(previous_last_word is None or first_word != previous_last_word))
        previous_last_word = last_word
    return starts


def _import_jieba():
    try:
        import jieba
    except ImportError:
        raise ImportError(
            "word_segmenter='jieba' needs the jieba package: pip install jieba (or pip install -e '.[chinese]')"
        ) from None
    jieba.setLogLevel(60)  # its dictionary-loading chatter goes to stderr otherwise
    return jieba
