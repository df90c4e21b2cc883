"""Throughput and MFU of the jitted ELECTRA train step, side by side with transformers.

    python benchmarks/pretrain_step.py --sizes=small,base --seqs=128,512 --hf=eager,compiled

Times the real `pretrain.train_step` (warm-up excluded, median of N steps, each ended by
`block_until_ready`) on synthetic batches (no tensorflow), reports step time, sequences/s,
tokens/s, model FLOPs per step (analytic, cross-checked against XLA's cost analysis), MFU
against the device's peak, peak device memory; optionally runs `hf_baseline.py` on the
same config and prints the ratio. Writes JSON lines and Markdown rows.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from electra_jax import model, pretrain, presets  # noqa: E402
from electra_jax.flops import peak_flops, train_flops_per_sequence  # noqa: E402

def bench_config(size: str, seq_len: int, batch: int, dtype: str, overrides: dict):
    config = presets.pretraining_config(size)
    config.train.max_seq_length = seq_len
    config.train.batch_size = batch
    config.objective.max_predictions_per_seq = presets.max_predictions_per_seq(
        config.objective.mask_prob, seq_len)
    config.model.dtype = dtype
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        config[section][key] = value
    return config


def synthetic_batch(batch: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict:
    """Full-length sequences: [CLS] tokens [SEP], two segments (as packed shards are)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, size=(batch, seq_len), dtype=np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    types = np.zeros_like(ids)
    types[:, seq_len // 2:] = 1
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": types}


def time_train_step(config, steps: int, warmup: int) -> dict:
    trainer = pretrain.make_pretrainer(config)
    state = pretrain.init_train_state(trainer)
    step = pretrain.jit_train_step(trainer)
    batch = synthetic_batch(config.train.batch_size, config.train.max_seq_length,
                            config.model.vocab_size)
    batch = jax.device_put(batch, pretrain.sharding.batch_sharding(trainer.mesh))
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready((state, metrics))
        if i >= warmup:
            times.append(time.perf_counter() - start)
    memory = jax.devices()[0].memory_stats() or {}
    return {"step_s": statistics.median(times), "compile_s": compile_s,
            "xla_flops": float(cost.get("flops", 0.0)) if cost else 0.0,
            "peak_memory_gib": memory.get("peak_bytes_in_use", 0) / 2**30,
            "loss": float(metrics["loss"])}


def run_ours(size, seq_len, batch, dtype, steps, warmup, overrides, peak_override=None) -> dict:
    config = bench_config(size, seq_len, batch, dtype, overrides)
    gen, disc = model.configs_from_dict(config.model)
    flops = batch * train_flops_per_sequence(gen, disc, seq_len,
                                             config.objective.max_predictions_per_seq)
    result = time_train_step(config, steps, warmup)
    device = jax.devices()[0]
    peak = peak_flops(device.device_kind, dtype, peak_override)
    result.update(
        impl="electra_jax", size=size, seq_len=seq_len, batch=batch, dtype=dtype,
        overrides=overrides, device=device.device_kind, num_devices=jax.device_count(),
        sequences_per_s=batch / result["step_s"], tokens_per_s=batch * seq_len / result["step_s"],
        model_flops=flops, flops_ratio_xla=result["xla_flops"] / flops if flops else None,
        mfu=(flops / result["step_s"] / peak / jax.device_count()) if peak else None,
        jax_version=jax.__version__, python=platform.python_version())
    return result


def run_hf(size, seq_len, batch, variant, device, dtype, steps, warmup) -> dict:
    from benchmarks import hf_baseline
    result = hf_baseline.run_hf_baseline(size, batch, seq_len, steps=steps, warmup=warmup,
                                         variant=variant, device=device, dtype=dtype)
    result.update(impl=f"transformers-{variant}", size=size, seq_len=seq_len, batch=batch)
    return result


def markdown_row(r: dict) -> str:
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "n/a"
    mem = f"{r['peak_memory_gib']:.1f}" if r.get("peak_memory_gib") else "n/a"
    return (f"| {r['impl']} | {r['size']} | {r['seq_len']} | {r['batch']} | {r.get('dtype', '')} | "
            f"{1000 * r['step_s']:.1f} | {r['tokens_per_s']:,.0f} | {mfu} | {mem} |")


MARKDOWN_HEADER = ("| impl | size | seq | batch | dtype | step ms | tokens/s | MFU | peak GiB |\n"
                   "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def _parse_overrides(items):
    overrides = {}
    for item in items:
        key, value = item.split("=", 1)
        overrides[key] = json.loads(value) if value not in ("True", "False") else value == "True"
    return overrides


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small")
    parser.add_argument("--seqs", default="128")
    parser.add_argument("--batch", type=int, default=0,
                        help="global batch; 0 = 32768 tokens per step (256 x 128, 64 x 512)")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on GPU/TPU, float32 on CPU")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--hf", default="", help="comma list of transformers variants: eager,compiled,"
                                                 "eager_gathered,compiled_gathered")
    parser.add_argument("--peak_flops", type=float, default=None, help="override the device peak")
    parser.add_argument("--set", action="append", default=[],
                        help="config override section.key=json_value, e.g. model.remat_policy='\"full\"'")
    parser.add_argument("--out", default="", help="append JSON lines here")
    args = parser.parse_args(argv)

    on_accelerator = jax.default_backend() != "cpu"
    dtype = args.dtype or ("bfloat16" if on_accelerator else "float32")
    overrides = _parse_overrides(args.set)
    rows = []
    print(MARKDOWN_HEADER)
    for size in args.sizes.split(","):
        for seq_len in (int(s) for s in args.seqs.split(",")):
            batch = args.batch or 32768 // seq_len
            results = [run_ours(size, seq_len, batch, dtype, args.steps, args.warmup, overrides,
                                args.peak_flops)]
            for variant in filter(None, args.hf.split(",")):
                results.append(run_hf(size, seq_len, batch, variant,
                                      "cuda" if on_accelerator else "cpu", dtype,
                                      args.steps, args.warmup))
            for r in results:
                r["speedup_vs_this"] = results[0]["tokens_per_s"] / r["tokens_per_s"]
                print(markdown_row(r) + (f" ours/this = {r['speedup_vs_this']:.2f}x"
                                         if r is not results[0] else ""), flush=True)
            rows += results
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return rows


if __name__ == "__main__":
    main()
