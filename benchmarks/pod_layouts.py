"""Every POD_LAYOUTS entry of configs/pretrain.py compiled for its TPU slice at 128 and 512 tokens
(electra_jax.compile, libtpu's compiler on this CPU): the table in BENCHMARKS.md.

    python benchmarks/pod_layouts.py --out=benchmarks/results/pod_layouts [--size=base] [--pod=v4-32] [--seq=512] \\
        [--hlo_dir=DIR] [--reanalyze]

Each (size, pod, seq) writes OUT/<size>_<pod>_<seq>.json, and is skipped when that file
exists, so a stopped run resumes; OUT/table.md is rebuilt from every JSON there. A layout
that does not fit is recorded with its one-line error, not dropped.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import pretrain as recipes
from data_pipelines import files  # noqa: E402
from electra_jax import compile as compile_lib  # noqa: E402
from electra_jax import presets  # noqa: E402

GIB = 2**30
SEQ_LENGTHS = (128, 512)


def layout_config(size: str, pod: str, seq: int):
    config = recipes.pod_config(size, pod)
    config.train.max_seq_length = seq
    config.objective.max_predictions_per_seq = presets.max_predictions_per_seq(0.15, seq)
    return config


def compile_layout(size: str, pod: str, seq: int, hlo_path: str | None = None) -> dict:
    config = layout_config(size, pod, seq)
    entry = {
        "size": size,
        "pod": pod,
        "seq": seq,
        "batch": config.train.batch_size,
        "grad_accum_steps": config.train.grad_accum_steps,
        "fsdp": config.mesh.fsdp,
        "remat_policy": config.model.remat_policy,
    }
    try:
        result = compile_lib.compile_for_slice(config, pod, hlo_path=hlo_path)
        compile_lib.check_fits(result, config)
    except compile_lib.DoesNotFitError as error:
        return {**entry, "error": str(error)}
    return {**entry, **result}


def reanalyze(out_dir: str, hlo_dir: str) -> None:
    """Recomputes every entry's figures from the compiler's recorded facts and its kept
    HLO (the memory and XLA's counts do not change; how the HLO is read may)."""
    for path in sorted(glob.glob(os.path.join(out_dir, "*.json"))):
        entry = files.read_json(path)
        hlo_path = os.path.join(hlo_dir, os.path.basename(path)[: -len(".json")] + ".hlo")
        if "error" in entry or not os.path.exists(hlo_path):
            continue
        config = layout_config(entry["size"], entry["pod"], entry["seq"])
        facts = {key: entry[key] for key in ("per_device_bytes", "xla_flops_per_step", "hbm_bytes_accessed")}
        with open(hlo_path, encoding="utf-8") as f:
            result = compile_lib.report(config, facts, f.read(), entry["pod"], "train")
        files.write_json(path, {**entry, **result})


def table_row(entry: dict) -> str:
    layout = (
        f"| {entry['size']} | {entry['pod']} | {entry['seq']} | {entry['batch']} | {entry['grad_accum_steps']} | "
        f"{entry['fsdp']} | {entry['remat_policy']} |"
    )
    if "error" in entry:
        return layout + f" does not fit: {entry['error']} | | | | |"
    memory = entry["per_device_bytes"]["peak"] / GIB
    return (
        layout + f" {memory:.1f} / {entry['hbm_bytes'] / GIB:.0f} | {entry['roofline_step_seconds'] * 1e3:.1f} "
        f"({entry['bound']}) | {entry['mfu_ceiling']:.0%} | {entry['tokens_per_s_ceiling']:,.0f} | "
        f"{entry['compile_seconds']:.0f} |"
    )


def write_table(out_dir: str) -> str:
    entries = [files.read_json(path) for path in glob.glob(os.path.join(out_dir, "*.json"))]
    order = {key: i for i, key in enumerate(recipes.POD_LAYOUTS)}
    entries.sort(key=lambda e: (order.get((e["size"], e["pod"]), len(order)), e["seq"]))
    header = (
        "| size | slice | seq | batch | microbatches | fsdp | remat | peak GiB / HBM per chip | "
        "roofline step ms (bound) | MFU ceiling | tokens/s ceiling | compile s |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    text = header + "".join(table_row(entry) + "\n" for entry in entries)
    files.write_text(os.path.join(out_dir, "table.md"), text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--size")
    parser.add_argument("--pod")
    parser.add_argument("--seq", type=int, choices=SEQ_LENGTHS)
    parser.add_argument("--hlo_dir", help="also keep each compiled step's optimized HLO text here")
    parser.add_argument(
        "--reanalyze", action="store_true", help="recompute OUT's figures from --hlo_dir; compile nothing"
    )
    args = parser.parse_args(argv)
    if args.reanalyze:
        reanalyze(args.out, args.hlo_dir)
        print(write_table(args.out))
        return
    for size, pod in recipes.POD_LAYOUTS:
        for seq in SEQ_LENGTHS:
            if (args.size or size, args.pod or pod, args.seq or seq) != (size, pod, seq):
                continue
            path = os.path.join(args.out, f"{size}_{pod}_{seq}.json")
            if os.path.exists(path):
                continue
            hlo_path = os.path.join(args.hlo_dir, f"{size}_{pod}_{seq}.hlo") if args.hlo_dir else None
            entry = compile_layout(size, pod, seq, hlo_path)
            files.write_json(path, entry)
            print(table_row(entry), flush=True)
    print(write_table(args.out))


if __name__ == "__main__":
    main()
