"""CoNLL-2003-format files: one word per line, whitespace-separated columns with the tag in
one of them (CoNLL-2003: `word POS chunk NER`, the last), a blank line between sentences;
`-DOCSTART-` lines separate documents and are not words."""

from __future__ import annotations

import dataclasses
import os

DOCUMENT_SEPARATOR = "-DOCSTART-"


@dataclasses.dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    lines: tuple[int, ...]  # 1-based line of each word in its file (for error messages)


def read_conll(path: str, label_column: int) -> list[Sentence]:
    """Sentences of a CoNLL file; a malformed line is an error naming file and line."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; set the file in the config")
    sentences, words, tags, lines = [], [], [], []

    def close_sentence():
        if words:
            sentences.append(Sentence(tuple(words), tuple(tags), tuple(lines)))
            words.clear(), tags.clear(), lines.clear()

    needed = label_column + 1 if label_column >= 0 else max(2, -label_column)
    width = None  # the file's column count, from its first token line: a short line reads the wrong column
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            columns = line.split()
            if not columns:
                close_sentence()
                continue
            if columns[0] == DOCUMENT_SEPARATOR:
                close_sentence()
                continue
            if len(columns) < needed:
                raise ValueError(
                    f"{path}:{line_number}: expected `word ... tag` with at least {needed} "
                    f"whitespace-separated columns, found {len(columns)} ({line.strip()!r}); "
                    "every word needs its tag (set --config.label_column if the tag is elsewhere)"
                )
            if width is None:
                width, width_line = len(columns), line_number
            elif len(columns) != width:
                raise ValueError(
                    f"{path}:{line_number}: {len(columns)} columns ({line.strip()!r}) where line {width_line} "
                    f"has {width}; every token line of a CoNLL file has the same columns (a missing tag?)"
                )
            words.append(columns[0])
            tags.append(columns[label_column])
            lines.append(line_number)
    close_sentence()
    if not sentences:
        raise ValueError(
            f"{path} holds no sentences; expected CoNLL lines `word ... tag` with blank lines between sentences"
        )
    return sentences
