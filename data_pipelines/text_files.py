"""Corpus text -> documents and sentences: UTF-8 policy, bad records, mixtures.

One reader is shared by tokenizer training and shard building, so both see exactly the
same text. `corpus_sources` finds the inputs (local or gs:// globs, TFDS splits, mixture
weights) and takes the text out of each format; here a plain text file, and each record
of the others (a JSON line, a Parquet row, a TFDS example), is read as lines:

* Lines are joined into paragraphs; a blank line ends a paragraph. Hard-wrapped text
  (Project Gutenberg, ~70 characters a line) and one-sentence-per-line text (ELECTRA's
  own format) both work, because sentences are re-split from the joined paragraph
  (``sentence_boundary="punctuation"``). Lines join with a space, or with nothing between
  two characters of an unspaced script (Chinese, Japanese), which a wrap must not split.
  ``sentence_boundary="line"`` takes every line as a sentence instead, as the original
  ``build_pretraining_dataset.py`` does.
* Sentences end at . ! ? followed by whitespace (after an optional closing quote or
  bracket), and at the CJK marks 。！？；｡ with or without whitespace after them.
* ``document_boundary="blank_line"`` (ELECTRA's convention): every paragraph is a
  document. ``"file"``: a file (or a record) is one document, cut at a paragraph boundary
  once it exceeds ``max_document_chars`` so that one long book still spreads over many
  shards. So a JSONL corpus reads as the same documents as a .txt file holding its
  records' texts separated by blank lines.
* CRLF line endings are accepted (``\\r`` is stripped).
* Invalid UTF-8 policy: ``on_invalid_utf8="skip"`` (default) drops the offending line
  and counts it in ``TextStats.invalid_utf8_lines``; ``"error"`` raises a ValueError
  naming the file and line. Latin-1 files therefore lose their non-ASCII lines under
  "skip"; re-encode them to UTF-8 to keep those lines. Under either policy a file with a
  NUL byte (binary, UTF-16) or with over a quarter of its lines invalid is refused.
* Bad records (a line that is not a JSON object, a missing field, a non-string or null
  text, invalid UTF-8) follow the same policy: skipped and counted in
  ``TextStats.bad_records`` / ``bad_record_bytes`` (shard building counts their bytes as
  lost), or under ``"error"`` a ValueError naming file:line; an input with over a quarter
  of its records bad is refused under either (a wrong ``text_field``, a file that is not
  JSON Lines). A Parquet file or TFDS dataset without the column / feature is refused at once.
* Each document carries its identity: the input it came from and its index there.
* A mixture (sources with ``@WEIGHT``) draws each next document from a source chosen with
  probability proportional to its weight, by a seeded RNG; it ends when a chosen source has
  no document left, and the other sources' documents not drawn are counted in
  ``TextStats.unused_documents``. Weights are shares of documents, not of bytes.
"""

import dataclasses
import itertools
import random
import re
from typing import Iterator, NamedTuple, Sequence

from data_pipelines import corpus_sources

DOCUMENT_BOUNDARIES = ("blank_line", "file")
SENTENCE_BOUNDARIES = ("punctuation", "line")
INVALID_UTF8_POLICIES = ("skip", "error")
MAX_INVALID_UTF8_FRACTION = 0.25  # of a file's lines or records; above it the file is refused, not skimmed

# A sentence ends at . ! or ? (optionally followed by a closing quote or bracket) and
# whitespace. Crude next to a trained splitter, but packing only needs plausible cut
# points, and it keeps the pipeline free of extra dependencies.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'\)\]])\s+")
# CJK sentence-final marks (ideographic and half-width full stop, full-width ! ? ;) end a
# sentence whether or not a space follows, after any closing quotes or brackets.
_CJK_SENTENCE_END = re.compile(r"[。｡！？；]+[”’」』）》】〕\"')\]]*\s*")
# Characters of scripts written without spaces between words: CJK ideographs, kana, CJK
# punctuation and full-width forms.
_UNSPACED_RANGES = (
    (0x3000, 0x30FF),  # CJK punctuation, hiragana, katakana
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0xFF00, 0xFFEF),  # full-width and half-width forms
    (0x20000, 0x2FA1F),
)


@dataclasses.dataclass
class TextStats:
    """Counters filled while reading; summed over workers for the build summary."""

    lines: int = 0
    invalid_utf8_lines: int = 0
    invalid_utf8_bytes: int = 0  # not whitespace, of the skipped lines: at most their characters
    bad_records: int = 0  # JSON lines, Parquet rows, TFDS examples without usable text
    bad_record_bytes: int = 0  # not whitespace, of the bad records
    documents: int = 0
    sentences: int = 0
    unused_documents: int = 0  # of a mixture's sources, left when it ended

    def add(self, other: "TextStats") -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


class Document(NamedTuple):
    """A document's sentences and its identity: the input it came from (a path or a TFDS
    spec) and its index among that input's documents."""

    source: str
    index: int
    sentences: list[str]


def is_unspaced_char(char: str) -> bool:
    """Whether `char` belongs to a script written without spaces (Chinese, Japanese)."""
    code = ord(char)
    return any(low <= code <= high for low, high in _UNSPACED_RANGES)


def split_sentences(paragraph: str) -> list[str]:
    """Splits one paragraph into sentences at sentence-final punctuation (Latin and CJK)."""
    sentences = []
    for part in _SENTENCE_BREAK.split(paragraph):
        start = 0
        for end_mark in _CJK_SENTENCE_END.finditer(part):
            sentences.append(part[start : end_mark.end()].rstrip())
            start = end_mark.end()
        sentences.append(part[start:])
    return [s for s in sentences if s.strip()]


def join_lines(lines: Sequence[str]) -> str:
    """Stripped lines as one paragraph: a space between them, none between two characters
    of an unspaced script (a hard wrap inside a Chinese sentence is not a word break)."""
    paragraph = ""
    for line in lines:
        if paragraph and not (is_unspaced_char(paragraph[-1]) and is_unspaced_char(line[0])):
            paragraph += " "
        paragraph += line
    return paragraph


def non_whitespace_chars(text: str) -> int:
    """Characters of `text` that are not whitespace: the unit of the build's loss accounting."""
    return len(text) - sum(map(str.isspace, text))


def iter_lines(path: str, on_invalid_utf8: str, stats: TextStats) -> Iterator[str]:
    """Decoded lines of one file without line endings, applying the UTF-8 policy. A file
    that is not UTF-8 text (a NUL byte, or more than MAX_INVALID_UTF8_FRACTION of its
    lines invalid) is an error under either policy: skipping would keep binary junk or
    drop most of the file."""
    if on_invalid_utf8 not in INVALID_UTF8_POLICIES:
        raise ValueError(f"on_invalid_utf8={on_invalid_utf8!r}; use one of {INVALID_UTF8_POLICIES}")
    num_lines = num_invalid = 0
    for line_number, raw_line in enumerate(corpus_sources.iter_raw_lines(path), start=1):
        stats.lines += 1
        num_lines += 1
        if b"\0" in raw_line:
            raise ValueError(
                f"{path}:{line_number}: a NUL byte, so not UTF-8 text (a binary or "
                "UTF-16 file?); pass text files only, re-encoded to UTF-8"
            )
        try:
            yield raw_line.rstrip(b"\r\n").decode("utf-8")
        except UnicodeDecodeError as e:
            if on_invalid_utf8 == "error":
                raise ValueError(
                    f"{path}:{line_number}: invalid UTF-8 ({e.reason} at byte {e.start}); "
                    "re-encode the file to UTF-8 or use on_invalid_utf8='skip'"
                ) from None
            stats.invalid_utf8_lines += 1
            stats.invalid_utf8_bytes += len(b"".join(raw_line.split()))  # not whitespace
            num_invalid += 1
    if num_invalid > MAX_INVALID_UTF8_FRACTION * num_lines:
        raise ValueError(
            f"{path}: {num_invalid} of {num_lines} lines are not valid UTF-8 (more than "
            f"{MAX_INVALID_UTF8_FRACTION:.0%}): a binary file or text in another encoding; "
            "re-encode it to UTF-8 (e.g. iconv -f latin1 -t utf-8) or leave it out"
        )


def iter_records_text(
    path: str, text_field: str, tfds_data_dir: str, on_invalid_utf8: str, stats: TextStats
) -> Iterator[list[str]]:
    """The lines of each usable record of a JSON Lines, Parquet or TFDS input; bad records
    are counted (or, under on_invalid_utf8="error", raised naming where they are)."""
    num_records = num_bad = 0
    first_bad = None
    for record in corpus_sources.iter_records(path, text_field, tfds_data_dir):
        num_records += 1
        if record.problem is None:
            yield [line.rstrip("\r") for line in record.text.split("\n")]
            continue
        if on_invalid_utf8 == "error":
            raise ValueError(f"{record.where}: {record.problem} (or on_invalid_utf8='skip' to count and skip it)")
        stats.bad_records += 1
        stats.bad_record_bytes += record.size
        num_bad += 1
        first_bad = first_bad or record
    if num_bad > MAX_INVALID_UTF8_FRACTION * num_records:
        raise ValueError(
            f"{path}: {num_bad} of {num_records} records have no usable text (more than "
            f"{MAX_INVALID_UTF8_FRACTION:.0%}); the first, {first_bad.where}: {first_bad.problem}"
        )


def iter_texts(path: str, text_field: str, tfds_data_dir: str, on_invalid_utf8: str, stats: TextStats):
    """The texts of one input, each an iterable of lines: a plain text file is one text;
    each record of the other formats is one."""
    if corpus_sources.record_format(path) is None:
        return [iter_lines(path, on_invalid_utf8, stats)]
    return iter_records_text(path, text_field, tfds_data_dir, on_invalid_utf8, stats)


def iter_paragraphs(lines) -> Iterator[list[str]]:
    """Blank-line separated paragraphs of some lines, each a list of its stripped lines."""
    paragraph: list[str] = []
    for line in lines:
        if line.strip():
            paragraph.append(line.strip())
        elif paragraph:
            yield paragraph
            paragraph = []
    if paragraph:
        yield paragraph


def paragraph_sentences(lines: list[str], sentence_boundary: str) -> list[str]:
    """The sentences of one paragraph: re-split at punctuation, or one per line."""
    if sentence_boundary == "line":
        return list(lines)
    return split_sentences(join_lines(lines))


def _input_documents(path: str, document_boundary: str, max_document_chars: int, reading: dict) -> Iterator[list]:
    """The documents of one input, each a list of paragraphs (lists of lines)."""
    for lines in iter_texts(path, **reading):
        paragraphs: list[list[str]] = []
        chars = 0
        for paragraph in iter_paragraphs(lines):
            paragraphs.append(paragraph)
            chars += len(join_lines(paragraph))
            if document_boundary == "blank_line" or chars >= max_document_chars:
                yield paragraphs
                paragraphs, chars = [], 0
        if paragraphs:
            yield paragraphs


def _source_documents(source: corpus_sources.Source, document_boundary, max_document_chars, reading, finish):
    for path in source.paths:
        for index, paragraphs in enumerate(_input_documents(path, document_boundary, max_document_chars, reading)):
            yield finish(path, index, paragraphs)


def mixture(streams: Sequence[Iterator], weights: Sequence[float], seed: int, stats: TextStats) -> Iterator:
    """Items of `streams`, each next one from a stream drawn with probability proportional
    to its weight (a seeded RNG); ends when a drawn stream is empty, counting the items
    left in the others in `stats.unused_documents`."""
    rng = random.Random(f"mixture-{seed}")
    indices = range(len(streams))
    while True:
        drawn = rng.choices(indices, weights)[0]
        item = next(streams[drawn], None)
        if item is None:
            break
        yield item
    stats.unused_documents += sum(1 for stream in streams for _ in stream)


def iter_documents(
    sources: Sequence[corpus_sources.Source],
    *,
    document_boundary: str = "blank_line",
    max_document_chars: int = 20_000,
    on_invalid_utf8: str = "skip",
    sentence_boundary: str = "punctuation",
    text_field: str = "text",
    tfds_data_dir: str = "",
    seed: int = 0,
    stats: TextStats | None = None,
) -> Iterator[Document]:
    """Documents of the sources (`corpus_sources.resolve_inputs`) in input order, or
    sampled as a mixture (seeded by `seed`) when the sources have weights."""
    if document_boundary not in DOCUMENT_BOUNDARIES:
        raise ValueError(f"document_boundary={document_boundary!r}; use one of {DOCUMENT_BOUNDARIES}")
    if sentence_boundary not in SENTENCE_BOUNDARIES:
        raise ValueError(f"sentence_boundary={sentence_boundary!r}; use one of {SENTENCE_BOUNDARIES}")
    if on_invalid_utf8 not in INVALID_UTF8_POLICIES:
        raise ValueError(f"on_invalid_utf8={on_invalid_utf8!r}; use one of {INVALID_UTF8_POLICIES}")
    stats = stats if stats is not None else TextStats()
    reading = dict(text_field=text_field, tfds_data_dir=tfds_data_dir, on_invalid_utf8=on_invalid_utf8, stats=stats)

    def finish(path: str, index: int, paragraphs: list[list[str]]) -> Document:
        return Document(path, index, [s for p in paragraphs for s in paragraph_sentences(p, sentence_boundary)])

    streams = [_source_documents(s, document_boundary, max_document_chars, reading, finish) for s in sources]
    weights = [source.weight for source in sources]
    documents = itertools.chain(*streams) if None in weights else mixture(streams, weights, seed, stats)
    for document in documents:
        stats.documents += 1
        stats.sentences += len(document.sentences)
        yield document
