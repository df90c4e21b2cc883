"""Two JAX processes on this CPU (jax.distributed, gloo collectives) train like one.

Each process runs the real CLI (`python -m electra_jax.train`) with 2 local CPU devices
and JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, reads its own half of
the shards, and the pair must reproduce, step for step, a single process fed the same
global batches (process 0's rows first, then process 1's). The reference builds those
batches with the same reader told `process_index=p, process_count=2`, so if the two
processes read the same slice, or a global batch were assembled in another order, the
losses would differ.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import helpers
import jax
import numpy as np
import pytest

from configs import pretrain as recipes
from data_pipelines import build_shards
from data_pipelines import pretraining as data
from electra_jax import checkpoints, cli, init_from, presets, pretrain, sharding

pytestmark = pytest.mark.integration  # every test here runs subprocesses

PROCESSES, LOCAL_DEVICES = 2, 2
SEQ, GLOBAL_BATCH = 32, 8
# LLVM without optimisation compiles the train step 2-4x faster on this CPU; same math.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_shards(directory, num_files=4, examples_per_file=24, seed=0):
    """Random-token shards in build_shards' format: [CLS] A [SEP] B [SEP] plus padding."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for index in range(num_files):
        path = os.path.join(directory, f"train-{index:05d}-of-{num_files:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(examples_per_file):
                length = int(rng.integers(SEQ // 2, SEQ + 1))
                ids = [2, *rng.integers(5, 300, length - 3).tolist(), 3, 3]
                ids[length // 2] = 3
                segments = [0] * (length // 2 + 1) + [1] * (length - length // 2 - 1)
                pad = SEQ - length
                writer.write(
                    build_shards._serialize(
                        {
                            "input_ids": ids + [0] * pad,
                            "input_mask": [1] * length + [0] * pad,
                            "segment_ids": segments + [0] * pad,
                        }
                    )
                )
    return os.path.join(directory, "train-*.tfrecord")


def overrides(train_files, num_steps, **changes):
    return {
        "data.source": "tfrecord",
        "data.train_files": train_files,
        "data.shuffle_buffer": 16,
        "train.max_seq_length": SEQ,
        "train.batch_size": GLOBAL_BATCH,
        "objective.max_predictions_per_seq": presets.max_predictions_per_seq(0.15, SEQ),
        "train.num_steps": num_steps,
        "train.log_every": 1,
        "train.eval_every": 0,
        "train.checkpoint_every": 3,
        "train.tensorboard": False,
        "optim.warmup_steps": 2,
        # fsdp over all 4 devices: every process holds different parameter shards, so a
        # checkpoint is complete only if every process wrote its part.
        "mesh.data": 1,
        "mesh.fsdp": -1,
        # one layer and a small vocabulary: compiling is most of this test's time
        "model.num_layers": 1,
        "model.vocab_size": 512,
        **changes,
    }


def reference_config(train_files, num_steps, **changes):
    config = recipes.pretraining_config("tiny")
    for key, value in overrides(train_files, num_steps, **changes).items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_processes(workdir, train_files, num_steps, extra_args=(), **changes):
    """The same `python -m electra_jax.train` command in 2 processes; logs to files."""
    flags = [f"--config.{key}={value}" for key, value in overrides(train_files, num_steps, **changes).items()]
    command = ["electra_jax.train", f"--config={REPO}/configs/pretrain.py:tiny", f"--workdir={workdir}", *flags]
    return start_joined(workdir, lambda process_id: [*command, *extra_args])


def start_joined(logdir, module_args, processes=PROCESSES, local_devices=LOCAL_DEVICES):
    """`python -m <module_args(process_id)>` in `processes` processes joined by
    jax.distributed (a lone process gets no coordinator), `local_devices` CPU devices each;
    process p logs to logdir/process_<p>.log."""
    address = f"127.0.0.1:{free_port()}"
    procs = []
    for process_id in range(processes):
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "PYTHONPATH": REPO,
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={local_devices} "
            f"--xla_backend_optimization_level={FAST_COMPILE['xla_backend_optimization_level']}",
        }
        if processes > 1:
            env.update(
                JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(process_id)
            )
        log = open(os.path.join(logdir, f"process_{process_id}.log"), "ab")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", *module_args(process_id)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        )
        log.close()
    return procs


def wait_all(procs, workdir, timeout):
    """Waits for every process; kills all of them on a failure or timeout."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    codes = [proc.returncode for proc in procs]
    if any(codes):
        logs = "\n".join(f"--- process {i} (exit {code}):\n{read_tail(workdir, i)}" for i, code in enumerate(codes))
        raise AssertionError(f"multi-process run failed or timed out after {timeout}s:\n{logs}")


def read_tail(workdir, process_id, chars=3000):
    with open(os.path.join(workdir, f"process_{process_id}.log"), errors="replace") as f:
        return f.read()[-chars:]


def logged_train_steps(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [row for row in rows if row["split"] == "train"]


def wait_for_logged_steps(procs, workdir, steps, timeout=300):
    """Until the run has logged `steps` training steps; fails (killing all) if it ends or stalls first."""
    deadline = time.monotonic() + timeout
    while not (os.path.exists(os.path.join(workdir, "metrics.jsonl")) and len(logged_train_steps(workdir)) >= steps):
        if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
            wait_all(procs, workdir, timeout=1)
            raise AssertionError(f"the run ended or stalled before step {steps}")
        time.sleep(0.2)


def reference_run(config, num_steps):
    """One process on one device, fed the concatenation of the two hosts' batches.
    Returns the trainer, the losses and the host parameters after every step."""
    trainer = pretrain.make_pretrainer(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
    state = pretrain.init_train_state(trainer)
    if init_from.is_set(config):
        state = pretrain.start_from_source(trainer, state)
    hosts = [
        data.make_pretraining_iterator(
            config.data.train_files,
            batch_size=GLOBAL_BATCH // PROCESSES,
            seq_length=SEQ,
            seed=config.train.seed,
            shuffle_buffer=config.data.shuffle_buffer,
            process_index=p,
            process_count=PROCESSES,
        )
        for p in range(PROCESSES)
    ]
    step_fn, losses, params = None, [], {}
    for _ in range(num_steps):
        host_batches = [next(host) for host in hosts]
        batch = {key: np.concatenate([b[key] for b in host_batches]) for key in host_batches[0]}
        batch = data.to_global_batch(batch, sharding.batch_sharding(trainer.mesh))
        step_fn = step_fn or pretrain.jit_train_step(trainer).lower(state, batch).compile(FAST_COMPILE)
        state, metrics = step_fn(state, batch)
        losses.append(float(metrics["loss"]))
        params[int(state.step)] = jax.device_get(state.params)
    return trainer, np.array(losses), params


NUM_STEPS, FIRST_STOP = 6, 3


@pytest.fixture(scope="module")
def train_files(tmp_path_factory):
    return write_shards(str(tmp_path_factory.mktemp("shards")))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, train_files):
    """Two processes train steps 1-3 of a 6-step run and stop with a checkpoint; the
    single-process reference (all 6 steps) is computed while they run."""
    workdir = str(tmp_path_factory.mktemp("multihost") / "run")
    os.makedirs(workdir)
    procs = start_processes(workdir, train_files, NUM_STEPS, [f"--stop_at_step={FIRST_STOP}"])
    try:
        reference = reference_run(reference_config(train_files, NUM_STEPS), NUM_STEPS)
    finally:
        wait_all(procs, workdir, timeout=300)
    return workdir, train_files, reference


def restore_single_process(workdir, trainer, step):
    ckpt = checkpoints.Checkpointer(workdir, save_every=FIRST_STOP, keep=3)
    try:
        return ckpt.all_steps(), ckpt.restore(step, pretrain.abstract_train_state(trainer))
    finally:
        ckpt.close()


def assert_params_close(state, ref_params):
    for got, want in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(ref_params)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.mark.slow  # ~80 CPU-s (3 compiles): 140-170 s wall on the shared 2-core machine
def test_two_processes_train_and_save_like_one(first_run):
    workdir, _, (trainer, ref_losses, ref_params) = first_run
    logged = logged_train_steps(workdir)
    # Only process 0 writes metrics: one row per step, not two.
    assert [row["step"] for row in logged] == list(range(1, FIRST_STOP + 1))
    # 4 fsdp shards over 2 processes sum in another order than one device: round-off only.
    np.testing.assert_allclose([row["loss"] for row in logged], ref_losses[:FIRST_STOP], rtol=1e-5)
    # Every process saved its own input-pipeline position beside the checkpoint.
    assert sorted(os.listdir(os.path.join(workdir, "data_state", str(FIRST_STOP)))) == [
        f"{data.STATE_PREFIX}.process_{p:05d}-of-00002.{suffix}"
        for p in range(PROCESSES)
        for suffix in ("data-00000-of-00001", "files.json", "index")
    ]
    # The parameters are fsdp-sharded across both processes, so this restore (one process,
    # another device layout) succeeds only if each process wrote its own shards.
    steps, restored = restore_single_process(workdir, trainer, FIRST_STOP)
    assert steps == [FIRST_STOP] and int(restored.step) == FIRST_STOP
    assert_params_close(restored, ref_params[FIRST_STOP])


@pytest.mark.slow
def test_two_processes_resume_like_one(first_run):
    workdir, train_files, (trainer, ref_losses, ref_params) = first_run
    # A fresh pair of processes restores step 3 (each its shards and its data position).
    wait_all(start_processes(workdir, train_files, NUM_STEPS), workdir, timeout=300)
    assert all("restored step 3" in read_tail(workdir, p, chars=10**6) for p in range(PROCESSES))
    logged = logged_train_steps(workdir)
    assert [row["step"] for row in logged] == list(range(1, NUM_STEPS + 1))
    np.testing.assert_allclose([row["loss"] for row in logged], ref_losses, rtol=1e-5)
    steps, restored = restore_single_process(workdir, trainer, NUM_STEPS)
    assert steps == [FIRST_STOP, NUM_STEPS]
    assert_params_close(restored, ref_params[NUM_STEPS])


@pytest.mark.slow
def test_two_processes_start_from_another_run_like_one(first_run, tmp_path):
    """init.workdir on two hosts: each process places its fsdp shards of the source's
    step-3 weights under a fresh optimizer and schedule, as one process does. Were init
    ignored on either host, its losses would be those of random init."""
    source, train_files, _ = first_run
    init = {"init.workdir": source, "init.step": FIRST_STOP}
    workdir = str(tmp_path / "continued")
    os.makedirs(workdir)
    procs = start_processes(workdir, train_files, FIRST_STOP, **init)
    try:
        _, ref_losses, _ = reference_run(reference_config(train_files, FIRST_STOP, **init), FIRST_STOP)
    finally:
        wait_all(procs, workdir, timeout=300)
    logged = logged_train_steps(workdir)
    assert [row["step"] for row in logged] == list(range(1, FIRST_STOP + 1))
    np.testing.assert_allclose([row["loss"] for row in logged], ref_losses, rtol=1e-5)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["init"]["workdir"] == source


@pytest.mark.slow
def test_sigterm_to_one_process_stops_all_at_one_checkpoint(tmp_path, train_files):
    # A preempted TPU VM or a SLURM requeue may signal the processes at different steps.
    # JAX's preemption sync manager agrees on one step for all; a process that stopped on
    # its own would leave the others blocked in the next step's collectives.
    workdir = str(tmp_path)
    procs = start_processes(workdir, train_files, 10_000, **{"train.checkpoint_every": 1000})
    wait_for_logged_steps(procs, workdir, 2)
    procs[1].send_signal(signal.SIGTERM)
    wait_all(procs, workdir, timeout=180)
    ckpt = checkpoints.Checkpointer(workdir, save_every=1000, keep=3)
    try:
        steps = ckpt.all_steps()
    finally:
        ckpt.close()
    assert len(steps) == 1 and 2 <= steps[0] < 10_000, steps
    for p in range(PROCESSES):
        assert f"stopped at step {steps[0]} after a preemption signal" in read_tail(workdir, p, 10**6)
    assert len(os.listdir(os.path.join(workdir, "data_state", str(steps[0])))) == 3 * PROCESSES


@pytest.mark.slow
def test_a_killed_process_stops_the_other_at_once_with_one_line_and_a_rerun_resumes(tmp_path, train_files):
    # The survivor printed a Gloo traceback, then waited ~80 s on the lost heartbeat in
    # jax.distributed's shutdown barrier and aborted with a C++ stack trace. Under load its
    # collective may instead block until that heartbeat times out, and JAX aborts it with
    # its own message: no Python code runs then. Either way the rerun resumes exactly.
    workdir = str(tmp_path)
    num_steps = 30
    procs = start_processes(workdir, train_files, num_steps)
    wait_for_logged_steps(procs, workdir, 4)
    procs[1].kill()
    killed_at = time.monotonic()
    code = procs[0].wait(timeout=240)
    survivor = read_tail(workdir, 0, 10**6)
    if code == 1:  # its next collective failed (connection reset): reported by run_loop
        assert time.monotonic() - killed_at < 30
        assert "error: process 0 of 2: a collective with the other processes failed at step" in survivor
        assert re.search(r"its checkpoint of step \d+ is intact\. Start all 2 processes again with the same", survivor)
        assert "Traceback" not in survivor and "Check failure" not in survivor
    else:  # blocked in a collective until jax.distributed's heartbeat timeout aborted it, in C++
        assert "another task died" in survivor, survivor[-3000:]
    wait_all(start_processes(workdir, train_files, num_steps), workdir, timeout=300)
    assert [row["step"] for row in logged_train_steps(workdir)] == list(range(1, num_steps + 1))


def test_coordinator_without_process_count_is_refused(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES not; set both"):
        cli.maybe_initialize_distributed()


@pytest.mark.parametrize(
    "env, expected",
    [
        (
            {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"},
            (("10.0.0.1:1234",), {"num_processes": 4, "process_id": 3}),
        ),
        ({"SLURM_NTASKS": "16"}, ((), {})),  # JAX reads the SLURM variables itself
        ({"OMPI_COMM_WORLD_SIZE": "2"}, ((), {})),
        ({"SLURM_NTASKS": "1"}, None),  # one process: no distributed runtime at all
        ({}, None),
    ],
)
def test_distributed_initialization_is_chosen_from_the_environment(monkeypatch, env, expected):
    for name in (
        "JAX_COORDINATOR_ADDRESS",
        "JAX_NUM_PROCESSES",
        "JAX_PROCESS_ID",
        "SLURM_NTASKS",
        "OMPI_COMM_WORLD_SIZE",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    cli.maybe_initialize_distributed()
    assert calls == ([] if expected is None else [expected])


# ---------------------------------------------------------------------------- fine-tuning

FINETUNE_WORDS = "the cat sat on a mat dog ran far away it rained was dry he left early".split()


def write_mrpc(root):
    """MRPC-format TSVs of random sentences: 32 train, 16 dev and 8 test pairs."""
    rng = np.random.default_rng(0)

    def sentence():
        return " ".join(rng.choice(FINETUNE_WORDS, int(rng.integers(3, 7))))

    os.makedirs(os.path.join(root, "MRPC"))
    for split, n in (("train", 32), ("dev", 16), ("test", 8)):
        first = "index" if split == "test" else "Quality"
        lines = [f"{first}\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        for i in range(n):
            lines.append(f"{i if split == 'test' else rng.integers(2)}\t{i}\t{i + 100}\t{sentence()}\t{sentence()}")
        with open(os.path.join(root, "MRPC", f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


def finetune_args(init, glue_dir, workdir):
    return [
        "electra_jax.finetune",
        f"--config={REPO}/configs/glue.py",
        "--config.task=mrpc",
        f"--config.init={init}",
        f"--config.data_dir={glue_dir}",
        "--config.source=tsv",
        "--config.batch_size=8",
        "--config.eval_batch_size=8",
        "--config.max_seq_length=16",
        "--config.num_epochs=2",
        "--config.optim.learning_rate=1e-3",
        "--config.optim.layerwise_lr_decay=0.8",
        "--config.seeds=2",
        "--config.log_every=1",
        "--config.tensorboard=False",
        f"--workdir={workdir}",
    ]


def files_under(directory):
    return sorted(
        os.path.relpath(os.path.join(d, name), directory) for d, _, names in os.walk(directory) for name in names
    )


@pytest.mark.slow  # 3 processes compile a tiny classifier: ~60-120 s wall on the shared 2-core machine
def test_two_process_fine_tuning_matches_one_process(tmp_path):
    init, glue_dir = str(tmp_path / "init"), str(tmp_path / "glue")
    os.makedirs(init)
    helpers.write_hf_model(init, FINETUNE_WORDS, seed=1)
    write_mrpc(glue_dir)
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir(), one.mkdir()
    # The pair shares its --workdir (checkpoints are written by both), as hosts share gs://.
    pair = start_joined(str(two), lambda p: finetune_args(init, glue_dir, str(two / "out_0")))
    # The reference: one process with the pair's 4 devices, so the mesh and its sums are the same.
    single = start_joined(
        str(one), lambda p: finetune_args(init, glue_dir, str(one / "out")), processes=1, local_devices=4
    )
    wait_all(pair, str(two), timeout=600)
    wait_all(single, str(one), timeout=600)

    # the same files, but for the checkpoints' parts, which each process writes of its own
    written = [name for name in files_under(two / "out_0") if "/checkpoints/" not in name]
    assert written == [name for name in files_under(one / "out") if "/checkpoints/" not in name]
    for run in (two / "out_0", one / "out"):
        assert os.listdir(run / "mrpc" / "seed_1" / "checkpoints") == ["16"]  # the last step, kept
    assert not [name for name in written if name.endswith(".tmp")]
    for seed in (0, 1):  # save_models: one transformers directory per run, tokenizer included
        assert {"config.json", "vocab.txt"} <= set(os.listdir(two / "out_0" / "mrpc" / f"seed_{seed}"))
    got = json.loads((two / "out_0" / "results.json").read_text())["tasks"]["mrpc"]["runs"]
    want = json.loads((one / "out" / "results.json").read_text())["tasks"]["mrpc"]["runs"]
    # every step logged, once: 32 pairs in both orders, 2 epochs, batch 8
    assert [len(run["log"]) for run in got] == [2 * 2 * 32 // 8] * 2
    for got_run, want_run in zip(got, want):
        np.testing.assert_allclose([e["loss"] for e in got_run["log"]], [e["loss"] for e in want_run["log"]], rtol=1e-5)
        for name, value in want_run["dev"]["mrpc"].items():
            assert got_run["dev"]["mrpc"][name] == pytest.approx(value, abs=1e-4), name
    assert (two / "out_0" / "submission" / "MRPC.tsv").read_text() == (
        one / "out" / "submission" / "MRPC.tsv"
    ).read_text()


@pytest.mark.slow  # two processes start and join (no compile)
def test_processes_given_different_workdirs_are_refused_before_anything_is_written(tmp_path):
    # Each process writes its part of every checkpoint into the workdir: with one each, the
    # first save would wait forever for the other's part.
    init, glue_dir = str(tmp_path / "init"), str(tmp_path / "glue")
    os.makedirs(init)
    helpers.write_hf_model(init, FINETUNE_WORDS, seed=1)
    write_mrpc(glue_dir)
    pair = start_joined(str(tmp_path), lambda p: finetune_args(init, glue_dir, str(tmp_path / f"out_{p}")))
    with pytest.raises(AssertionError, match="give every process the same --workdir"):
        wait_all(pair, str(tmp_path), timeout=300)
    assert not os.path.exists(tmp_path / "out_0") and not os.path.exists(tmp_path / "out_1")
