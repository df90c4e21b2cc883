"""One command from text to training data: corpus -> sentencepiece tokenizer -> shards.

    python -m data_pipelines.prepare_data --config.output_dir=data/default   # embedded corpus
    python -m data_pipelines.prepare_data --config.output_dir=data/books \\
        --config.inputs='../shared/data/gutenberg_nltk/*.txt,../shared/data/wikitext-2/*.txt' \\
        --config.document_boundary=file --config.vocab_size=16000
    python -m data_pipelines.prepare_data --config.output_dir=data/books_wp --config.inputs=... \\
        --config.tokenizer=electra-small-discriminator/vocab.txt   # a released model's vocabulary
    python -m data_pipelines.prepare_data --config.output_dir=data/web --config.vocab_size=32000 \
        --config.inputs='web/*.json.gz@0.8,books/*.parquet@0.2' --config.text_field=text \
        --config.tokenizer_sample_bytes=300000000   # a mixture of JSON Lines and Parquet

Inputs may be text, JSON Lines (.jsonl/.json, .gz/.zst), Parquet, or tfds:NAME:SPLIT, local
or gs://, with @WEIGHT for a mixture (see corpus_sources). The tokenizer trains on a
seeded sample of `tokenizer_sample_bytes` of the corpus (tokenizer.sample_documents).

Without inputs it writes the embedded default corpus (see DEFAULT_CORPUS.md) to
`output_dir/corpus.txt`. It writes `output_dir/spm.model` and
`output_dir/shards/{train,eval}-*.tfrecord`, then prints the config overrides to train on
them. Rerunning resumes: an existing spm.model is reused and finished shards are skipped.
A rerun with other settings, or after an input file changed (size or mtime), is refused
with the changed names (`prepare_settings.json` records them); `rebuild` starts anew, moving
the old tokenizer and shards to `output_dir/replaced-<time>/`.
"""

import json
import os
import time
from typing import Sequence

import ml_collections
from absl import logging

from data_pipelines import build_shards as build_lib
from data_pipelines import corpus_sources, default_corpus, errors, files, words
from data_pipelines import tokenizer as tokenizer_lib

SETTINGS_FILE = "prepare_settings.json"


# What `rebuild` replaces in output_dir (moved aside, never deleted); a default corpus.txt stays.
REBUILT = ("spm.model", "spm.vocab", "vocab.txt", SETTINGS_FILE, "shards")


def _built(output_dir: str) -> list[str]:
    """What of REBUILT a run has made in output_dir (the settings file aside)."""
    return [
        name
        for name in REBUILT
        if name != SETTINGS_FILE and os.path.exists(os.path.join(output_dir, name))
        if not os.path.isdir(os.path.join(output_dir, name)) or os.listdir(os.path.join(output_dir, name))
    ]


def check_settings(output_dir: str, settings: dict, rebuild: bool, inputs: dict) -> None:
    """Records `settings` in output_dir; refuses a rerun with other ones (or changed inputs),
    which would reuse a tokenizer and shards they did not make, unless `rebuild` moves them
    aside. `inputs` ({what: paths}) must survive that: a rebuild that would move one is refused."""
    path = os.path.join(output_dir, SETTINGS_FILE)
    if rebuild:
        files.check_spares_inputs(
            [os.path.join(output_dir, name) for name in REBUILT],
            inputs,
            fix=f"rebuild=True replaces {', '.join(REBUILT)} in {output_dir}: prepare into a new output_dir "
            "(--config.tokenizer may name the old one's spm.model), or copy the input elsewhere first",
        )
        aside = files.move_aside(output_dir, REBUILT)
        if aside:
            logging.warning("rebuild: moved the previous tokenizer and shards to %s; delete it when done", aside)
    elif os.path.exists(path):
        changed = build_lib.changed_keys(files.read_json(path), settings)
        if changed and not _built(output_dir):  # an earlier run that failed before it made anything
            logging.info("%s: an earlier run recorded other settings but built nothing; replacing them", output_dir)
        elif changed:
            raise ValueError(
                f"{output_dir} was prepared with other settings or inputs ({', '.join(changed)} "
                "changed; see its prepare_settings.json); use a new output_dir, or "
                "rebuild=True (--config.rebuild=True) to replace its tokenizer and shards"
            )
    elif os.path.exists(os.path.join(output_dir, "spm.model")):
        logging.warning(
            "%s has a tokenizer but no %s (prepared by an older version): reusing it "
            "unchecked; rebuild=True makes it anew",
            output_dir,
            SETTINGS_FILE,
        )
    os.makedirs(output_dir, exist_ok=True)
    files.write_json(path, settings, sort_keys=True)


def prepare_data(
    output_dir: str,
    *,
    inputs: str | Sequence[str] | None = None,
    vocab_size: int = 8192,
    max_seq_length: int = 128,
    num_shards: int = 8,
    num_eval_shards: int = 1,
    num_processes: int = 1,
    seed: int = 0,
    model_type: str = "unigram",
    document_boundary: str = "blank_line",
    sentence_boundary: str = "punctuation",
    word_segmenter: str = "pieces",
    character_coverage: float = tokenizer_lib.DEFAULT_CHARACTER_COVERAGE,
    lowercase: bool = False,
    on_invalid_utf8: str = "skip",
    text_field: str = "text",
    tfds_data_dir: str = "",
    tokenizer_sample_bytes: int = tokenizer_lib.DEFAULT_SAMPLE_BYTES,
    max_lost_fraction: float = build_lib.DEFAULT_MAX_LOST_FRACTION,
    show_progress: bool = True,
    rebuild: bool = False,
    tokenizer: str | None = None,
) -> dict:
    """Builds tokenizer + shards; returns paths, timings, the shard summary and config flags.
    With `tokenizer` (an existing vocab.txt or sentencepiece .model, e.g. a released
    model's) no tokenizer is trained: a copy of it goes into `output_dir` and the shards
    use it (`vocab_size` and `model_type` are then unused). A rerun into the same
    `output_dir` resumes; with other settings or changed inputs it is refused unless `rebuild`."""
    timings = {}
    start = time.perf_counter()
    if not inputs:
        inputs = os.path.join(output_dir, "corpus.txt")
        if not os.path.exists(inputs):
            default_corpus.write_default_corpus(inputs)
    timings["corpus_seconds"] = round(time.perf_counter() - start, 2)
    sources = corpus_sources.resolve_inputs(inputs)  # fail on a bad pattern before training anything
    words.check_segmenter(word_segmenter)
    # Before anything is written or trained: a corpus of too few documents fails in seconds.
    build_lib.check_documents(
        sources,
        num_shards + num_eval_shards,
        enough=True,
        document_boundary=document_boundary,
        sentence_boundary=sentence_boundary,
        on_invalid_utf8=on_invalid_utf8,
        text_field=text_field,
        tfds_data_dir=tfds_data_dir,
        seed=seed,
    )
    settings = {
        "inputs": corpus_sources.fingerprints(sources, output_dir, tfds_data_dir),
        **(
            {"tokenizer": files.fingerprints([tokenizer], output_dir)[0]}
            if tokenizer
            else {
                "vocab_size": vocab_size,
                "model_type": model_type,
                "character_coverage": character_coverage,
                "lowercase": lowercase,
                "tokenizer_sample_bytes": tokenizer_sample_bytes,
            }
        ),
        "seed": seed,
        "max_seq_length": max_seq_length,
        "num_shards": num_shards,
        "num_eval_shards": num_eval_shards,
        "document_boundary": document_boundary,
        "sentence_boundary": sentence_boundary,
        "word_segmenter": word_segmenter,
        "on_invalid_utf8": on_invalid_utf8,
        "text_field": text_field,
    }
    if tokenizer:
        tokenizer_lib.load_tokenizer(tokenizer)  # a missing or unreadable one fails before anything is moved
    corpus_paths = [p for p in corpus_sources.all_paths(sources) if not p.startswith(corpus_sources.TFDS_PREFIX)]
    check_settings(output_dir, settings, rebuild, {"the corpus (inputs)": corpus_paths, "tokenizer": tokenizer})

    start = time.perf_counter()
    if tokenizer:
        tokenizer_path = tokenizer_lib.copy_tokenizer_file(tokenizer, output_dir)
        tokenizer = tokenizer_lib.load_tokenizer(tokenizer_path)
    elif os.path.exists(os.path.join(output_dir, "spm.model")):
        tokenizer_path = os.path.join(output_dir, "spm.model")
        logging.info("reusing the tokenizer at %s", tokenizer_path)
        tokenizer = tokenizer_lib.load_tokenizer(tokenizer_path)
    else:
        tokenizer_path = os.path.join(output_dir, "spm.model")
        tokenizer = tokenizer_lib.train_sentencepiece(
            sources,  # resolved once: a pattern over output_dir would match what this run writes there
            tokenizer_path,
            vocab_size=vocab_size,
            model_type=model_type,
            sample_bytes=tokenizer_sample_bytes,
            character_coverage=character_coverage,
            lowercase=lowercase,
            seed=seed,
            on_invalid_utf8=on_invalid_utf8,
            sentence_boundary=sentence_boundary,
            text_field=text_field,
            tfds_data_dir=tfds_data_dir,
            num_threads=num_processes,
        )
    timings["tokenizer_seconds"] = round(time.perf_counter() - start, 2)

    shard_dir = os.path.join(output_dir, "shards")
    start = time.perf_counter()
    summary = build_lib.build_shards(
        sources,
        shard_dir,
        tokenizer_path=tokenizer_path,
        max_seq_length=max_seq_length,
        num_shards=num_shards,
        num_eval_shards=num_eval_shards,
        seed=seed,
        num_processes=num_processes,
        document_boundary=document_boundary,
        sentence_boundary=sentence_boundary,
        word_segmenter=word_segmenter,
        on_invalid_utf8=on_invalid_utf8,
        text_field=text_field,
        tfds_data_dir=tfds_data_dir,
        max_lost_fraction=max_lost_fraction,
        show_progress=show_progress,
    )
    timings["shards_seconds"] = round(time.perf_counter() - start, 2)
    train_files = os.path.join(shard_dir, "train-*.tfrecord")
    eval_files = os.path.join(shard_dir, "eval-*.tfrecord") if num_eval_shards else ""
    flags = [
        "--config.data.source=tfrecord",
        f"--config.data.train_files={train_files}",
        f"--config.data.tokenizer={tokenizer_path}",
        f"--config.model.vocab_size={tokenizer.vocab_size}",
        f"--config.train.max_seq_length={max_seq_length}",
    ]
    if eval_files:
        flags.insert(2, f"--config.data.eval_files={eval_files}")
    return {
        "tokenizer": tokenizer_path,
        "vocab_size": tokenizer.vocab_size,
        "train_files": train_files,
        "eval_files": eval_files,
        "timings": timings,
        "shards": summary,
        "config_flags": flags,
    }


def prepare_data_config() -> ml_collections.ConfigDict:
    """The CLI's settings: `prepare_data`'s arguments."""
    c = ml_collections.ConfigDict()
    c.output_dir = ""  # where the tokenizer and shards go
    # comma-separated sources (globs, gs://, tfds:NAME:SPLIT), each optionally @WEIGHT; "" = default corpus
    c.inputs = ""
    c.tokenizer = ""  # an existing vocab.txt or sentencepiece .model to build with ("" = train one)
    c.vocab_size = 8192  # sentencepiece pieces; must equal config.model.vocab_size
    c.model_type = "unigram"  # sentencepiece model type: tokenizer.MODEL_TYPES
    c.tokenizer_sample_bytes = tokenizer_lib.DEFAULT_SAMPLE_BYTES  # bytes of text sampled to train the tokenizer on
    c.max_seq_length = 128  # tokens per example
    c.num_shards = 8  # training shards (train-*)
    c.num_eval_shards = 1  # held-out shards (eval-*)
    c.num_processes = os.cpu_count() or 1  # worker processes
    c.seed = 0  # seed of the tokenizer's document sample, a mixture's draws and the shard split
    c.document_boundary = "blank_line"  # "file" for hard-wrapped books whose blank lines part paragraphs
    c.word_segmenter = "pieces"  # word starts for whole-word masking: words.WORD_SEGMENTERS
    c.max_lost_fraction = build_lib.DEFAULT_MAX_LOST_FRACTION  # fail above this fraction not in the shards
    c.rebuild = False  # replace (move aside) the tokenizer and shards of an output_dir prepared otherwise
    return tokenizer_lib.add_text_options(c)


def main(config, arguments) -> None:
    del arguments
    logging.set_verbosity(logging.INFO)
    result = prepare_data(**config.to_dict())
    print(json.dumps({k: v for k, v in result.items() if k != "config_flags"}, indent=2))
    print("train with:\n  " + " \\\n  ".join(result["config_flags"]))


def run() -> None:
    """The CLI (`electra-jax-prepare-data`)."""
    errors.run_tool(prepare_data_config(), main, required=("output_dir",))


if __name__ == "__main__":
    run()
