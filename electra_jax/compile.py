"""Compile the real pretraining step for a TPU slice on any machine, without the TPU.

    python -m electra_jax.compile --config=configs/pretrain.py:base,v4-32 [--config.* overrides] \\
        [--topology=v5p-32] [--step=train|eval] [--out=FILE.json]

The step is the one `train` runs (`pretrain.jit_train_step` on a mesh of the slice's
devices), lowered and compiled by libtpu's own compiler for the slice the config's layout
names (`mesh.tpu_slice`, or --topology). The compiler's memory analysis says whether it fits
a chip; its cost analysis, the collectives in the optimized HLO and the chip's published
figures (tpu.CHIPS) give a roofline step time:

    roofline = max(FLOPs / peak FLOP/s, HBM bytes / HBM bandwidth) + collective bytes / all-reduce bandwidth

(collectives not overlapped; with everything overlapped the strict lower bound is the
largest of the three terms, `lower_bound_step_seconds`). That is a model, not a
measurement: real step time and MFU need the hardware. XLA's cost analysis counts a loop
body once (scanned layers, gradient microbatches), so where the step has loops the FLOPs
are the analytic model FLOPs (4/3 of them under full remat, which runs the forward twice;
the dots policies keep the matmuls' outputs; the JSON says which count was used), XLA's
HBM bytes are scaled by how much more the optimized HLO moves with every loop body counted
as often as it runs than with each once, and the collectives' bytes are summed from that
HLO with the same counts (`hlo.py`). Exits 1 with one line when the step does not fit.
"""

from __future__ import annotations

import re
import time
from typing import Any

from absl import app, flags
from etils import epath

from data_pipelines import errors, files
from electra_jax import cli

_CONFIG = cli.define_config_file(None, "configs/pretrain.py:SIZE,SLICE, e.g. configs/pretrain.py:base,v4-32.")
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice to compile for (tpu.SLICES); default: mesh.tpu_slice.")
_STEP = flags.DEFINE_enum("step", "train", ["train", "eval"], "Which step to compile.")
_OUT = flags.DEFINE_string("out", None, "Write the report as JSON here.")
_HLO = flags.DEFINE_string("hlo", None, "Write the optimized HLO text of the compiled step here.")
_SEARCH = flags.DEFINE_bool(
    "search", False, "Compile layouts over fsdp, remat and microbatches; print the fastest that fits (slow)."
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Leave the report in WORKDIR/compiled_step.json: train there checks its step against it."
)
flags.mark_flags_as_required(["config"])

STEPS = ("train", "eval")
# A JSON object with one of these keys is a report of ours (a compile's, a search's): --out may replace it.
REPORT_KEYS = ("per_device_bytes", "tried")


FIT_FIX = "lower train.batch_size, raise train.grad_accum_steps, or set model.remat_policy"


class DoesNotFitError(ValueError):
    """The compiled step needs more memory than a chip of the slice has."""


def compile_step(config, devices: list, step: str = "train"):
    """The jitted `step` of `config` lowered and compiled for `devices` (never run)."""
    import numpy as np

    from electra_jax import pretrain, sharding

    trainer = pretrain.make_pretrainer(config, sharding.make_mesh(config.mesh, devices))
    batch = pretrain.abstract_batch(trainer, step_sequences(config, step))
    state = pretrain.abstract_train_state(trainer)
    if step == "train":
        lowered = pretrain.jit_train_step(trainer).lower(state, batch)
    else:
        lowered = pretrain.jit_eval_step(trainer, config.train.eval_seed).lower(state, batch, np.int32(0))
    return lowered.compile()


def step_sequences(config, step: str) -> int:
    """Sequences in one call of the step: the global batch, or one microbatch for eval."""
    return config.train.batch_size // (1 if step == "train" else config.train.grad_accum_steps)


def _has_loops(config, step: str) -> bool:
    """Whether the step runs loops whose bodies XLA's cost analysis counts once."""
    return bool(config.model.get("scan_layers")) or (step == "train" and config.train.grad_accum_steps > 1)


def model_flops_per_chip(config, num_chips: int, step: str) -> float:
    """Analytic model FLOPs (flops.py) one chip does in one step: the eval step is one
    forward pass of one microbatch."""
    from electra_jax import flops

    per_step = flops.train_flops_per_step(config)
    if step == "eval":
        per_step /= 3 * config.train.grad_accum_steps
    return per_step / num_chips


def compiled_facts(compiled) -> dict[str, Any]:
    """What the compiler says of a compiled step: memory per device and XLA's cost counts."""
    from electra_jax import hlo

    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {
        "per_device_bytes": {
            "arguments": memory.argument_size_in_bytes,
            "temporaries": memory.temp_size_in_bytes,
            "outputs": memory.output_size_in_bytes,
            "aliased": memory.alias_size_in_bytes,
            "generated_code": memory.generated_code_size_in_bytes,
            "peak": hlo.peak_bytes(memory),
        },
        "xla_flops_per_step": float(cost.get("flops", 0.0)),
        "hbm_bytes_accessed": float(cost.get("bytes accessed", 0.0)),
    }


def report(config, facts: dict, hlo_text: str, slice_name: str, step: str) -> dict[str, Any]:
    """The figures of the module doc, per chip and per step, from the compiler's facts
    (`compiled_facts`) and the step's optimized HLO."""
    from electra_jax import hlo, tpu

    tpu_slice = tpu.get_slice(slice_name)
    chip = tpu.CHIPS[tpu_slice.chip]
    per_device = facts["per_device_bytes"]
    xla_flops, xla_bytes = facts["xla_flops_per_step"], facts["hbm_bytes_accessed"]
    model_flops = model_flops_per_chip(config, tpu_slice.chips, step)
    loops = _has_loops(config, step)
    if loops:  # XLA counted each loop body once: the model's FLOPs, and full remat's extra forward
        remat = 4 / 3 if step == "train" and config.model.remat_policy == "full" else 1.0
        flops_used, flops_source = model_flops * remat, "analytic (XLA counts loop bodies once)"
    else:
        flops_used, flops_source = xla_flops, "xla"
    # XLA's per-instruction count, scaled by how much the loops repeat the HLO's traffic.
    once = hlo.hbm_bytes(hlo_text, count_loops=False)
    bytes_used = xla_bytes * hlo.hbm_bytes(hlo_text) / once if loops and once else xla_bytes
    collectives = hlo.collective_bytes(hlo_text)
    seconds = {
        "compute": flops_used / chip.peak_bf16_flops,
        "hbm": bytes_used / chip.hbm_bytes_per_s,
        "collectives": collectives["allreduce_equivalent"] / chip.allreduce_bytes_per_s,
    }
    roofline = max(seconds["compute"], seconds["hbm"]) + seconds["collectives"]
    tokens = config.train.max_seq_length * step_sequences(config, step)
    return {
        "topology": tpu_slice.topology,
        "slice": slice_name,
        "step": step,
        "devices": tpu_slice.chips,
        "device_kind": chip.device_kind,
        "batch_per_device": config.train.batch_size // config.train.grad_accum_steps // tpu_slice.chips,
        **facts,
        "hbm_bytes": chip.hbm_bytes,
        "fits": per_device["peak"] <= chip.hbm_bytes,
        "hbm_headroom": 1 - per_device["peak"] / chip.hbm_bytes,
        "model_flops_per_step": model_flops,
        "roofline_flops_per_step": flops_used,
        "roofline_flops_source": flops_source,
        "roofline_hbm_bytes": bytes_used,
        "collective_bytes": {k: v for k, v in collectives.items() if k != "loops_of_unknown_trip_count"},
        "loops_of_unknown_trip_count": collectives["loops_of_unknown_trip_count"],
        "roofline_seconds": seconds,
        "roofline_step_seconds": roofline,
        # With compute, HBM traffic and collectives all overlapped: the strict lower bound.
        "lower_bound_step_seconds": max(seconds.values()),
        "bound": max(seconds, key=seconds.get),
        "mfu_ceiling": model_flops / chip.peak_bf16_flops / roofline if roofline else None,
        "tokens_per_s_ceiling": tokens / roofline if roofline else None,
        "chip": {
            "peak_bf16_flops": chip.peak_bf16_flops,
            "hbm_bytes_per_s": chip.hbm_bytes_per_s,
            "allreduce_bytes_per_s": chip.allreduce_bytes_per_s,
        },
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    from importlib import metadata

    import jax

    found = {"jax": jax.__version__}
    for package in ("libtpu", "libtpu-nightly"):
        try:
            found["libtpu"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def check_fits(result: dict, config) -> None:
    """Raises the one-line refusal of the module doc when the step does not fit a chip."""
    if result["fits"]:
        return
    gib = 2**30
    raise DoesNotFitError(
        f"{result['slice']} at batch {config.train.batch_size} x {config.train.max_seq_length} tokens needs "
        f"{result['per_device_bytes']['peak'] / gib:.1f} GiB per chip, the {result['device_kind']} chip has "
        f"{result['hbm_bytes'] / gib:.0f} GiB: {FIT_FIX}"
    )


def compile_for_slice(config, slice_name: str, step: str = "train", hlo_path: str | None = None) -> dict[str, Any]:
    """Compiles `step` of `config` for TPU slice `slice_name`; returns the report. With
    `hlo_path`, the optimized HLO text is written there too (to re-read it or inspect it)."""
    from electra_jax import tpu

    if step not in STEPS:
        raise ValueError(f"step={step!r}; choose one of {STEPS}")
    devices = tpu.slice_devices(slice_name)
    start = time.perf_counter()
    try:
        compiled = compile_step(config, devices, step)
    except Exception as error:  # libtpu refuses a program over HBM at compile time
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        raise DoesNotFitError(_out_of_memory(error, config, slice_name)) from None
    seconds = time.perf_counter() - start
    hlo_text = compiled.as_text()
    if hlo_path:
        files.write_text(hlo_path, hlo_text)
    result = report(config, compiled_facts(compiled), hlo_text, slice_name, step)
    return {**result, "compile_seconds": round(seconds, 1)}


# libtpu: "... HLO temporaries (40.96G) exceeds available HBM (15.75G)."
_OUT_OF_HBM = re.compile(r"\(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)")


def _out_of_memory(error: BaseException, config, slice_name: str) -> str:
    """The one line for a compile that ran out of HBM, with libtpu's figures when it gives them."""
    found = _OUT_OF_HBM.search(str(error))
    lines = [line for line in str(error).splitlines() if line.strip()]
    need = (
        f"needs {found.group(1)} GiB per chip for temporaries alone, the chip has {found.group(2)} GiB available"
        if found
        else f"does not fit a chip ({lines[0][:300] if lines else type(error).__name__})"
    )
    return f"{slice_name} at batch {config.train.batch_size} x {config.train.max_seq_length} tokens {need}: {FIT_FIX}"


# What --search varies, in the order it tries them: fewer microbatches and less remat are
# faster when they fit, so for each (fsdp, remat) the first microbatch count that fits wins.
SEARCH_FSDP = ("1", "all")
SEARCH_REMAT = ("none", "dots", "full")
SEARCH_GRAD_ACCUM = (1, 2, 4, 8, 16)
HEADROOM = 0.10  # HBM a chosen layout leaves free: the runtime's own buffers, fragmentation


def search(config, slice_name: str, log=print) -> tuple[dict, list[dict]]:
    """The layout with the least roofline step time that fits `slice_name` with HEADROOM,
    over SEARCH_*; returns (its overrides, every compiled candidate). The layers stay
    scanned: libtpu takes over 20 minutes to compile an unrolled 12-layer step here."""
    from electra_jax import tpu

    chips = tpu.get_slice(slice_name).chips
    tried = []
    for fsdp in SEARCH_FSDP:
        for remat in SEARCH_REMAT:
            for grad_accum in SEARCH_GRAD_ACCUM:
                overrides = {
                    "mesh.fsdp": chips if fsdp == "all" else 1,
                    "model.remat_policy": remat,
                    "train.grad_accum_steps": grad_accum,
                    "model.scan_layers": True,
                }
                microbatch = config.train.batch_size // grad_accum
                if config.train.batch_size % grad_accum or microbatch % chips:
                    continue
                candidate = config.copy_and_resolve_references()
                with candidate.unlocked():
                    candidate.mesh.data = -1
                    for key, value in overrides.items():
                        section, name = key.split(".")
                        candidate[section][name] = value
                try:
                    result = compile_for_slice(candidate, slice_name)
                except DoesNotFitError as error:
                    result = {"fits": False, "error": str(error)}
                fits = result["fits"] and result["hbm_headroom"] >= HEADROOM
                tried.append({"overrides": overrides, "fits_with_headroom": fits, **result})
                log(_search_row(tried[-1]))
                if fits:
                    break
    fitting = [entry for entry in tried if entry["fits_with_headroom"]]
    if not fitting:
        raise DoesNotFitError(
            f"no layout of {slice_name} tried fits with {HEADROOM:.0%} of HBM free (see the rows above): "
            "lower train.batch_size or use a larger slice"
        )
    best = min(fitting, key=lambda entry: entry["roofline_step_seconds"])
    return best["overrides"], tried


def _search_row(entry: dict) -> str:
    keys = ("mesh.fsdp", "model.remat_policy", "train.grad_accum_steps")
    fsdp, remat, microbatches = (entry["overrides"][key] for key in keys)
    layout = f"fsdp={fsdp:<4} remat={remat:<5} microbatches={microbatches:<3}"
    if "error" in entry:
        return f"{layout} does not fit: {entry['error']}"
    gib = 2**30
    return (
        f"{layout} {entry['per_device_bytes']['peak'] / gib:6.2f} GiB ({entry['hbm_headroom']:4.0%} free) "
        f"{entry['roofline_step_seconds'] * 1e3:8.1f} ms ({entry['bound']}) MFU ceiling {entry['mfu_ceiling']:.0%}"
    )


def table(result: dict) -> str:
    gib = 2**30
    memory = result["per_device_bytes"]
    seconds = result["roofline_seconds"]
    rows = [
        ("slice", f"{result['slice']} ({result['topology']}, {result['devices']} x {result['device_kind']})"),
        ("step", f"{result['step']}, {result['batch_per_device']} sequences per chip and microbatch"),
        (
            "memory per chip",
            f"{memory['peak'] / gib:.2f} GiB of {result['hbm_bytes'] / gib:.0f} GiB "
            f"({'fits' if result['fits'] else 'DOES NOT FIT'}, {result['hbm_headroom']:.0%} free)",
        ),
        ("  arguments / temporaries", f"{memory['arguments'] / gib:.2f} / {memory['temporaries'] / gib:.2f} GiB"),
        (
            "roofline step",
            f"{result['roofline_step_seconds'] * 1e3:.1f} ms, bound by {result['bound']} "
            f"(compute {seconds['compute'] * 1e3:.1f}, HBM {seconds['hbm'] * 1e3:.1f}, "
            f"collectives {seconds['collectives'] * 1e3:.1f} ms)",
        ),
        ("MFU ceiling", f"{result['mfu_ceiling']:.1%}"),
        ("tokens/s ceiling", f"{result['tokens_per_s_ceiling']:,.0f}"),
        ("FLOPs used", result["roofline_flops_source"]),
    ]
    return "\n".join(f"{name:<26} {value}" for name, value in rows)


def check_out(path: str | None) -> None:
    """Refuses --out naming an existing file other than one of our reports, before compiling."""
    if not path or not epath.Path(path).exists():
        return
    try:
        previous = files.read_json(path)
    except ValueError:  # not JSON, or not UTF-8: not ours
        previous = None
    if not (isinstance(previous, dict) and any(key in previous for key in REPORT_KEYS)):
        raise FileExistsError(
            f"--out={path} exists and is not a report of electra_jax.compile; give another --out, "
            "or move that file away"
        )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    check_out(_OUT.value)
    config = _CONFIG.value
    slice_name = _TOPOLOGY.value or config.mesh.get("tpu_slice")
    if not slice_name:
        raise ValueError(
            "no TPU slice to compile for: use a pod layout (--config=configs/pretrain.py:base,v4-32) "
            "or pass --topology=NAME"
        )
    if _SEARCH.value:
        best, tried = search(config, slice_name)
        if _OUT.value:
            files.write_json(_OUT.value, {"best": best, "tried": tried})
        print("fastest layout that fits: " + " ".join(f"--config.{key}={value}" for key, value in best.items()))
        return
    result = compile_for_slice(config, slice_name, _STEP.value, _HLO.value)
    if _OUT.value:
        files.write_json(_OUT.value, result)
    if _WORKDIR.value:
        from electra_jax import pretrain

        files.write_json(f"{_WORKDIR.value}/{pretrain.COMPILED_STEP_FILE}", result)
    print(table(result))
    check_fits(result, config)


def run():
    app.run(errors.one_line_errors(main), flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
