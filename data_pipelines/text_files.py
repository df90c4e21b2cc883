"""Reading plain-text corpora: file patterns, UTF-8 policy, documents and sentences.

One reader is shared by tokenizer training and shard building, so both see exactly the
same text. The input format is plain text files:

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
  document. ``"file"``: a file is one document, cut at a paragraph boundary once it
  exceeds ``max_document_chars`` so that one long book still spreads over many shards.
* CRLF line endings are accepted (``\\r`` is stripped).
* Invalid UTF-8 policy: ``on_invalid_utf8="skip"`` (default) drops the offending line
  and counts it in ``TextStats.invalid_utf8_lines``; ``"error"`` raises a ValueError
  naming the file and line. Latin-1 files therefore lose their non-ASCII lines under
  "skip"; re-encode them to UTF-8 to keep those lines. Under either policy a file with a
  NUL byte (binary, UTF-16) or with over a quarter of its lines invalid is refused.
"""

import dataclasses
import glob
import os
import re
from typing import Iterator, Sequence

DOCUMENT_BOUNDARIES = ("blank_line", "file")
SENTENCE_BOUNDARIES = ("punctuation", "line")
INVALID_UTF8_POLICIES = ("skip", "error")
MAX_INVALID_UTF8_FRACTION = 0.25  # of a file's lines; above it the file is refused, not skimmed

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
    documents: int = 0
    sentences: int = 0

    def add(self, other: "TextStats") -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def expand_input_patterns(patterns: str | Sequence[str]) -> list[str]:
    """Paths for a comma-separated string or a list of paths / globs, in a stable order.

    Each pattern's matches are sorted; patterns keep their given order; duplicates are
    dropped. A pattern matching no file is an error, so a typo never silently shrinks the
    corpus.
    """
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    if not patterns:
        raise ValueError("no input files given; pass one or more paths or globs, e.g. 'corpus/*.txt'")
    paths: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern.strip())
        matches = sorted(m for m in glob.glob(pattern) if os.path.isfile(m))
        if not matches:
            raise FileNotFoundError(f"input pattern {pattern!r} matches no file; check the path or glob")
        paths.extend(m for m in matches if m not in paths)
    return paths


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
    with open(path, "rb") as f:
        for line_number, raw_line in enumerate(f, start=1):
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


def iter_paragraphs(path: str, on_invalid_utf8: str, stats: TextStats) -> Iterator[list[str]]:
    """Blank-line separated paragraphs of one file, each a list of its stripped lines."""
    lines: list[str] = []
    for line in iter_lines(path, on_invalid_utf8, stats):
        if line.strip():
            lines.append(line.strip())
        elif lines:
            yield lines
            lines = []
    if lines:
        yield lines


def paragraph_sentences(lines: list[str], sentence_boundary: str) -> list[str]:
    """The sentences of one paragraph: re-split at punctuation, or one per line."""
    if sentence_boundary == "line":
        return list(lines)
    return split_sentences(join_lines(lines))


def iter_documents(
    paths: Sequence[str],
    *,
    document_boundary: str = "blank_line",
    max_document_chars: int = 20_000,
    on_invalid_utf8: str = "skip",
    sentence_boundary: str = "punctuation",
    stats: TextStats | None = None,
) -> Iterator[list[str]]:
    """Documents (each a list of sentences) of the given files, in file order."""
    if document_boundary not in DOCUMENT_BOUNDARIES:
        raise ValueError(f"document_boundary={document_boundary!r}; use one of {DOCUMENT_BOUNDARIES}")
    if sentence_boundary not in SENTENCE_BOUNDARIES:
        raise ValueError(f"sentence_boundary={sentence_boundary!r}; use one of {SENTENCE_BOUNDARIES}")
    stats = stats if stats is not None else TextStats()

    def finish(paragraphs: list[list[str]]) -> list[str]:
        sentences = [s for p in paragraphs for s in paragraph_sentences(p, sentence_boundary)]
        stats.documents += 1
        stats.sentences += len(sentences)
        return sentences

    for path in paths:
        paragraphs: list[list[str]] = []
        chars = 0
        for paragraph in iter_paragraphs(path, on_invalid_utf8, stats):
            paragraphs.append(paragraph)
            chars += len(join_lines(paragraph))
            if document_boundary == "blank_line" or chars >= max_document_chars:
                yield finish(paragraphs)
                paragraphs, chars = [], 0
        if paragraphs:
            yield finish(paragraphs)
