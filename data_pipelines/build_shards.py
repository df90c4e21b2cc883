"""A corpus -> TFRecord shards of packed ELECTRA pretraining examples.

Inputs are text files, JSON Lines, Parquet or TFDS splits, local or gs://, optionally a
weighted mixture (`corpus_sources`); all read as documents by `text_files`.

Packing follows google-research/electra `build_pretraining_dataset.py` (with its March
2020 segment-assignment fix): sentences of a document accumulate until they reach the
target length, then become `[CLS] A [SEP] B [SEP]` padded to `max_seq_length`; with
probability `single_segment_prob` (0.1) the example has only segment A, and with
probability `random_length_prob` (0.05) the next target length is random in
[5, max_seq_length]. One change: ELECTRA drops the tokens of the sentence that crosses
the target which do not fit (11.9% of the embedded default corpus, and all but the first
`max_seq_length` tokens of a Chinese paragraph that its English splitter saw as one
sentence). Here that sentence is cut at the target and its rest opens the next example,
so every token reaches a shard. What the vocabulary cannot spell ([UNK]) or the UTF-8
policy skips is counted, and the build fails above `max_lost_fraction` (1%).

Each record holds int64 features `input_ids`, `input_mask`, `segment_ids` (ELECTRA's
names; the reader renames them) and `word_starts` (1 where a token begins a word, from
`words.WordBoundaries`: the tokenizer's marks, or jieba for Chinese; for whole-word
masking), all of length `max_seq_length`.

Determinism, parallelism, resume:
* document i (in input order, or a mixture's draw order) goes to shard slot `i % num_slots`; each slot has its own
  RNG seeded from (seed, slot); so the bytes of every shard depend only on the inputs,
  tokenizer and settings, never on `num_processes` or on which shards were built before.
* shards are written under `<name>.tmp` and renamed when complete, then a
  `<name>.stats.json` sidecar marks them done; a rerun skips done shards and rebuilds the
  others. `build_config.json` records the settings, the inputs' size and mtime and the
  tokenizer's hash; a rerun with different ones into the same directory is refused.
* invalid UTF-8 lines and bad records (no `text_field`, not a string, not JSON) are
  skipped and counted as lost (or rejected, `on_invalid_utf8="error"`).

CLI:
    python -m data_pipelines.build_shards --config.inputs='corpus/*.txt' --config.tokenizer_path=spm.model \\
        --config.output_dir=shards --config.max_seq_length=128 --config.num_shards=16
    python -m data_pipelines.build_shards --config.inputs='c4/*.json.gz@0.8,books/*.txt@0.2' \\
        --config.text_field=text --config.tokenizer_path=spm.model --config.output_dir=shards
"""

import dataclasses
import json
import multiprocessing
import os
import random
import time
from typing import Sequence

import ml_collections
from absl import logging

from data_pipelines import corpus_sources, errors, files, text_files, words
from data_pipelines import tokenizer as tokenizer_lib

BUILD_CONFIG_FILE = "build_config.json"
SUMMARY_FILE = "summary.json"
# Counted per shard, in its stats sidecar: characters are non-whitespace ones of the
# sentences read; content_tokens are the tokens that reached the shard's examples.
SHARD_STATS = (
    "documents",
    "sentences",
    "characters",
    "tokens",
    "words",
    "unk_tokens",
    "unk_characters",
    "examples",
    "real_tokens",
    "content_tokens",
)
DEFAULT_MAX_LOST_FRACTION = 0.01
# Settings added since directories were first built, at the value that reproduces the older
# builds: a record without the key matches that value (so a resume is not refused for it).
ADDED_SETTINGS = {"text_field": "text", "tokenizer_sample_bytes": tokenizer_lib.DEFAULT_SAMPLE_BYTES}
# Above this many pieces per word, word starts from the pieces' own marks are whole
# sentences: text without spaces, which whole-word masking needs a segmenter for.
MAX_PIECES_PER_WORD = 3.0


class DataLossError(ValueError):
    """More of the corpus than allowed did not reach the shards (which are kept)."""


@dataclasses.dataclass(frozen=True)
class PackingConfig:
    """Everything that decides the bytes of the shards (recorded in build_config.json)."""

    max_seq_length: int = 128
    seed: int = 0
    single_segment_prob: float = 0.1  # ELECTRA: "small chance to only have one segment"
    random_length_prob: float = 0.05  # ELECTRA: random target length in [5, max_seq_length]
    document_boundary: str = "blank_line"
    sentence_boundary: str = "punctuation"
    word_segmenter: str = "pieces"
    max_document_chars: int = 20_000
    on_invalid_utf8: str = "skip"
    text_field: str = "text"

    def reading(self, tfds_data_dir: str = "") -> dict:
        """`text_files.iter_documents`' options."""
        return dict(
            document_boundary=self.document_boundary,
            max_document_chars=self.max_document_chars,
            on_invalid_utf8=self.on_invalid_utf8,
            sentence_boundary=self.sentence_boundary,
            text_field=self.text_field,
            tfds_data_dir=tfds_data_dir,
            seed=self.seed,
        )


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """One output shard: which documents (slot of num_slots) go to which file."""

    sources: tuple[corpus_sources.Source, ...]
    tfds_data_dir: str
    tokenizer_path: str
    packing: PackingConfig
    slot: int
    num_slots: int
    output_path: str


class ExampleBuilder:
    """ELECTRA's sentence packer, lossless: `add_sentence` / `end_document` return finished
    examples. Sentences fill an example to its target length; the one that crosses it is
    cut there and its rest opens the next example (ELECTRA drops that rest)."""

    def __init__(self, tokenizer: tokenizer_lib.Tokenizer, packing: PackingConfig, rng: random.Random):
        self._tokenizer = tokenizer
        self._packing = packing
        self._rng = rng
        self._max_length = packing.max_seq_length
        self._target_length = packing.max_seq_length
        self._sentences: list[tuple[list[int], list[int]]] = []  # (token ids, word starts)
        self._current_length = 0

    def add_sentence(self, token_ids: list[int], word_starts: list[int]) -> list[dict[str, list[int]]]:
        examples, start = [], 0
        while start < len(token_ids):
            room = self._target_length - 3 - self._current_length  # [CLS] A [SEP] B [SEP]
            end = start + room
            self._sentences.append((token_ids[start:end], word_starts[start:end]))
            self._current_length += len(self._sentences[-1][0])
            if self._current_length >= self._target_length - 3:
                examples.append(self._create_example())
            start = end
        return examples

    def end_document(self) -> list[dict[str, list[int]]]:
        return [self._create_example()] if self._current_length else []

    def _create_example(self) -> dict[str, list[int]]:
        if self._rng.random() < self._packing.single_segment_prob:
            first_target = 100_000  # everything goes to segment A, as in classification inputs
        else:
            first_target = (self._target_length - 3) // 2  # -3 for [CLS] and two [SEP]
        first_segment: tuple[list[int], list[int]] = ([], [])
        second_segment: tuple[list[int], list[int]] = ([], [])
        for ids, starts in self._sentences:
            # A sentence joins segment A if A is empty, if it fits, or (half the time) if
            # it overflows A while B is still empty; otherwise it goes to B.
            first_length = len(first_segment[0])
            if (
                not first_length
                or first_length + len(ids) < first_target
                or (not second_segment[0] and first_length < first_target and self._rng.random() < 0.5)
            ):
                segment = first_segment
            else:
                segment = second_segment
            segment[0].extend(ids)
            segment[1].extend(starts)
        self._sentences, self._current_length = [], 0
        if self._rng.random() < self._packing.random_length_prob:
            self._target_length = self._rng.randint(5, self._max_length)
        else:
            self._target_length = self._max_length
        return self._make_example(first_segment, second_segment)

    def _make_example(self, first_segment, second_segment) -> dict[str, list[int]]:
        (first_ids, first_starts), (second_ids, second_starts) = first_segment, second_segment
        input_ids = [self._tokenizer.cls_id, *first_ids, self._tokenizer.sep_id]
        word_starts = [1, *first_starts, 1]
        segment_ids = [0] * len(input_ids)
        if second_ids:
            input_ids += [*second_ids, self._tokenizer.sep_id]
            word_starts += [*second_starts, 1]
            segment_ids += [1] * (len(second_ids) + 1)
        num_padding = self._max_length - len(input_ids)
        return {
            "input_ids": input_ids + [self._tokenizer.pad_id] * num_padding,
            "input_mask": [1] * len(input_ids) + [0] * num_padding,
            "segment_ids": segment_ids + [0] * num_padding,
            "word_starts": word_starts + [0] * num_padding,
        }


def shard_file_names(num_shards: int, num_eval_shards: int) -> list[str]:
    """File names by slot: train shards first, then the held-out eval shards."""
    train = [f"train-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    held_out = [f"eval-{i:05d}-of-{num_eval_shards:05d}.tfrecord" for i in range(num_eval_shards)]
    return train + held_out


def _serialize(example: dict[str, list[int]]) -> bytes:
    import tensorflow as tf

    features = {name: tf.train.Feature(int64_list=tf.train.Int64List(value=values)) for name, values in example.items()}
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def build_one_shard(job: ShardJob) -> dict[str, int]:
    """Writes one shard (temp name, then rename) and its stats sidecar; returns the stats."""
    import tensorflow as tf

    tokenizer = tokenizer_lib.load_tokenizer(job.tokenizer_path)
    packing = job.packing
    boundaries = words.WordBoundaries(tokenizer, packing.word_segmenter)
    builder = ExampleBuilder(tokenizer, packing, random.Random(packing.seed * 1_000_003 + job.slot))
    stats = dict.fromkeys(SHARD_STATS, 0)
    documents = text_files.iter_documents(job.sources, **packing.reading(job.tfds_data_dir))
    with files.temporary_path(job.output_path) as temp_path, tf.io.TFRecordWriter(temp_path) as writer:
        for document_index, document in enumerate(documents):
            if document_index % job.num_slots != job.slot:
                continue
            stats["documents"] += 1
            examples = []
            for sentence in document.sentences:
                token_ids, word_starts = boundaries.encode(sentence)
                stats["sentences"] += 1
                stats["characters"] += text_files.non_whitespace_chars(sentence)
                stats["tokens"] += len(token_ids)
                stats["words"] += sum(word_starts)
                if tokenizer.unk_id in token_ids:
                    stats["unk_tokens"] += token_ids.count(tokenizer.unk_id)
                    stats["unk_characters"] += _unk_characters(tokenizer, sentence)
                examples += builder.add_sentence(token_ids, word_starts)
            examples += builder.end_document()
            for example in examples:
                writer.write(_serialize(example))
                stats["examples"] += 1
                num_real = sum(example["input_mask"])
                num_specials = 3 if example["segment_ids"][num_real - 1] else 2
                stats["real_tokens"] += num_real
                stats["content_tokens"] += num_real - num_specials
    files.write_json(job.output_path + ".stats.json", stats, sort_keys=True)
    return stats


def _unk_characters(tokenizer: tokenizer_lib.Tokenizer, sentence: str) -> int:
    """Non-whitespace characters of `sentence` that the tokenizer turned into [UNK]."""
    ids, offsets = tokenizer.encode_with_offsets(sentence)
    return sum(
        text_files.non_whitespace_chars(sentence[start:end])
        for token_id, (start, end) in zip(ids, offsets)
        if token_id == tokenizer.unk_id
    )


def changed_keys(previous: dict, current: dict) -> list[str]:
    """The keys whose values differ between two recorded settings (either side missing
    counts, except a key of ADDED_SETTINGS that `previous` predates, at its old value)."""
    previous = {**{k: v for k, v in ADDED_SETTINGS.items() if k in current}, **previous}
    return sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))


def _check_build_config(output_dir: str, build_config: dict, unfingerprinted: dict) -> None:
    """Refuses to resume into a directory built with other settings or from inputs or a
    tokenizer that changed since (would mix shards, or keep shards of the old text).
    `unfingerprinted` is `build_config` as versions before the fingerprints recorded it
    (paths only): a directory they built that matches it is reused, with a warning."""
    path = os.path.join(output_dir, BUILD_CONFIG_FILE)
    if os.path.exists(path):
        previous = files.read_json(path)
        if isinstance(previous.get("tokenizer"), str) and not changed_keys(previous, unfingerprinted):
            logging.warning(
                "%s was built by an older version that recorded no fingerprints of its inputs: "
                "reusing its shards unchecked, and recording the fingerprints from now on",
                output_dir,
            )
            files.write_json(path, build_config, sort_keys=True)
            return
        changed = changed_keys(previous, build_config)
        if "inputs" in changed and all(isinstance(f, dict) for f in previous.get("inputs", [])):
            names = files.changed_fingerprints(previous["inputs"], build_config["inputs"])
            changed[changed.index("inputs")] = f"inputs: {', '.join(names)}"
        if changed:
            raise ValueError(
                f"{output_dir} holds shards built with different settings or inputs ({'; '.join(changed)} "
                f"changed, against its {BUILD_CONFIG_FILE}); build into a new output_dir, or move the old one away"
            )
    else:
        files.write_json(path, build_config, sort_keys=True)


def check_documents(
    sources: Sequence[corpus_sources.Source], num_slots: int, *, enough: bool = False, **reading
) -> text_files.TextStats:
    """The text statistics of the corpus (`reading`: iter_documents' options); raises if it
    has no text or fewer documents than the `num_slots` shards, one per shard at least.
    With `enough`, reading stops once every shard has a document (a check before a
    tokenizer is trained, not a count)."""
    stats = text_files.TextStats()
    for _ in text_files.iter_documents(sources, stats=stats, **reading):
        if enough and stats.documents >= num_slots:
            return stats
    if stats.documents == 0:
        raise ValueError(
            f"the corpus {', '.join(corpus_sources.all_paths(sources))} has no text (after dropping "
            f"{stats.invalid_utf8_lines} invalid UTF-8 lines and {stats.bad_records} bad records); "
            "give non-empty inputs"
        )
    if stats.documents < num_slots:
        raise ValueError(
            f"the corpus has {stats.documents} documents, fewer than the {num_slots} shards "
            "asked for; lower num_shards / num_eval_shards"
            + (" or set document_boundary=blank_line" if reading.get("document_boundary") == "file" else "")
        )
    return stats


def build_shards(
    inputs: str | Sequence[str] | Sequence[corpus_sources.Source],
    output_dir: str,
    *,
    tokenizer_path: str,
    max_seq_length: int = 128,
    num_shards: int = 8,
    num_eval_shards: int = 0,
    seed: int = 0,
    num_processes: int = 1,
    document_boundary: str = "blank_line",
    sentence_boundary: str = "punctuation",
    word_segmenter: str = "pieces",
    max_document_chars: int = 20_000,
    on_invalid_utf8: str = "skip",
    text_field: str = "text",
    tfds_data_dir: str = "",
    single_segment_prob: float = 0.1,
    random_length_prob: float = 0.05,
    max_lost_fraction: float = DEFAULT_MAX_LOST_FRACTION,
    show_progress: bool = True,
) -> dict:
    """Builds (or finishes building) the shards in `output_dir`; returns the summary dict.

    The summary (also written to `output_dir/summary.json`) counts documents, sentences,
    characters (not whitespace), tokens (tokenizer output) and words, examples,
    tokens_in_shards, padding_fraction, and what was lost: truncated_tokens (0: the packer
    cuts, never drops), unk_tokens / unk_characters (text the vocabulary cannot spell),
    invalid_utf8_lines / _bytes, bad_records / _bytes (JSON lines, Parquet rows or TFDS
    examples without usable text), and a mixture's unused_documents (left out by design, not
    lost). `lost_fraction` sums the lost tokens' share of the tokens and the lost
    characters' share of the text; above `max_lost_fraction` the build raises
    DataLossError after writing the summary, and a rerun with a higher threshold reuses the
    finished shards.
    """
    if max_seq_length < 5:
        raise ValueError(f"max_seq_length={max_seq_length} is too short for [CLS] A [SEP] B [SEP]; use >= 5")
    if num_shards < 1 or num_eval_shards < 0:
        raise ValueError(f"num_shards={num_shards}, num_eval_shards={num_eval_shards}; need >= 1 and >= 0")
    if not 0 <= max_lost_fraction <= 1:
        raise ValueError(f"max_lost_fraction={max_lost_fraction}; use a fraction in [0, 1]")
    sources = corpus_sources.resolve_inputs(inputs)
    # Fail before any output if the tokenizer or the segmenter is unusable.
    words.WordBoundaries(tokenizer_lib.load_tokenizer(tokenizer_path), word_segmenter)
    packing = PackingConfig(
        max_seq_length=max_seq_length,
        seed=seed,
        single_segment_prob=single_segment_prob,
        random_length_prob=random_length_prob,
        document_boundary=document_boundary,
        sentence_boundary=sentence_boundary,
        word_segmenter=word_segmenter,
        max_document_chars=max_document_chars,
        on_invalid_utf8=on_invalid_utf8,
        text_field=text_field,
    )
    # A cheap pass without tokenization: validates the text (UTF-8 policy, emptiness)
    # before anything is written.
    num_slots = num_shards + num_eval_shards
    text_stats = check_documents(sources, num_slots, **packing.reading(tfds_data_dir))
    if text_stats.invalid_utf8_lines:
        logging.warning("skipped %d lines of invalid UTF-8 in %s", text_stats.invalid_utf8_lines, inputs)
    if text_stats.bad_records:
        logging.warning("skipped %d records without usable text in %s", text_stats.bad_records, inputs)
    if text_stats.unused_documents:
        logging.warning(
            "the mixture %s ended when a source ran out: %d documents of the other sources were not drawn",
            inputs,
            text_stats.unused_documents,
        )

    os.makedirs(output_dir, exist_ok=True)
    build_config = {
        **dataclasses.asdict(packing),
        # Size and mtime of each text file, the tokenizer's content: shards of edited text or
        # of a replaced tokenizer are never reused.
        "inputs": corpus_sources.fingerprints(sources, output_dir, tfds_data_dir),
        "num_shards": num_shards,
        "num_eval_shards": num_eval_shards,
        "tokenizer": {"path": os.path.relpath(tokenizer_path, output_dir), "sha256": files.sha256(tokenizer_path)},
    }
    unfingerprinted = {
        **build_config,
        "inputs": corpus_sources.all_paths(sources),
        "tokenizer": os.path.abspath(tokenizer_path),
    }
    _check_build_config(output_dir, build_config, unfingerprinted)
    jobs, done_stats = [], []
    for slot, name in enumerate(shard_file_names(num_shards, num_eval_shards)):
        output_path = os.path.join(output_dir, name)
        if os.path.exists(output_path) and os.path.exists(output_path + ".stats.json"):
            done_stats.append(files.read_json(output_path + ".stats.json"))
        else:
            jobs.append(ShardJob(sources, tfds_data_dir, tokenizer_path, packing, slot, num_slots, output_path))

    start = time.perf_counter()
    new_stats = list(_run_jobs(jobs, num_processes, show_progress))
    elapsed = time.perf_counter() - start
    summary = _summarize(done_stats + new_stats, text_stats, max_seq_length)
    new_examples = sum(s["examples"] for s in new_stats)
    summary.update(
        shards_built=len(jobs),
        shards_skipped=len(done_stats),
        seconds=round(elapsed, 3),
        examples_per_second=round(new_examples / elapsed, 1) if jobs and elapsed > 0 else None,
    )
    files.write_json(os.path.join(output_dir, SUMMARY_FILE), summary, sort_keys=True)
    logging.info("shards in %s: %s", output_dir, summary)
    if word_segmenter == "pieces" and summary["pieces_per_word"] > MAX_PIECES_PER_WORD:
        logging.warning(
            "a word averages %.1f pieces by the tokenizer's marks: text without spaces? "
            "Whole-word masking would mask whole sentences; build with word_segmenter=jieba "
            "for Chinese",
            summary["pieces_per_word"],
        )
    if summary["lost_fraction"] > max_lost_fraction:
        raise DataLossError(
            f"{summary['lost_fraction']:.2%} of the corpus did not reach the shards (more than "
            f"max_lost_fraction={max_lost_fraction}): {summary['unk_characters']} characters became "
            f"[UNK], {summary['invalid_utf8_lines']} lines were invalid UTF-8, {summary['bad_records']} "
            "records had no usable text, "
            f"{summary['truncated_tokens']} tokens were dropped; see {output_dir}/{SUMMARY_FILE}. "
            "Fix the tokenizer (a vocabulary for this script; character_coverage=0.9995 and more "
            "pieces for CJK) or the encoding, or rerun with a higher max_lost_fraction to keep "
            "these shards"
        )
    return summary


def _run_jobs(jobs: list[ShardJob], num_processes: int, show_progress: bool):
    from tqdm import tqdm

    progress = tqdm(total=len(jobs), desc="shards", unit="shard", disable=not show_progress or not jobs)
    if num_processes <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield build_one_shard(job)
            progress.update()
    else:
        # spawn, not fork: the parent may hold JAX/TF runtime threads that fork would copy.
        with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
            for stats in pool.imap_unordered(build_one_shard, jobs):
                yield stats
                progress.update()
    progress.close()


def _summarize(shard_stats: list[dict], text_stats: text_files.TextStats, max_seq_length: int) -> dict:
    """The build summary from the shards' stats and the reading pass's counts."""
    totals = {key: sum(s[key] for s in shard_stats) for key in SHARD_STATS}
    total_positions = totals["examples"] * max_seq_length
    truncated_tokens = totals["tokens"] - totals["content_tokens"]
    unread_bytes = text_stats.invalid_utf8_bytes + text_stats.bad_record_bytes
    lost_characters = totals["unk_characters"] + unread_bytes
    lost_fraction = truncated_tokens / max(totals["tokens"], 1) + lost_characters / max(
        totals["characters"] + unread_bytes, 1
    )
    return {
        **{k: v for k, v in totals.items() if k not in ("real_tokens", "content_tokens")},
        "tokens_in_shards": totals["content_tokens"],
        "truncated_tokens": truncated_tokens,
        "invalid_utf8_lines": text_stats.invalid_utf8_lines,
        "invalid_utf8_bytes": text_stats.invalid_utf8_bytes,
        "bad_records": text_stats.bad_records,
        "bad_record_bytes": text_stats.bad_record_bytes,
        "unused_documents": text_stats.unused_documents,
        "lost_fraction": round(lost_fraction, 6),
        "pieces_per_word": round(totals["tokens"] / max(totals["words"], 1), 3),
        "padding_fraction": round(1 - totals["real_tokens"] / total_positions, 4) if total_positions else 0.0,
        "real_tokens_per_example": round(totals["real_tokens"] / totals["examples"], 2) if totals["examples"] else 0,
    }


def build_shards_config() -> ml_collections.ConfigDict:
    """The CLI's settings: `build_shards`'s arguments."""
    c = ml_collections.ConfigDict()
    c.inputs = ""  # comma-separated sources (globs, gs://, tfds:NAME:SPLIT), each optionally @WEIGHT
    c.text_field = "text"  # the text's JSON field, Parquet column or TFDS feature
    c.tfds_data_dir = ""  # where tfds: sources are prepared ("" = TFDS's default)
    c.tokenizer_path = ""  # sentencepiece *.model or WordPiece vocab.txt
    c.output_dir = ""  # where the shards go
    c.max_seq_length = 128  # tokens per example
    c.num_shards = 8  # training shards (train-*)
    c.num_eval_shards = 0  # extra held-out shards (eval-*)
    c.seed = 0  # seed of the document order and of the held-out split
    c.num_processes = os.cpu_count() or 1  # worker processes
    c.document_boundary = "blank_line"  # what ends a document: text_files.DOCUMENT_BOUNDARIES
    c.sentence_boundary = "punctuation"  # where sentences end: punctuation | line
    c.word_segmenter = "pieces"  # word starts for whole-word masking: words.WORD_SEGMENTERS
    c.on_invalid_utf8 = "skip"  # lines that are not UTF-8: text_files.INVALID_UTF8_POLICIES
    c.max_lost_fraction = DEFAULT_MAX_LOST_FRACTION  # fail above this fraction of the corpus not in the shards
    return c


def main(config, arguments) -> None:
    del arguments
    logging.set_verbosity(logging.INFO)
    print(json.dumps(build_shards(**config.to_dict()), indent=2))


def run() -> None:
    """The CLI (`python -m data_pipelines.build_shards`)."""
    errors.run_tool(build_shards_config(), main, required=("inputs", "tokenizer_path", "output_dir"))


if __name__ == "__main__":
    run()
