"""Throughput and MFU of the jitted ELECTRA train step, side by side with transformers.

    python benchmarks/pretrain_step.py --sizes=small --seqs=128 --batch=32 --hf=eager --rounds=5

Times the real `pretrain.train_step` (the compiled executable, warm-up excluded) on
synthetic batches (numpy only: no tensorflow anywhere in this harness) and, in the same
process, the transformers baseline (`hf_baseline.py`) on the same config, then prints the
ratio. Each runner is timed in `--rounds` windows of `--steps` steps (one device sync per
window, as the training loop runs); on a shared CPU the rounds interleave the runners so
load changes hit all of them alike, and the ratio is taken per round (median and range).

Reported per runner: step time (median, min, max over rounds), sequences/s, tokens/s,
model FLOPs per step (analytic, `electra_jax.flops`) and XLA's count for comparison, MFU
against the device's peak, the step's memory (XLA's memory analysis: arguments + outputs +
temporaries - donated aliases; torch: peak allocated on CUDA), compile time, and for ELECTRA-
Small at 128 / Base at 512 the projected hours of the paper's full run.

`--ablations` times fast paths one at a time against the paper recipe (see ABLATIONS).
`--compile_only` reports compile time and XLA's memory analysis without running a step
(e.g. remat policies at base/large on a machine that could not run them).
With several sizes/lengths on an accelerator each runs in its own process (`--isolate`), so
one OOM is one failed row and JAX and torch never hold each other's memory.
Writes JSON lines (`--out`) and Markdown rows; `--summarize FILE` re-prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

# torch may share the GPU with JAX in this process: allocate on demand, not 75% up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from configs import pretrain as recipes
from data_pipelines import pretraining as data  # noqa: E402
from electra_jax import model, presets, pretrain, sharding  # noqa: E402
from electra_jax.flops import peak_flops, train_flops_per_sequence  # noqa: E402

# Fast paths, each one change to the paper recipe ("recipe": attention dropout 0.1 through
# the explicit softmax path, unrolled layers, no remat, gathered MLM logits, metrics
# fetched asynchronously). name -> (config overrides, kind).
ABLATIONS = {
    "recipe": ({}, "train"),
    # attention_dropout=0 routes attention through jax.nn.dot_product_attention (the
    # recipe's dropout on the probabilities forces the explicit path).
    "fused_attention": ({"model.attention_dropout": 0.0}, "train"),
    "cudnn_attention": ({"model.attention_dropout": 0.0, "model.attention_impl": "cudnn"}, "train"),
    "bf16": ({"model.dtype": "bfloat16"}, "train"),
    "fp32": ({"model.dtype": "float32"}, "train"),
    "scan": ({"model.scan_layers": True}, "train"),
    "remat_full": ({"model.remat_policy": "full"}, "train"),
    "remat_dots": ({"model.remat_policy": "dots"}, "train"),
    "remat_dots_saveable": ({"model.remat_policy": "dots_saveable"}, "train"),
    # Word embeddings / MLM logits padded to a multiple of 128 (30522 -> 30592), the
    # padding columns masked; the generator-only pair isolates the vocabulary projection.
    "pad_vocab_128": ({"model.vocab_pad_multiple": 128}, "train"),
    # Fetch the metrics to the host after every step (a sync per step) instead of once
    # per window, as a loop without asynchronous metrics would.
    "host_metrics": ({}, "train_host_sync"),
    # Generator forward + backward only: MLM logits at the P masked positions vs over
    # all S positions then gathered (what computing full [B, S, V] logits costs).
    "gen_gathered": ({}, "generator_gathered"),
    "gen_full": ({}, "generator_full"),
    "gen_gathered_pad_vocab_128": ({"model.vocab_pad_multiple": 128}, "generator_gathered"),
}

# The paper's full runs, for projected hours: (size, seq) -> (steps, batch).
FULL_RUNS = {("small", 128): (1_000_000, 128), ("base", 512): (766_000, 256)}

# Default global batch: this many tokens per step (large: less, to fit one 80 GB GPU
# without remat).
TOKENS_PER_STEP = {"large": 8192}
DEFAULT_TOKENS_PER_STEP = 32768


def bench_config(size: str, seq_len: int, batch: int, dtype: str, overrides: dict):
    config = recipes.pretraining_config(size)
    config.train.max_seq_length = seq_len
    config.train.batch_size = batch
    config.objective.max_predictions_per_seq = presets.max_predictions_per_seq(config.objective.mask_prob, seq_len)
    config.model.dtype = dtype
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        config[section][key] = value
    return config


def synthetic_batch(config) -> dict:
    """One host batch of full-length `[CLS] A [SEP] B [SEP]` rows (the no-TF data source)."""
    return next(
        data.make_synthetic_iterator(
            batch_size=config.train.batch_size,
            seq_length=config.train.max_seq_length,
            vocab_size=config.model.vocab_size,
            seed=0,
            process_index=0,
            process_count=1,
        )
    )


@dataclasses.dataclass
class Runner:
    """One thing to time: `window(n)` runs n steps and returns seconds per step."""

    label: str
    window: Callable[[int], float]
    info: dict
    close: Callable[[], None] = lambda: None


def prepare_train_step(config, label: str, host_sync: bool = False) -> Runner:
    """The real jitted, donated train step, compiled ahead of time (compile time measured)."""
    trainer = pretrain.make_pretrainer(config)
    holder = {"state": pretrain.init_train_state(trainer)}
    batch = data.to_global_batch(synthetic_batch(config), sharding.batch_sharding(trainer.mesh))
    start = time.perf_counter()
    lowered = pretrain.jit_train_step(trainer).lower(holder["state"], batch)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    # Lowered (pre-optimization) HLO: global shapes whatever the mesh; a scanned layer
    # body is counted once (see flops.hlo_dot_flops), so compare unrolled runs.
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    memory = compiled.memory_analysis()
    step_bytes = (
        (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes
        )
        if memory
        else None
    )

    def window(num_steps: int) -> float:
        start = time.perf_counter()
        for _ in range(num_steps):
            holder["state"], metrics = compiled(holder["state"], batch)
            if host_sync:
                trainer.metrics_to_host(metrics)
        jax.block_until_ready(holder["state"])
        holder["metrics"] = metrics
        return (time.perf_counter() - start) / num_steps

    gen_cfg, disc_cfg = model.configs_from_dict(config.model)
    flops = config.train.batch_size * train_flops_per_sequence(
        gen_cfg, disc_cfg, config.train.max_seq_length, config.objective.max_predictions_per_seq
    )
    info = {
        "compile_s": compile_s,
        "model_flops": flops,
        "xla_flops": float(cost["flops"]) if cost else None,
        "step_memory_gib": step_bytes / 2**30 if step_bytes is not None else None,
        "donated_gib": memory.alias_size_in_bytes / 2**30 if memory else None,
        "temp_gib": memory.temp_size_in_bytes / 2**30 if memory else None,
        "num_params": model.count_params(holder["state"].params),
    }
    info["flops_ratio_xla"] = info["xla_flops"] / flops if info["xla_flops"] else None
    return Runner(label, window, info, close=holder.clear)


def prepare_generator_mlm(config, label: str, gathered: bool) -> Runner:
    """Generator forward + backward of the MLM loss, logits at the masked positions only
    ([B, P, V]) or over the whole sequence then gathered ([B, S, V]); no dropout."""
    gen_cfg, _ = model.configs_from_dict(config.model)
    generator = model.Generator(gen_cfg)
    seq_len, batch_size = config.train.max_seq_length, config.train.batch_size
    params = model.init_params(generator, jax.random.PRNGKey(0), seq_len)
    inputs = jax.tree_util.tree_map(jnp.asarray, synthetic_batch(config))
    num_predictions = config.objective.max_predictions_per_seq
    keys = jax.random.uniform(jax.random.PRNGKey(1), (batch_size, seq_len - 2))
    positions = 1 + jnp.argsort(keys, axis=-1)[:, :num_predictions]  # [B, P], never [CLS]/[SEP]
    targets = jnp.take_along_axis(inputs["input_ids"], positions, axis=1)

    def mlm_loss(params):
        args = (inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"], True)
        if gathered:
            logits = generator.apply({"params": params}, *args, masked_positions=positions)
        else:
            logits = jnp.take_along_axis(
                generator.apply({"params": params}, *args), positions[..., None], axis=1
            )  # [B, S, V] -> [B, P, V]
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    start = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(mlm_loss)).lower(params).compile()
    compile_s = time.perf_counter() - start

    def window(num_steps: int) -> float:
        start = time.perf_counter()
        for _ in range(num_steps):
            result = compiled(params)
        jax.block_until_ready(result)
        return (time.perf_counter() - start) / num_steps

    return Runner(label, window, {"compile_s": compile_s})


def prepare_hf(size: str, seq_len: int, batch: int, variant: str, dtype: str, warmup: int) -> Runner:
    import torch

    from benchmarks import hf_baseline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    bench = hf_baseline.make_hf_benchmark(size, batch, seq_len, variant=variant, device=device, dtype=dtype)
    is_cuda = device == "cuda"
    if is_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(warmup):  # includes torch.compile's compilation
        bench.step(bench.batch)
    hf_baseline.synchronize(device)
    info = {
        "compile_s": time.perf_counter() - start,
        "num_params": bench.num_params,
        "device_name": torch.cuda.get_device_name(device) if is_cuda else platform.processor(),
        "torch_version": torch.__version__,
        "transformers_version": hf_baseline.transformers.__version__,
    }

    def window(num_steps: int) -> float:
        start = time.perf_counter()
        for _ in range(num_steps):
            bench.step(bench.batch)
        hf_baseline.synchronize(device)
        if is_cuda:  # own peak only in sequential mode (--no-interleave), see main()
            info["step_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        return (time.perf_counter() - start) / num_steps

    def close():
        bench.step = bench.batch = None
        gc.collect()
        if is_cuda:
            torch.cuda.empty_cache()

    return Runner(f"transformers-{variant}", window, info, close)


def time_runners(
    factories: list[Callable[[], Runner]], rounds: int, steps: int, warmup: int, interleave: bool
) -> list[tuple[Runner, list[float]]]:
    """Per-step seconds of each runner in each round. Interleaved: all runners built first,
    then round r times each of them once (in rotated order). Sequential: build, time all
    rounds, free, next runner (no two runners hold device memory at once)."""
    timed = []
    if interleave:
        runners = [factory() for factory in factories]
        for runner in runners:
            if warmup:
                runner.window(warmup)
        times = {id(r): [] for r in runners}
        for r in range(rounds):
            shift = r % len(runners)
            for runner in runners[shift:] + runners[:shift]:
                times[id(runner)].append(runner.window(steps))
        timed = [(runner, times[id(runner)]) for runner in runners]
    else:
        # Last runner first: torch returns its cache on close, JAX keeps its pool, so the
        # JAX runners (listed first) go last.
        for factory in reversed(factories):
            runner = factory()
            if warmup:
                runner.window(warmup)
            timed.insert(0, (runner, [runner.window(steps) for _ in range(rounds)]))
            runner.close()
    return timed


def versions() -> dict:
    import jaxlib

    found = {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
    }
    try:
        import torch
        import transformers

        found.update(torch=torch.__version__, transformers=transformers.__version__)
    except ImportError:
        pass
    return found


def describe(runner: Runner, size, seq_len, batch, dtype) -> dict:
    """What every row holds: the run, the machine, the versions and the runner's info."""
    return {
        "impl": runner.label,
        "size": size,
        "seq_len": seq_len,
        "batch": batch,
        "dtype": dtype,
        "device": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "num_devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
        "command": " ".join(sys.argv),
        **versions(),
        **runner.info,
    }


def summarize(timed, size, seq_len, batch, dtype, peak_override) -> list[dict]:
    """One result dict per runner; ratios against the first runner, per round."""
    device = jax.devices()[0]
    reference_times = timed[0][1]
    rows = []
    for runner, times in timed:
        step_s = statistics.median(times)
        per_round = [t / ref for ref, t in zip(reference_times, times)]  # first's speed / this one's
        row = {
            **describe(runner, size, seq_len, batch, dtype),
            "rounds": len(times),
            "step_s": step_s,
            "step_s_min": min(times),
            "step_s_max": max(times),
            "step_s_all": times,
            "sequences_per_s": batch / step_s,
            "tokens_per_s": batch * seq_len / step_s,
            "first_over_this": statistics.median(per_round) if runner is not timed[0][0] else 1.0,
            "first_over_this_min": min(per_round),
            "first_over_this_max": max(per_round),
        }
        peak = peak_flops(device.device_kind, dtype, peak_override)
        if row.get("model_flops") and peak:
            row["mfu"] = row["model_flops"] / step_s / peak / jax.device_count()
        whole_step = "model_flops" in runner.info or runner.label.startswith("transformers")
        if (size, seq_len) in FULL_RUNS and whole_step:
            full_steps, full_batch = FULL_RUNS[(size, seq_len)]
            row["projected_hours_full_run"] = full_steps * full_batch * seq_len / row["tokens_per_s"] / 3600
        rows.append(row)
    return rows


def compile_only_row(factory: Callable[[], Runner], size, seq_len, batch, dtype) -> dict:
    runner = factory()
    row = describe(runner, size, seq_len, batch, dtype)
    runner.close()
    return row


MARKDOWN_HEADER = (
    "| impl | size | seq | batch | dtype | step ms (median [min-max]) | tokens/s | MFU | "
    "step mem GiB | compile s | first/this (median [min-max]) | full run h |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def markdown_row(r: dict) -> str:
    if r.get("error"):
        return (
            f"| {r['impl']} | {r['size']} | {r['seq_len']} | {r['batch']} | {r.get('dtype', '')} "
            f"| failed: {r['error']} | | | | | | |"
        )

    def fmt(key, spec, scale=1.0):
        return format(scale * r[key], spec) if r.get(key) is not None else "n/a"

    if "step_s" not in r:  # --compile_only
        return (
            f"| {r['impl']} | {r['size']} | {r['seq_len']} | {r['batch']} | {r['dtype']} | "
            f"compile only | | | {fmt('step_memory_gib', '.2f')} (temp {fmt('temp_gib', '.2f')}) | "
            f"{fmt('compile_s', '.1f')} | | |"
        )
    ratio = (
        f"{r['first_over_this']:.2f}x [{r['first_over_this_min']:.2f}-{r['first_over_this_max']:.2f}]"
        if r.get("first_over_this") not in (None, 1.0)
        else ""
    )
    return (
        f"| {r['impl']} | {r['size']} | {r['seq_len']} | {r['batch']} | {r['dtype']} | "
        f"{1000 * r['step_s']:.1f} [{1000 * r['step_s_min']:.1f}-{1000 * r['step_s_max']:.1f}] | "
        f"{r['tokens_per_s']:,.0f} | {fmt('mfu', '.1%')} | {fmt('step_memory_gib', '.2f')} | "
        f"{fmt('compile_s', '.1f')} | {ratio} | {fmt('projected_hours_full_run', '.1f')} |"
    )


def _parse_overrides(items):
    overrides = {}
    for item in items:
        key, value = item.split("=", 1)
        overrides[key] = json.loads(value)
    return overrides


def _factories(args, size, seq_len, batch, dtype, overrides):
    factories = []
    for name in args.ablations.split(",") if args.ablations else ["recipe"]:
        if name not in ABLATIONS:
            raise ValueError(f"--ablations: {name!r} is not one of {sorted(ABLATIONS)}")
        ablation_overrides, kind = ABLATIONS[name]
        config = bench_config(size, seq_len, batch, dtype, {**overrides, **ablation_overrides})
        label = "electra_jax" + ("" if name == "recipe" else f"+{name}")
        if kind.startswith("generator"):
            factories.append(
                lambda c=config, n=label, g=kind == "generator_gathered": prepare_generator_mlm(c, n, gathered=g)
            )
        else:
            factories.append(
                lambda c=config, n=label, h=kind == "train_host_sync": prepare_train_step(c, n, host_sync=h)
            )
    for variant in filter(None, args.hf.split(",")):
        factories.append(lambda v=variant: prepare_hf(size, seq_len, batch, v, dtype, args.warmup))
    return factories


def run_isolated(args, argv, size, seq_len) -> list[dict]:
    """This harness in a child process for one (size, seq); a crash (OOM) is a failed row."""
    out = args.out or f"/tmp/pretrain_step_{os.getpid()}.jsonl"
    before = _read_rows(out) if os.path.exists(out) else []
    child = subprocess.run(
        [
            sys.executable,
            os.path.abspath(__file__),
            *argv,
            f"--sizes={size}",
            f"--seqs={seq_len}",
            f"--out={out}",
            "--no-isolate",
        ],
        capture_output=True,
        text=True,
    )
    sys.stderr.write(child.stderr[-4000:] if child.returncode else "")
    rows = _read_rows(out)[len(before) :]
    if child.returncode:
        last_line = (child.stderr.strip().splitlines() or ["no output"])[-1][:160]
        rows.append(
            {
                "impl": "electra_jax",
                "size": size,
                "seq_len": seq_len,
                "batch": args.batch or default_batch(size, seq_len),
                "error": last_line,
            }
        )
    return rows


def _read_rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def default_batch(size: str, seq_len: int) -> int:
    return TOKENS_PER_STEP.get(size, DEFAULT_TOKENS_PER_STEP) // seq_len


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small")
    parser.add_argument("--seqs", default="128")
    parser.add_argument("--batch", type=int, default=0, help="global batch; 0 = 32768 tokens per step (large: 8192)")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on GPU/TPU, float32 on CPU")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed window")
    parser.add_argument("--rounds", type=int, default=3, help="timed windows per runner")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per runner first")
    parser.add_argument(
        "--hf", default="", help="comma list of transformers variants: eager,compiled,eager-gathered,compiled-gathered"
    )
    parser.add_argument(
        "--ablations",
        default="",
        help=f"comma list of fast-path runs instead of the recipe alone: {','.join(ABLATIONS)}",
    )
    parser.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="alternate runners round by round (default on CPU, off on accelerators)",
    )
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one process per (size, seq) (default on accelerators)",
    )
    parser.add_argument(
        "--compile_only",
        action="store_true",
        help="compile each JAX runner and report its compile time and XLA's memory "
        "analysis without timing steps (memory planning, compile-time studies)",
    )
    parser.add_argument("--peak_flops", type=float, default=None, help="override the device peak")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="config override section.key=json_value, e.g. model.remat_policy='\"full\"'",
    )
    parser.add_argument("--out", default="", help="append JSON lines here")
    parser.add_argument("--summarize", default="", help="print the Markdown table of a JSONL file and exit")
    args = parser.parse_args(argv)
    if args.compile_only and args.hf:
        parser.error("--compile_only times nothing; drop --hf (transformers has no compile step to report)")

    if args.summarize:
        print(MARKDOWN_HEADER)
        for row in _read_rows(args.summarize):
            print(markdown_row(row))
        return _read_rows(args.summarize)
    on_accelerator = jax.default_backend() != "cpu"
    dtype = args.dtype or ("bfloat16" if on_accelerator else "float32")
    interleave = (not on_accelerator) if args.interleave is None else args.interleave
    isolate = on_accelerator if args.isolate is None else args.isolate
    overrides = _parse_overrides(args.set)
    combos = [(size, int(seq)) for size in args.sizes.split(",") for seq in args.seqs.split(",")]
    rows = []
    print(MARKDOWN_HEADER, flush=True)
    for size, seq_len in combos:
        if isolate and len(combos) > 1:
            new_rows = run_isolated(args, argv, size, seq_len)
        else:
            batch = args.batch or default_batch(size, seq_len)
            factories = _factories(args, size, seq_len, batch, dtype, overrides)
            if args.compile_only:
                new_rows = [compile_only_row(factory, size, seq_len, batch, dtype) for factory in factories]
            else:
                timed = time_runners(factories, args.rounds, args.steps, args.warmup, interleave)
                new_rows = summarize(timed, size, seq_len, batch, dtype, args.peak_flops)
            for row in new_rows:
                row.update(interleaved=interleave, overrides=overrides)
                if interleave and row["impl"].startswith("transformers"):
                    row["step_memory_gib"] = None  # torch's peak would include the other runners
            if args.out:
                with open(args.out, "a", encoding="utf-8") as f:
                    f.writelines(json.dumps(r) + "\n" for r in new_rows)
        for row in new_rows:
            print(markdown_row(row), flush=True)
        rows += new_rows
    return rows


if __name__ == "__main__":
    main()
