"""electra_jax.compile: the real train step compiled by libtpu's compiler for a TPU slice, on
this CPU, checked against figures computed here from the shapes and the shardings."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from configs import pretrain as recipes
from electra_jax import compile as compile_lib
from electra_jax import hlo, pretrain, sharding, tpu

pytest.importorskip("libtpu", reason="libtpu compiles for TPU topologies: pip install -e '.[test]' on linux x86_64")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLICE = "v5e-4"  # 4 chips of 16 GiB: the smallest slice with a data axis
BATCH = 16


def tiny_config(**changes):
    config = recipes.pretraining_config("tiny")
    config.train.batch_size = BATCH
    config.model.dtype = "bfloat16"
    for key, value in changes.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


@pytest.fixture(scope="module")
def compiled_tiny():
    config = tiny_config()
    return config, compile_lib.compile_for_slice(config, SLICE)


def test_the_report_has_every_figure(compiled_tiny):
    _, result = compiled_tiny
    for key in ("arguments", "temporaries", "outputs", "aliased", "peak"):
        assert result["per_device_bytes"][key] >= 0, key
    assert (result["topology"], result["devices"], result["device_kind"]) == ("v5e:2x2", 4, "TPU v5 lite")
    assert result["batch_per_device"] == BATCH // 4  # the data axis takes all 4 chips
    assert result["hbm_bytes"] == 16 * 2**30 and result["fits"]
    seconds = result["roofline_seconds"]
    assert result["roofline_step_seconds"] == pytest.approx(
        max(seconds["compute"], seconds["hbm"]) + seconds["collectives"]
    )
    assert 0 < result["mfu_ceiling"] <= 1
    assert result["tokens_per_s_ceiling"] == pytest.approx(BATCH * 128 / result["roofline_step_seconds"])
    assert result["roofline_flops_source"] == "xla"  # no scan, no microbatches: XLA's count stands


def test_arguments_are_the_sharded_state_and_batch(compiled_tiny):
    config, result = compiled_tiny
    mesh = sharding.make_mesh(config.mesh, tpu.slice_devices(SLICE))
    state = pretrain.abstract_train_state(pretrain.make_pretrainer(config, mesh))
    state_bytes = sum(
        math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
        for leaf in jax.tree_util.tree_leaves(state)
    )
    batch_bytes = len(pretrain.batch_keys(config)) * (BATCH // 4) * 128 * 4
    # TPU layouts pad small dimensions to (8, 128) tiles: a few percent more, never less.
    assert 1.0 <= result["per_device_bytes"]["arguments"] / (state_bytes + batch_bytes) <= 1.05


def test_collectives_and_flops_match_the_model(compiled_tiny):
    config, result = compiled_tiny
    params = pretrain.abstract_train_state(pretrain.make_pretrainer(config, sharding.make_mesh(config.mesh))).params
    gradient_bytes = sum(math.prod(leaf.shape) * 4 for leaf in jax.tree_util.tree_leaves(params))
    # Pure data parallelism: every step all-reduces the float32 gradients (and a few metrics).
    assert 1.0 <= result["collective_bytes"]["all-reduce"] / gradient_bytes <= 1.25
    # XLA counts every FLOP; the model count only the matmuls (flops.py): close, and below.
    assert 0.8 <= result["model_flops_per_step"] / result["xla_flops_per_step"] <= 1.0
    # Without loops, the HBM bytes summed from the HLO follow XLA's own count.
    assert result["roofline_hbm_bytes"] == pytest.approx(result["hbm_bytes_accessed"], rel=0.05)


def test_loop_bodies_are_counted_by_their_trip_counts():
    # A psum inside a 5-step scan: XLA's HLO holds one all-reduce; one run makes five.
    mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))

    def body(carry, _):
        return carry * 0.5 + jax.lax.psum(carry, "data"), None

    def step(x):
        return jax.lax.scan(body, x, None, length=5)[0]

    sharded = jax.shard_map(step, mesh=mesh, in_specs=PartitionSpec("data"), out_specs=PartitionSpec("data"))
    text = jax.jit(sharded).lower(jnp.ones((4, 256), jnp.float32)).compile().as_text()
    assert text.count(" all-reduce(") + text.count(" all-reduce-start(") == 1
    found = hlo.collective_bytes(text)
    assert found["all-reduce"] == 5 * 256 * 4  # each device's [1, 256] float32 shard, five times
    assert found["loops_of_unknown_trip_count"] == 0


def test_the_pallas_flash_attention_step_compiles_sharded_for_the_slice():
    # The Pallas TPU kernel runs per shard (shard_map) inside the scanned, fsdp-sharded step.
    changes = {"model.attention_impl": "pallas_tpu", "model.attention_dropout": 0.0, "model.scan_layers": True}
    # Mosaic refuses the "highest" matmul precision conftest asks for on bfloat16 operands.
    with jax.default_matmul_precision("default"):
        result = compile_lib.compile_for_slice(tiny_config(**changes, **{"mesh.fsdp": 2}), SLICE)
    assert result["fits"] and result["batch_per_device"] == BATCH // 4


def test_hbm_bytes_count_a_loop_body_as_often_as_it_runs():
    def five_steps(x):
        return jax.lax.scan(lambda carry, _: (jnp.sin(carry) * 2 + 1, None), x, None, length=5)[0]

    compiled = jax.jit(five_steps).lower(jnp.ones((1024,), jnp.float32)).compile()
    one_body = 2 * 1024 * 4  # the fused body reads and writes the [1024] float32 carry
    assert compiled.cost_analysis()["bytes accessed"] < 3 * one_body  # XLA: the body once
    assert 5 * one_body <= hlo.hbm_bytes(compiled.as_text()) <= 7 * one_body


def test_a_scanned_step_moves_about_what_the_same_step_unrolled_moves(compiled_tiny):
    # XLA counts the scanned body once; the loop-aware count stays near the unrolled step's.
    _, unrolled = compiled_tiny
    scanned = compile_lib.compile_for_slice(tiny_config(**{"model.scan_layers": True}), SLICE)
    assert scanned["roofline_flops_source"].startswith("analytic")
    assert 0.9 <= scanned["roofline_hbm_bytes"] / unrolled["hbm_bytes_accessed"] <= 1.4
    assert scanned["collective_bytes"]["all-reduce"] == pytest.approx(
        unrolled["collective_bytes"]["all-reduce"], rel=0.1
    )


def test_a_step_too_large_for_the_chip_is_one_line_and_exit_1(tmp_path):
    command = [
        sys.executable,
        "-m",
        "electra_jax.compile",
        "--config=configs/pretrain.py:tiny",
        f"--topology={SLICE}",
        "--config.model.vocab_size=16000000",  # a 16M-row embedding table: over 16 GiB per chip
        f"--out={tmp_path / 'report.json'}",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "v5e-4 at batch 32 x 128 tokens needs" in errors[0] and "lower train.batch_size" in errors[0]
    assert "Traceback" not in done.stderr


def test_out_refuses_a_file_that_is_not_a_report_of_ours_before_compiling(tmp_path):
    precious = tmp_path / "report_keep.json"
    precious.write_text("my precious report")
    command = [sys.executable, "-m", "electra_jax.compile", "--config=configs/pretrain.py:tiny", f"--topology={SLICE}"]
    command.append(f"--out={precious}")
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 1
    assert f"error: --out={precious} exists and is not a report of electra_jax.compile" in done.stderr
    assert precious.read_text() == "my precious report"
    for ours in ({"per_device_bytes": {"peak": 1}}, {"best": {}, "tried": []}):  # a compile's, a search's
        (tmp_path / "ours.json").write_text(json.dumps(ours))
        compile_lib.check_out(str(tmp_path / "ours.json"))
    (tmp_path / "other.json").write_text(json.dumps({"accuracy": 90.0}))
    with pytest.raises(FileExistsError, match="give another --out, or move that file away"):
        compile_lib.check_out(str(tmp_path / "other.json"))


def test_every_pod_layout_names_its_slice_and_an_unknown_slice_is_refused():
    for size, pod in recipes.POD_LAYOUTS:
        assert recipes.pod_config(size, pod).mesh.tpu_slice == pod
    with pytest.raises(ValueError, match="unknown TPU slice 'v9-8'"):
        tpu.get_slice("v9-8")


def test_megacore_slices_have_one_device_per_chip():
    # Cloud names count cores for v4 / v5p: a v4-32 is 16 chips, as JAX on it sees them.
    assert len(tpu.slice_devices("v4-32")) == 16
    assert len(tpu.slice_devices("v5p-32")) == 16


def test_report_json_round_trips(compiled_tiny):
    _, result = compiled_tiny
    assert json.loads(json.dumps(result)) == result


def test_search_keeps_the_fastest_layout_that_fits_with_headroom(monkeypatch):
    # The selection, on stand-in reports: memory falls with microbatches and remat, time rises.
    compiled = []

    def fake_compile(config, slice_name, step="train", hlo_path=None):
        layout = (config.mesh.fsdp, config.model.remat_policy, config.train.grad_accum_steps)
        compiled.append(layout)
        memory = 40 / config.train.grad_accum_steps / {"none": 1, "dots": 2, "full": 4}[layout[1]]
        if memory > 16:
            raise compile_lib.DoesNotFitError("out of HBM")
        seconds = 1 + 0.1 * config.train.grad_accum_steps + {"none": 0, "dots": 0.05, "full": 0.3}[layout[1]]
        seconds -= 0.01 * (config.mesh.fsdp > 1)
        return {
            "fits": True,
            "hbm_headroom": 1 - memory / 16,
            "roofline_step_seconds": seconds,
            "per_device_bytes": {"peak": memory * 2**30},
            "bound": "compute",
            "mfu_ceiling": 0.5,
        }

    monkeypatch.setattr(compile_lib, "compile_for_slice", fake_compile)
    best, tried = compile_lib.search(tiny_config(), SLICE, log=lambda row: None)
    # none fits from 4 microbatches (10 GiB, 38% free); dots from 2 (10 GiB); full at 1 (10 GiB).
    assert best == {
        "mesh.fsdp": 4,
        "model.remat_policy": "dots",
        "train.grad_accum_steps": 2,
        "model.scan_layers": True,
    }
    assert (1, "none", 8) not in compiled  # a fitting count ends that (fsdp, remat) row
    assert all(BATCH // accum % 4 == 0 for _, _, accum in compiled)  # 16 microbatches of 1 never tried
    monkeypatch.setattr(compile_lib, "HEADROOM", 0.99)
    with pytest.raises(compile_lib.DoesNotFitError, match="no layout of v5e-4 tried fits with 99% of HBM free"):
        compile_lib.search(tiny_config(), SLICE, log=lambda row: None)


def test_fsdp_gathers_the_weights_and_keeps_the_batch_sharded():
    # The activations' logical-axis constraints were silently dropped (flax reads the mesh
    # jax.set_mesh sets, not the one `with mesh:` sets), and a microbatch's rows were
    # regathered: every chip then computed the whole microbatch with fsdp-sharded weights and
    # all-reduced its activations (all-reduce bytes 4.5x the float32 gradients here). With
    # the batch kept sharded only the gradients are reduced, once a step; weights move by
    # all-gathers.
    config = tiny_config(**{"mesh.data": 1, "mesh.fsdp": 4, "train.grad_accum_steps": 2})
    result = compile_lib.compile_for_slice(config, SLICE)
    mesh = sharding.make_mesh(config.mesh, tpu.slice_devices(SLICE))
    params = pretrain.abstract_train_state(pretrain.make_pretrainer(config, mesh)).params
    gradient_bytes = sum(math.prod(leaf.shape) * 4 for leaf in jax.tree_util.tree_leaves(params))
    reduced = result["collective_bytes"]["all-reduce"]
    assert reduced <= 1.25 * gradient_bytes, (reduced / gradient_bytes, result["collective_bytes"])
    assert result["collective_bytes"]["all-gather"] > gradient_bytes  # the weights, gathered
