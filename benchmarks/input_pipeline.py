"""Host input pipeline throughput: building shards and reading them, vs the train step.

    python benchmarks/input_pipeline.py --output_dir=/tmp/input_bench \\
        --step_results=/tmp/bench8/cpu_small_vs_hf.jsonl

1. Build: `data_pipelines.prepare_data` on the real corpus (default: the three text
   corpora in ../shared/data) -> sentencepiece tokenizer + TFRecord shards; examples/s
   of the shard build (tokenize + pack + serialize + write, `--num_processes` workers) and
   the tokenizer-training time. A rerun into the same directory reuses both (that is the
   resume path), so point --output_dir at a fresh directory to time a build.
2. Read: the training reader (`data_pipelines.pretraining.make_pretraining_iterator`:
   interleave, shuffle, repeat, batch, parse, prefetch) for `--read_batches` batches after
   a warm-up, host examples/s; then the same plus `to_global_batch` (host -> device).
3. If `--step_results` names JSON lines from `pretrain_step.py`, the reader's examples/s
   over each train step's sequences/s (> 1: the input pipeline keeps up).
Prints one JSON object; `--out` appends it to a JSON-lines file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.shared_data import shared_path  # noqa: E402
from configs import pretrain as recipes
from data_pipelines import prepare_data, pretraining  # noqa: E402

SHARED_CORPUS = ",".join(
    shared_path(*parts)
    for parts in (("gutenberg_nltk", "*.txt"), ("tinyshakespeare", "input.txt"), ("wikitext-2", "*.txt"))
)


def time_reader(
    train_files: str, *, batch_size: int, seq_length: int, num_batches: int, warmup: int, to_device: bool, rounds: int
) -> list[float]:
    """Examples/s of the tf.data reader (optionally plus the host -> device copy), per round."""
    iterator = pretraining.make_pretraining_iterator(
        train_files, batch_size=batch_size, seq_length=seq_length, seed=0, process_index=0, process_count=1
    )

    def put(batch):
        return batch

    if to_device:
        import jax

        from electra_jax import sharding

        batch_sharding = sharding.batch_sharding(
            sharding.make_mesh(recipes.pretraining_config("tiny").mesh)
        )  # the trainer's default mesh

        def put(batch):
            return jax.block_until_ready(pretraining.to_global_batch(batch, batch_sharding))

    for _ in range(warmup):
        put(next(iterator))
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(num_batches):
            put(next(iterator))
        rates.append(num_batches * batch_size / (time.perf_counter() - start))
    return rates


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=SHARED_CORPUS, help="comma-separated text files or globs")
    parser.add_argument("--output_dir", required=True, help="tokenizer + shards go here (not the repo)")
    parser.add_argument("--vocab_size", type=int, default=16000)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--num_shards", type=int, default=8)
    parser.add_argument("--num_processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--read_batches", type=int, default=200, help="batches per timed read round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--step_results", default="", help="JSON lines from pretrain_step.py")
    parser.add_argument("--out", default="", help="append the result as a JSON line here")
    args = parser.parse_args(argv)
    if os.path.abspath(args.output_dir).startswith(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))):
        raise ValueError(f"--output_dir={args.output_dir} is inside the repository; write under /tmp")

    prepared = prepare_data.prepare_data(
        args.output_dir,
        inputs=args.input,
        vocab_size=args.vocab_size,
        max_seq_length=args.max_seq_length,
        num_shards=args.num_shards,
        num_eval_shards=0,
        num_processes=args.num_processes,
        show_progress=False,
    )
    shards = prepared["shards"]
    result = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(sys.argv),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "input": args.input,
        "vocab_size": prepared["vocab_size"],
        "max_seq_length": args.max_seq_length,
        "num_processes": args.num_processes,
        "timings": prepared["timings"],
        "build": {
            k: shards.get(k)
            for k in (
                "documents",
                "sentences",
                "tokens",
                "examples",
                "padding_fraction",
                "shards_built",
                "seconds",
                "examples_per_second",
            )
        },
    }
    for to_device in (False, True):
        rates = time_reader(
            prepared["train_files"],
            batch_size=args.batch_size,
            seq_length=args.max_seq_length,
            num_batches=args.read_batches,
            warmup=10,
            to_device=to_device,
            rounds=args.rounds,
        )
        result["read_to_device" if to_device else "read"] = {
            "examples_per_second_median": statistics.median(rates),
            "examples_per_second_min": min(rates),
            "examples_per_second_max": max(rates),
            "batch_size": args.batch_size,
        }
    read_rate = result["read_to_device"]["examples_per_second_median"]
    if args.step_results:
        with open(args.step_results, encoding="utf-8") as f:
            steps = [json.loads(line) for line in f if line.strip()]
        result["reader_over_step"] = {
            f"{s['impl']}/{s['size']}/{s['seq_len']}/{s['device']}": read_rate / s["sequences_per_s"]
            for s in steps
            if not s.get("error")
        }
    import tensorflow as tf

    result["tensorflow"] = tf.__version__
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
