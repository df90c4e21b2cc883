"""Tokenizers: sentencepiece training + loading, and BERT/ELECTRA WordPiece vocabularies.

Both kinds sit behind one `Tokenizer` interface used by shard building, pretraining and
fine-tuning:

    tok = load_tokenizer("spm.model")          # or ".../vocab.txt" of a google checkpoint
    ids = tok.encode("Hello world.")           # no special tokens added
    features = tok.encode_pair("A", "B", max_length=128)  # [CLS] A [SEP] B [SEP] + padding

Sentencepiece models trained here put ELECTRA's special tokens at fixed ids
([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4). WordPiece vocabularies keep their own ids
(bert-base-uncased: [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103).

Sentencepiece trains on a seeded sample of the corpus's documents (paragraphs, by
default) of at most `sample_bytes` bytes of UTF-8 (`sample_documents`), so memory and
time stay bounded on any corpus; the log states the sample's size. Measured (unigram,
32k pieces, English, 2 threads; Dec 2026): peak memory about 24 bytes per sample byte
(0.28 / 1.2 / 4.9 GB for 10 / 50 / 200 MB) and 1.4 CPU-seconds per MB, plus the sampling
pass over the whole corpus at about 6 MB/s (CPU) whatever the sample size. The default
200 MB sample of a 10 GB corpus therefore needs about 5 GB and, by projection, half an
hour of reading; training on all 10 GB would need about 240 GB, which is why it is sampled.

CLI (train a sentencepiece model):
    python -m data_pipelines.tokenizer --config.inputs='corpus/*.txt' --config.output_path=spm.model \
        --config.vocab_size=8000
    python -m data_pipelines.tokenizer --config.inputs='c4/*.json.gz' --config.text_field=text \
        --config.output_path=spm.model --config.vocab_size=32000 --config.sample_bytes=300000000
"""

import abc
import hashlib
import heapq
import io
import os
import re
import unicodedata
from typing import Iterable, Iterator, NamedTuple, Sequence

import ml_collections
import numpy as np
from absl import logging
from etils import epath

from data_pipelines import corpus_sources, errors, files, text_files

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# Sentencepiece models trained by `train_sentencepiece` have these pieces at these ids.
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
MODEL_TYPES = ("unigram", "bpe")
DEFAULT_CHARACTER_COVERAGE = 0.9999
# sentencepiece skips training sentences over max_sentence_length bytes; longer ones are
# cut into chunks of 4096 characters, at most 16384 bytes of UTF-8 in any script.
MAX_TRAINING_SENTENCE_BYTES = 16384
TRAINING_CHUNK_CHARS = 4096
# Bytes of text sentencepiece trains on, sampled from the corpus (`sample_documents`):
# about 5 GB of memory at this size (24 bytes per sample byte, measured).
DEFAULT_SAMPLE_BYTES = 200_000_000


class Tokenizer(abc.ABC):
    """Text <-> ids with ELECTRA's special tokens; subclasses supply encode/decode."""

    vocab_size: int
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids that masking must never choose: [PAD], [CLS], [SEP], [MASK], [UNK]."""
        return (self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.unk_id)

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special tokens other than [UNK] are dropped."""

    @abc.abstractmethod
    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """`encode(text)` and, per token, the (start, end) character span of `text` it covers,
        surrounding whitespace excluded (a whitespace-only token gets an empty span).

        Span extraction (SQuAD) maps answers through these: text[start:end] of a token is
        the original, un-normalized characters (case and accents kept).
        """

    def encode_pair(self, text_a: str, text_b: str | None = None, max_length: int = 128) -> dict[str, np.ndarray]:
        """BERT-style features: [CLS] a [SEP] (b [SEP]), longest-first truncation, padding.

        Returns int32 arrays of shape [max_length]: input_ids, attention_mask (1 on real
        tokens) and token_type_ids (0 for [CLS] a [SEP], 1 for b [SEP]).
        """
        ids_a = self.encode(text_a)
        ids_b = self.encode(text_b) if text_b is not None else []
        num_specials = 3 if text_b is not None else 2
        if max_length < num_specials:
            raise ValueError(
                f"max_length={max_length} cannot hold the {num_specials} special tokens; "
                f"use max_length >= {num_specials}"
            )
        ids_a, ids_b = truncate_longest_first(ids_a, ids_b, max_length - num_specials)
        input_ids = [self.cls_id, *ids_a, self.sep_id]
        token_type_ids = [0] * len(input_ids)
        if text_b is not None:
            input_ids += [*ids_b, self.sep_id]
            token_type_ids += [1] * (len(ids_b) + 1)
        num_padding = max_length - len(input_ids)
        return {
            "input_ids": np.array(input_ids + [self.pad_id] * num_padding, np.int32),
            "attention_mask": np.array([1] * len(input_ids) + [0] * num_padding, np.int32),
            "token_type_ids": np.array(token_type_ids + [0] * num_padding, np.int32),
        }


def truncate_longest_first(ids_a: Sequence[int], ids_b: Sequence[int], max_tokens: int) -> tuple[list[int], list[int]]:
    """Drops tokens from the end of the longer sequence (b on ties) until both fit.

    Same rule as BERT's `_truncate_seq_pair` and transformers' "longest_first".
    """
    ids_a, ids_b = list(ids_a), list(ids_b)
    while len(ids_a) + len(ids_b) > max_tokens:
        if len(ids_a) > len(ids_b):
            ids_a.pop()
        else:
            ids_b.pop()
    return ids_a, ids_b


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece model with the special pieces at the fixed ids of SPECIAL_TOKENS."""

    def __init__(self, model_path: str):
        import sentencepiece as spm  # heavy-ish C++ extension; only needed here

        self.path = model_path
        try:
            self._processor = spm.SentencePieceProcessor(model_file=model_path)
        except RuntimeError as error:  # "INTERNAL: could not parse ModelProto ...": a C++ error, not an OSError
            raise ValueError(
                f"{model_path} is not a sentencepiece model ({error}); it may be truncated or another kind of file: "
                "point the tokenizer setting at the spm.model that prepare_data or data_pipelines.tokenizer wrote"
            ) from None
        self.vocab_size = self._processor.get_piece_size()
        for expected_id, piece in enumerate(SPECIAL_TOKENS):
            actual_piece = self._processor.id_to_piece(expected_id) if expected_id < self.vocab_size else None
            if actual_piece != piece:
                raise ValueError(
                    f"sentencepiece model {model_path} has {actual_piece!r} at id {expected_id}, expected "
                    f"{piece!r}; train it with data_pipelines.tokenizer.train_sentencepiece"
                )
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = range(len(SPECIAL_TOKENS))

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(text)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        pieces = self._processor.encode(text, out_type="proto").pieces
        # sentencepiece reports UTF-8 byte offsets; map them to character offsets.
        char_of_byte = np.zeros(len(text.encode("utf-8")) + 1, np.int64)
        byte = 0
        for index, char in enumerate(text):
            width = len(char.encode("utf-8"))
            char_of_byte[byte : byte + width] = index
            byte += width
        char_of_byte[byte] = len(text)
        offsets = [_strip_whitespace(text, int(char_of_byte[p.begin]), int(char_of_byte[p.end])) for p in pieces]
        return [p.id for p in pieces], offsets

    def decode(self, ids: Iterable[int]) -> str:
        # Control pieces ([PAD], [CLS], [SEP], [MASK]) decode to nothing in sentencepiece.
        return self._processor.decode([int(i) for i in ids])

    def id_to_piece(self, token_id: int) -> str:
        return self._processor.id_to_piece(int(token_id))


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    if char in "\t\n\r":  # BERT counts these as whitespace, not control
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char: str) -> bool:
    code = ord(char)
    # BERT treats all non-letter/number ASCII (e.g. "$", "^", "`") as punctuation too.
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk(code: int) -> bool:
    """Whether a code point is a CJK ideograph, which BERT's basic tokenization splits off."""
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def basic_tokenize(text: str, do_lower_case: bool, strip_accents: bool | None = None) -> list[str]:
    """BERT's BasicTokenizer: clean, split CJK, lowercase, strip accents (by default when
    lower-casing, as transformers' `strip_accents=None`), split punctuation."""
    cleaned = []
    for char in text:
        code = ord(char)
        if code == 0 or code == 0xFFFD or _is_control(char):
            continue
        if is_cjk(code):
            cleaned.append(f" {char} ")
        else:
            cleaned.append(" " if _is_whitespace(char) else char)
    tokens = []
    for word in "".join(cleaned).split():
        word = _normalize_word(word, do_lower_case, strip_accents)
        current = ""
        for char in word:
            if _is_punctuation(char):
                if current:
                    tokens.append(current)
                tokens.append(char)
                current = ""
            else:
                current += char
        if current:
            tokens.append(current)
    return tokens


def _strip_whitespace(text: str, start: int, end: int) -> tuple[int, int]:
    """(start, end) narrowed to exclude whitespace at either side; (end, end) if all blank."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else (end, end)


def _normalize_word(chars: str, do_lower_case: bool, strip_accents: bool | None) -> str:
    """basic_tokenize's per-word normalization: NFC, lowercase, strip accents."""
    word = unicodedata.normalize("NFC", chars)
    if do_lower_case:
        word = word.lower()
    if do_lower_case if strip_accents is None else strip_accents:
        word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
    return word


def basic_tokenize_with_offsets(
    text: str, do_lower_case: bool, strip_accents: bool | None = None
) -> list[tuple[str, list[tuple[int, int]]]]:
    """`basic_tokenize(text)` with, for every character of every token, the (start, end)
    span of `text` it came from.

    Normalization works per character so each output character keeps its source; when
    that differs from normalizing the whole word (NFC composing a separately written
    accent in a cased vocabulary), every character of the word gets the word's span.
    """
    words: list[list[tuple[str, int]]] = [[]]  # (char, index in text) of whitespace-split words
    for index, char in enumerate(text):
        code = ord(char)
        if code == 0 or code == 0xFFFD or _is_control(char):
            continue
        blank = _is_whitespace(char) or char.isspace()  # basic_tokenize's str.split() too
        if blank or is_cjk(code):
            words.append([])
        if not blank:
            words[-1].append((char, index))
        if is_cjk(code):
            words.append([])
    tokens = []
    for word in filter(None, words):
        normalized = _normalize_word("".join(c for c, _ in word), do_lower_case, strip_accents)
        per_char = [(_normalize_word(c, do_lower_case, strip_accents), (i, i + 1)) for c, i in word]
        spans = [span for piece, span in per_char for _ in piece]
        if "".join(piece for piece, _ in per_char) != normalized:
            spans = [(word[0][1], word[-1][1] + 1)] * len(normalized)
        current, current_spans = "", []
        for char, span in zip(normalized, spans):
            if _is_punctuation(char):
                if current:
                    tokens.append((current, current_spans))
                tokens.append((char, [span]))
                current, current_spans = "", []
            else:
                current += char
                current_spans.append(span)
        if current:
            tokens.append((current, current_spans))
    return tokens


class WordPieceTokenizer(Tokenizer):
    """A BERT/ELECTRA `vocab.txt`: basic tokenization + greedy longest-match-first WordPiece.

    `do_lower_case=None` infers casing from the vocabulary (uncased if no entry other than
    the bracketed special tokens contains an ASCII uppercase letter). `strip_accents=None`
    strips accents exactly when lower-casing, as BERT's uncased models do; False keeps
    them in lower-cased text (French, Vietnamese). Both are read from a transformers
    `tokenizer_config.json` beside the vocabulary when given there. Chinese characters
    are split one per token, as in Google's Chinese BERT; see docs/chinese.md for when
    to prefer sentencepiece.
    """

    max_chars_per_word = 100  # as BERT: longer words become [UNK]

    def __init__(self, vocab_path: str, do_lower_case: bool | None = None, strip_accents: bool | None = None):
        self.path = vocab_path
        saved = _saved_casing(vocab_path)
        do_lower_case = saved.get("do_lower_case") if do_lower_case is None else do_lower_case
        strip_accents = saved.get("strip_accents") if strip_accents is None else strip_accents
        with open(vocab_path, encoding="utf-8") as f:
            self._tokens = [line.rstrip("\n").rstrip("\r") for line in f]
        self._ids = {token: index for index, token in enumerate(self._tokens)}
        missing = [t for t in SPECIAL_TOKENS if t not in self._ids]
        if missing:
            raise ValueError(
                f"WordPiece vocab {vocab_path} lacks special tokens {missing}; "
                "an ELECTRA/BERT vocab.txt must contain all of " + ", ".join(SPECIAL_TOKENS)
            )
        self.vocab_size = len(self._tokens)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self._ids[t] for t in SPECIAL_TOKENS)
        if do_lower_case is None:
            # ASCII only: uncased vocabularies still hold symbols like "ℝ" that count as upper.
            do_lower_case = not any(
                re.search("[A-Z]", t) for t in self._tokens if not (t.startswith("[") and t.endswith("]"))
            )
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self._special_split = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > self.max_chars_per_word:
            return [self.unk_id]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                candidate = word[start:end] if start == 0 else "##" + word[start:end]
                if candidate in self._ids:
                    pieces.append(self._ids[candidate])
                    break
                end -= 1
            if end == start:  # no piece matched: the whole word is unknown, as in BERT
                return [self.unk_id]
            start = end
        return pieces

    def encode(self, text: str) -> list[int]:
        ids = []
        # Literal special tokens in the text ("[MASK]") map to their ids, as in transformers.
        for part in self._special_split.split(text):
            if part in SPECIAL_TOKENS:
                ids.append(self._ids[part])
            else:
                for word in basic_tokenize(part, self.do_lower_case, self.strip_accents):
                    ids.extend(self._wordpiece(word))
        return ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        ids, offsets, part_start = [], [], 0
        for part in self._special_split.split(text):
            if part in SPECIAL_TOKENS:
                ids.append(self._ids[part])
                offsets.append((part_start, part_start + len(part)))
            else:
                for word, spans in basic_tokenize_with_offsets(part, self.do_lower_case, self.strip_accents):
                    pieces = self._wordpiece(word)
                    if pieces == [self.unk_id]:  # the whole word, however long
                        piece_lengths = [len(word)]
                    else:  # "##" continuation pieces cover two characters fewer than they spell
                        piece_lengths = [len(self._tokens[p]) - (2 if k else 0) for k, p in enumerate(pieces)]
                    start = 0
                    for piece, length in zip(pieces, piece_lengths):
                        ids.append(piece)
                        offsets.append((part_start + spans[start][0], part_start + spans[start + length - 1][1]))
                        start += length
            part_start += len(part)
        return ids, offsets

    def decode(self, ids: Iterable[int]) -> str:
        dropped = {self.pad_id, self.cls_id, self.sep_id, self.mask_id}
        text = " ".join(self._tokens[int(i)] for i in ids if int(i) not in dropped)
        return text.replace(" ##", "").strip()

    def id_to_piece(self, token_id: int) -> str:
        return self._tokens[int(token_id)]


def _saved_casing(vocab_path: str) -> dict:
    """do_lower_case / strip_accents of a transformers tokenizer_config.json beside the
    vocabulary (absent keys, or no file: {})."""
    path = os.path.join(os.path.dirname(vocab_path), "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    config = files.read_json(path)
    return {key: config[key] for key in ("do_lower_case", "strip_accents") if config.get(key) is not None}


def tokenizer_file_in(directory: str) -> str | None:
    """The tokenizer file `load_tokenizer(directory)` reads: vocab.txt, spm.model, else the
    first *.model; None if there is none."""
    candidates = [os.path.join(directory, name) for name in ("vocab.txt", "spm.model")]
    candidates += sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".model"))
    return next((c for c in candidates if os.path.isfile(c)), None)


def load_tokenizer(path: str) -> Tokenizer:
    """A sentencepiece `*.model` or a WordPiece `vocab.txt` (a directory holding one works)."""
    if os.path.isdir(path):
        found = tokenizer_file_in(path)
        if found is None:
            raise FileNotFoundError(f"tokenizer directory {path} holds neither vocab.txt nor a *.model file")
        path = found
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"tokenizer file {path} does not exist; train one with "
            "`python -m data_pipelines.tokenizer` or point at a vocab.txt"
        )
    if path.endswith(".model"):
        return SentencePieceTokenizer(path)
    if path.endswith(".txt"):
        return WordPieceTokenizer(path)
    raise ValueError(
        f"cannot tell the tokenizer kind of {path}: expected a sentencepiece '*.model' or a WordPiece 'vocab.txt'"
    )


def copy_tokenizer_file(tokenizer_path: str, out_dir: str) -> str:
    """Puts the tokenizer file into `out_dir` where `load_tokenizer(out_dir)` finds it: a
    WordPiece vocabulary as vocab.txt, a sentencepiece model under its own name. Returns
    the copy's path."""
    name = "vocab.txt" if tokenizer_path.endswith(".txt") else os.path.basename(tokenizer_path)
    target = os.path.join(out_dir, name)
    if os.path.abspath(tokenizer_path) != os.path.abspath(target):
        files.write_bytes(target, epath.Path(tokenizer_path).read_bytes())
    return target


def check_vocab_size(config_vocab_size: int, tokenizer: Tokenizer) -> None:
    """Raises if the model config's vocabulary does not match the tokenizer's."""
    if config_vocab_size != tokenizer.vocab_size:
        where = getattr(tokenizer, "path", "the tokenizer")
        raise ValueError(
            f"vocab_size={config_vocab_size} in config but the tokenizer at {where} has "
            f"{tokenizer.vocab_size} tokens; set --config.model.vocab_size={tokenizer.vocab_size}"
        )


_VOCAB_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_VOCAB_BELOW_CHARACTERS = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def train_sentencepiece(
    inputs: str | Sequence[str] | Sequence[corpus_sources.Source],
    output_path: str,
    *,
    vocab_size: int,
    model_type: str = "unigram",
    sample_bytes: int = DEFAULT_SAMPLE_BYTES,
    character_coverage: float = DEFAULT_CHARACTER_COVERAGE,
    lowercase: bool = False,
    seed: int = 0,
    on_invalid_utf8: str = "skip",
    sentence_boundary: str = "punctuation",
    text_field: str = "text",
    tfds_data_dir: str = "",
    num_threads: int = 2,
) -> SentencePieceTokenizer:
    """Trains a sentencepiece model on a corpus and writes it atomically to `output_path`.

    Training sentences come from `text_files` (same sources, UTF-8 policy and sentence
    splitting as shard building); one over MAX_TRAINING_SENTENCE_BYTES, which sentencepiece
    would skip, is cut into chunks of TRAINING_CHUNK_CHARS characters. They are those of a
    seeded sample of the documents of at most `sample_bytes` bytes (`sample_documents`),
    so large corpora fit in memory.
    `character_coverage` is the share of the corpus's characters that get their own piece
    (the rest become [UNK]): sentencepiece recommends 0.9995 for Chinese or Japanese, whose
    rare characters are many, and 1.0 for small alphabets. `lowercase` case-folds the text
    (sentencepiece's nmt_nfkc_cf rule) and keeps accents, unlike BERT's uncased models.
    """
    import sentencepiece as spm

    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type={model_type!r}; use one of {MODEL_TYPES}")
    if not output_path.endswith(".model"):
        raise ValueError(f"output_path={output_path!r} must end in '.model' so load_tokenizer recognizes it")
    sources = corpus_sources.resolve_inputs(inputs)
    if sample_bytes < 1:
        raise ValueError(f"sample_bytes={sample_bytes}; give the bytes of text to train on, e.g. 200000000")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} leaves no room beyond the {len(SPECIAL_TOKENS)} special tokens")
    if not 0 < character_coverage <= 1:
        raise ValueError(f"character_coverage={character_coverage}; use a fraction in (0, 1], e.g. 0.9995 for CJK")
    reading = dict(
        on_invalid_utf8=on_invalid_utf8,
        sentence_boundary=sentence_boundary,
        text_field=text_field,
        tfds_data_dir=tfds_data_dir,
        seed=seed,
    )
    sample = sample_documents(text_files.iter_documents(sources, **reading), sample_bytes, seed)
    if not sample.documents:
        raise ValueError(
            f"the corpus {inputs!r} has no text (after dropping invalid UTF-8 lines and bad records); "
            "give files with at least a few sentences"
        )
    logging.info(
        "sentencepiece trains on a seeded sample of %d bytes (%d of %d documents) of the corpus's %d bytes "
        "(sample_bytes=%d, seed=%d)",
        sample.bytes,
        len(sample.documents),
        sample.corpus_documents,
        sample.corpus_bytes,
        sample_bytes,
        seed,
    )
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_training_sentences(sample.documents),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
            input_sentence_size=0,  # all of the sample: it is already bounded
            max_sentence_length=MAX_TRAINING_SENTENCE_BYTES,
            num_threads=num_threads,
            pad_id=0,
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            pad_piece=PAD,
            unk_piece=UNK,
            # Control symbols never come out of encode(text), so "[MASK]" in raw text stays text.
            control_symbols=list(SPECIAL_TOKENS[2:]),
            minloglevel=2,
        )
    except RuntimeError as e:
        too_high = _VOCAB_TOO_HIGH.search(str(e))
        if too_high:
            raise ValueError(
                f"vocab_size={vocab_size} is more than the corpus {inputs!r} supports (at most "
                f"{too_high.group(2)} for model_type={model_type}); set vocab_size={too_high.group(2)} "
                "or lower, or add text"
            ) from None
        too_low = _VOCAB_BELOW_CHARACTERS.search(str(e))
        if too_low:
            raise ValueError(
                f"vocab_size={vocab_size} is less than the {too_low.group(2)} pieces that "
                f"character_coverage={character_coverage} needs for the characters of {inputs!r} (and "
                f"the special tokens); raise vocab_size or lower character_coverage (0.9995 for CJK)"
            ) from None
        raise
    files.write_bytes(output_path, model.getvalue())
    return SentencePieceTokenizer(output_path)


class Sample(NamedTuple):
    """Documents (each a list of sentences) drawn from a corpus, and what they were drawn from."""

    documents: list[list[str]]
    bytes: int
    corpus_documents: int
    corpus_bytes: int


def _document_key(seed: int, source: str, index: int) -> int:
    """A random key of a document, from its identity: the same whatever else the corpus holds."""
    digest = hashlib.blake2b(f"{seed}\0{source}\0{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def sample_documents(documents: Iterable[text_files.Document], max_bytes: int, seed: int) -> Sample:
    """A seeded uniform sample of documents, as many as fit in `max_bytes` bytes of UTF-8:
    those with the smallest random keys (`_document_key`) whose sizes sum to at most
    `max_bytes`, in corpus order (a corpus that fits is the whole corpus, as it reads). One
    pass, holding at most `max_bytes` of text: a heap evicts the largest key while over
    budget, and a document with a key above an evicted one is never kept."""
    heap: list[tuple[int, int, int, list[str]]] = []  # (-key, position, bytes, sentences): largest key on top
    kept_bytes = corpus_documents = corpus_bytes = 0
    evicted_key = None  # the smallest key evicted so far: keys from it up are out of the sample
    for position, document in enumerate(documents):
        size = sum(len(sentence.encode("utf-8")) for sentence in document.sentences)
        corpus_documents += 1
        corpus_bytes += size
        key = _document_key(seed, document.source, document.index)
        if evicted_key is not None and key >= evicted_key:
            continue
        heapq.heappush(heap, (-key, position, size, document.sentences))
        kept_bytes += size
        while kept_bytes > max_bytes:
            negative_key, _, evicted_size, _ = heapq.heappop(heap)
            kept_bytes -= evicted_size
            evicted_key = -negative_key
    kept = [sentences for _, _, _, sentences in sorted(heap, key=lambda entry: entry[1])]
    return Sample(kept, kept_bytes, corpus_documents, corpus_bytes)


def _training_sentences(documents: list[list[str]]) -> Iterator[str]:
    for sentences in documents:
        for sentence in sentences:
            if len(sentence.encode("utf-8")) <= MAX_TRAINING_SENTENCE_BYTES:
                yield sentence
            else:
                for start in range(0, len(sentence), TRAINING_CHUNK_CHARS):
                    yield sentence[start : start + TRAINING_CHUNK_CHARS]


def add_text_options(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Settings shared with prepare_data: how the text is read and what the vocabulary covers."""
    c.on_invalid_utf8 = "skip"  # lines and records without usable text: text_files.INVALID_UTF8_POLICIES
    c.text_field = "text"  # the text's JSON field, Parquet column or TFDS feature
    c.tfds_data_dir = ""  # where tfds: sources are prepared ("" = TFDS's default)
    c.sentence_boundary = "punctuation"  # where sentences end: punctuation | line
    c.character_coverage = DEFAULT_CHARACTER_COVERAGE  # share of characters with a piece; 0.9995 for CJK
    c.lowercase = False  # case-fold the text (accents are kept)
    return c


def tokenizer_config() -> ml_collections.ConfigDict:
    """The CLI's settings: `train_sentencepiece`'s arguments."""
    c = ml_collections.ConfigDict()
    c.inputs = ""  # comma-separated sources (globs, gs://, tfds:NAME:SPLIT), each optionally @WEIGHT
    c.output_path = ""  # the model to write, ending in .model
    c.vocab_size = ml_collections.config_dict.placeholder(int)  # pieces, special tokens included
    c.model_type = "unigram"  # MODEL_TYPES
    c.sample_bytes = DEFAULT_SAMPLE_BYTES  # bytes of text sampled to train on; bounds memory and time
    c.seed = 0  # seed of the document sample (and of a mixture's draws)
    return add_text_options(c)


def main(config, arguments) -> None:
    del arguments
    logging.set_verbosity(logging.INFO)
    # Shards and runs may depend on the model already there: never replace it.
    if epath.Path(config.output_path).exists():
        raise FileExistsError(
            f"--config.output_path={config.output_path} already exists; give another output_path, "
            "or move the existing file away first"
        )
    tokenizer = train_sentencepiece(**config.to_dict())
    print(f"wrote {config.output_path} ({tokenizer.vocab_size} pieces)")


def run() -> None:
    """The CLI (`python -m data_pipelines.tokenizer`)."""
    errors.run_tool(tokenizer_config(), main, required=("inputs", "output_path", "vocab_size"))


if __name__ == "__main__":
    run()
