"""The pretraining loop end to end: exact resume, SIGTERM and SIGKILL mid-save, evaluate,
export to transformers, refused workdirs, TensorBoard, the CLI's config overrides.

Every run trains the same tiny model on real TFRecord shards that data_pipelines builds
here, so the tf.data iterator state (shuffle buffer, epoch position) is part of each resume.
The runs share one persistent XLA compilation cache with the `python -m electra_jax.train`
subprocesses (same device count and matmul precision), so the module pays for compiling
the train and eval steps once; every later run, in-process or not, pays only for its steps.
"""

import ast
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import write_corpus

from configs import pretrain as recipes
from data_pipelines import build_shards as build_lib
from data_pipelines import tokenizer as tokenizer_lib
from electra_jax import checkpoints, evaluate, export, hlo, model, presets, pretrain

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ, BATCH = 32, 8
SCHEDULE_STEPS = 100  # the LR schedule's length; runs end earlier with stop_at_step
REFERENCE_STEPS = 10
TIMING_KEYS = {"step_time_s", "tokens_per_s", "mfu"}  # wall-clock numbers, differ run to run
# a transformers model directory with the tokenizer files AutoTokenizer reads
EXPORT_FILES = ["config.json", "model.safetensors", "spm.model", "tokenizer.json", "tokenizer_config.json"]
SUBPROCESS_TIMEOUT_S = 300  # a cold compile on a loaded 2-core machine; normally ~30 s


pytestmark = pytest.mark.usefixtures("compile_cache")  # conftest: one XLA cache per module


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    corpus = str(root / "corpus.txt")
    write_corpus(corpus, sentences_per_document=16)  # < REFERENCE_STEPS * BATCH examples
    tokenizer = tokenizer_lib.train_sentencepiece(corpus, str(root / "spm.model"), vocab_size=200)
    build_lib.build_shards(
        corpus,
        str(root / "shards"),
        tokenizer_path=tokenizer.path,
        max_seq_length=SEQ,
        num_shards=2,
        num_eval_shards=1,
        show_progress=False,
    )
    files = {
        "train_files": str(root / "shards" / "train-*.tfrecord"),
        "eval_files": str(root / "shards" / "eval-*.tfrecord"),
    }
    # The runs read more than one epoch (so a resume must restore the reshuffle), and the
    # evaluation's 2 batches fit in the held-out shard.
    assert count_records(files["train_files"]) < REFERENCE_STEPS * BATCH
    assert count_records(files["eval_files"]) >= 2 * BATCH
    return {**files, "tokenizer": tokenizer.path, "vocab_size": tokenizer.vocab_size}


def count_records(pattern) -> int:
    import tensorflow as tf

    return sum(1 for _ in tf.data.TFRecordDataset(sorted(glob.glob(pattern))))


@pytest.fixture(scope="module")
def settings(shards):
    """The run's overrides of configs/pretrain.py:tiny, as the CLI and in-process runs take them."""
    return {
        "model.num_layers": 1,  # compiles in half the time of 2; the loop does not care
        "model.vocab_size": shards["vocab_size"],
        "objective.max_predictions_per_seq": presets.max_predictions_per_seq(0.15, SEQ),
        "optim.warmup_steps": 3,
        "train.max_seq_length": SEQ,
        "train.batch_size": BATCH,
        "train.num_steps": SCHEDULE_STEPS,
        "train.log_every": 1,
        "train.eval_every": 4,
        "train.eval_steps": 2,
        "train.checkpoint_every": 2,
        "train.keep_checkpoints": 3,
        "data.source": "tfrecord",
        "data.train_files": shards["train_files"],
        "data.eval_files": shards["eval_files"],
        "data.tokenizer": shards["tokenizer"],
        "data.shuffle_buffer": 32,  # ~64 training examples: the buffer and epochs both matter
    }


def make_config(settings, **changes):
    config = recipes.pretraining_config("tiny")
    for key, value in {**settings, **changes}.items():
        section, name = key.split(".")
        config[section][name] = value
    config.lock()
    return config


def cli_args(settings, workdir):
    return [f"--config={REPO}/configs/pretrain.py:tiny", f"--workdir={workdir}"] + [
        f"--config.{key}={value}" for key, value in settings.items()
    ]


def subprocess_env(cache_dir, **extra):
    """The test process's jax set-up (8 CPU devices, highest matmul precision) and its
    compilation cache, so a subprocess compiles the same programs, or loads them."""
    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": cache_dir,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        **extra,
    }
    if jax.config.jax_default_matmul_precision is not None:
        env["JAX_DEFAULT_MATMUL_PRECISION"] = str(jax.config.jax_default_matmul_precision)
    return env


def start(args, log_path, cache_dir, **extra_env):
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=subprocess_env(cache_dir, **extra_env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log_path = log.name
    return proc


def output(proc) -> str:
    with open(proc.log_path, encoding="utf-8", errors="replace") as f:
        return f.read()


def wait_for(condition, proc, what: str, timeout: float = SUBPROCESS_TIMEOUT_S) -> None:
    """Polls `condition` until it holds; fails with the subprocess's log otherwise."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before {what}:\n{output(proc)[-5000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} after {timeout} s:\n{output(proc)[-5000:]}")
        time.sleep(0.05)


def logged_rows(workdir, split) -> dict[int, list[dict]]:
    """step -> every row metrics.jsonl holds for it (one, unless a writer doubled it)."""
    rows = {}
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["split"] == split:
                rows.setdefault(row["step"], []).append({k: v for k, v in row.items() if k not in TIMING_KEYS})
    return rows


def saved_steps(workdir) -> list[int]:
    ckpt = checkpoints.Checkpointer(workdir, save_every=1, keep=None, read_only=True)
    try:
        return ckpt.all_steps()
    finally:
        ckpt.close()


def saved_params(config, workdir, step):
    _, state = pretrain.restore_train_state(config, workdir, step)
    assert int(state.step) == step
    return jax.device_get(state.params)


def assert_bitwise_equal(params, expected) -> None:
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(expected)
    for got, want in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_array_equal(got, want)


def assert_replays_reference(workdir, reference_rows, steps) -> None:
    """Every train row logged for `steps` equals the uninterrupted run's row, bit for bit."""
    rows = logged_rows(workdir, "train")
    for step in steps:
        assert rows.get(step), f"step {step} was never logged in {workdir}"
        for row in rows[step]:
            assert row == reference_rows[step][0], f"step {step} differs from the uninterrupted run"


def file_digests(root) -> dict[str, str]:
    digests = {}
    for path in sorted(glob.glob(os.path.join(root, "**"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def reference(tmp_path_factory, settings):
    """The uninterrupted run: REFERENCE_STEPS steps in one go."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    config = make_config(settings)
    result = pretrain.train_and_evaluate(config, workdir, stop_at_step=REFERENCE_STEPS)
    return {
        "workdir": workdir,
        "config": config,
        "result": result,
        "train_rows": logged_rows(workdir, "train"),
        "eval_rows": logged_rows(workdir, "eval"),
        "params": saved_params(config, workdir, REFERENCE_STEPS),
    }


def test_reference_run_logs_and_keeps_the_last_checkpoints(reference):
    assert reference["result"]["step"] == REFERENCE_STEPS
    assert sorted(reference["train_rows"]) == list(range(1, REFERENCE_STEPS + 1))
    assert all(len(rows) == 1 for rows in reference["train_rows"].values())
    assert sorted(reference["eval_rows"]) == [4, 8, REFERENCE_STEPS]  # every 4 steps, and the end
    assert saved_steps(reference["workdir"]) == [6, 8, 10]  # every 2 steps, keep 3
    # the data-iterator states of deleted checkpoints go with them
    assert sorted(os.listdir(os.path.join(reference["workdir"], "data_state"))) == ["10", "6", "8"]
    losses = [reference["train_rows"][step][0]["loss"] for step in range(1, REFERENCE_STEPS + 1)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    with open(os.path.join(reference["workdir"], "config.json")) as f:
        assert json.load(f) == json.loads(reference["config"].to_json_best_effort(sort_keys=True))


def test_stop_and_resume_replays_the_uninterrupted_run_bitwise(tmp_path, reference, settings):
    workdir = str(tmp_path)
    config = make_config(settings)
    first = pretrain.train_and_evaluate(config, workdir, stop_at_step=3)
    assert first["step"] == 3 and saved_steps(workdir) == [2, 3]  # the stop saved off-interval
    second = pretrain.train_and_evaluate(config, workdir, stop_at_step=REFERENCE_STEPS)
    assert second["step"] == REFERENCE_STEPS
    assert_bitwise_equal(saved_params(config, workdir, REFERENCE_STEPS), reference["params"])
    rows = logged_rows(workdir, "train")
    assert sorted(rows) == list(range(1, REFERENCE_STEPS + 1))  # each step once: nothing replayed
    assert_replays_reference(workdir, reference["train_rows"], range(1, REFERENCE_STEPS + 1))
    eval_rows = logged_rows(workdir, "eval")
    assert sorted(eval_rows) == [3, 4, 8, REFERENCE_STEPS]  # the stop evaluates too
    for step in (4, 8, REFERENCE_STEPS):
        assert eval_rows[step] == reference["eval_rows"][step]
    assert second["train"]["loss"] == reference["result"]["train"]["loss"]


@pytest.mark.integration
def test_sigterm_saves_exits_zero_and_the_run_resumes(tmp_path, reference, settings, compile_cache):
    workdir = str(tmp_path / "run")
    # No --stop_at_step: left alone it would train all SCHEDULE_STEPS steps.
    proc = start(["-m", "electra_jax.train", *cli_args(settings, workdir)], tmp_path / "log", compile_cache)
    metrics = os.path.join(workdir, "metrics.jsonl")
    wait_for(lambda: os.path.exists(metrics) and os.path.getsize(metrics) > 0, proc, "a logged training step")
    proc.send_signal(signal.SIGTERM)
    try:
        returncode = proc.wait(timeout=SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the run did not stop after SIGTERM:\n{output(proc)[-5000:]}")
    log = output(proc)
    assert returncode == 0, log[-5000:]
    assert "SIGTERM received" in log
    stopped = max(saved_steps(workdir))
    assert 1 <= stopped < SCHEDULE_STEPS
    assert json.loads([line for line in log.splitlines() if line.startswith("{")][-1])["step"] == stopped
    assert max(logged_rows(workdir, "train")) == stopped  # nothing trained past the save
    assert f"step {stopped}: loss=" in log  # the one-line summary
    assert "tensorboard --logdir" in log
    with open(os.path.join(workdir, "config.json")) as f, open(os.path.join(reference["workdir"], "config.json")) as g:
        assert json.load(f) == json.load(g)  # the CLI's overrides built the reference's config

    assert stopped + 2 <= REFERENCE_STEPS, f"SIGTERM was handled only at step {stopped}"
    resumed = pretrain.train_and_evaluate(make_config(settings), workdir, stop_at_step=stopped + 2)
    assert resumed["step"] == stopped + 2
    assert_replays_reference(workdir, reference["train_rows"], range(1, stopped + 3))


# Runs the train CLI with orbax's commit of one step's checkpoint (the rename of its
# temporary directory) blocked: the step is fully written but not complete when the test
# SIGKILLs the process. Deterministic, and no sleeps.
_HANG_IN_SAVE = """
import asyncio, os
from orbax.checkpoint._src.path import atomicity
from electra_jax import train

commit = atomicity.AtomicRenameTemporaryPath.finalize

async def finalize(self):
    if self.get_final().name == os.environ["HANG_AT_STEP"]:
        with open(os.environ["HANG_MARKER"], "w") as f:
            f.write(str(self.get()))
        await asyncio.Event().wait()  # forever: the test kills the process here
    await commit(self)

atomicity.AtomicRenameTemporaryPath.finalize = finalize
train.run()
"""


@pytest.mark.integration
@pytest.mark.slow  # a second subprocess; the default suite has the SIGTERM one
def test_sigkill_during_a_save_restarts_from_the_last_complete_checkpoint(tmp_path, reference, settings, compile_cache):
    workdir = str(tmp_path / "run")
    script = tmp_path / "hang_in_save.py"
    script.write_text(_HANG_IN_SAVE)
    marker = str(tmp_path / "saving")
    proc = start(
        [str(script), *cli_args(settings, workdir)],
        tmp_path / "log",
        compile_cache,
        HANG_AT_STEP="4",
        HANG_MARKER=marker,
    )
    wait_for(lambda: os.path.exists(marker) and os.path.getsize(marker) > 0, proc, "the save of step 4")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    with open(marker) as f:
        half_saved = f.read()
    assert os.path.isdir(half_saved) and os.path.basename(half_saved).startswith("4.")
    assert os.path.isdir(os.path.join(workdir, "data_state", "4"))  # written before the orbax save
    assert saved_steps(workdir) == [2]  # the reader ignores (and keeps) the unfinished step
    assert os.path.isdir(half_saved)

    result = pretrain.train_and_evaluate(make_config(settings), workdir, stop_at_step=REFERENCE_STEPS)
    assert result["step"] == REFERENCE_STEPS
    assert not os.path.exists(half_saved)  # the trainer cleans up its unfinished save
    assert_bitwise_equal(saved_params(make_config(settings), workdir, REFERENCE_STEPS), reference["params"])
    rows = logged_rows(workdir, "train")
    # Step 3 was logged by the killed run and again by the restart from step 2: one row.
    assert sorted(rows) == list(range(1, REFERENCE_STEPS + 1))
    assert all(len(step_rows) == 1 for step_rows in rows.values())
    assert_replays_reference(workdir, reference["train_rows"], range(1, REFERENCE_STEPS + 1))


def test_evaluate_reproduces_the_eval_metrics_logged_in_training(reference):
    config = checkpoints.load_run_config(reference["workdir"])  # as evaluate.py does
    result = evaluate.evaluate_checkpoint(config, reference["workdir"], 8)
    logged = dict(reference["eval_rows"][8][0])
    assert logged.pop("split") == "eval"
    assert result == logged  # same state, data, masking seed and program: exactly equal
    latest = evaluate.evaluate_checkpoint(config, reference["workdir"])
    assert latest["step"] == REFERENCE_STEPS


@pytest.mark.integration
@pytest.mark.slow  # two more subprocesses; the functions behind them are tested above
def test_evaluate_and_export_clis(tmp_path, reference, compile_cache):
    def cli(module, *args):
        proc = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=subprocess_env(compile_cache),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
        assert proc.returncode == 0, proc.stderr[-5000:]
        return proc.stdout

    workdir = reference["workdir"]
    printed = json.loads(cli("electra_jax.evaluate", f"--workdir={workdir}", "--step=8").strip().splitlines()[-1])
    with open(os.path.join(workdir, "eval_step_8.json")) as f:
        assert json.load(f) == printed
    run_config = checkpoints.load_run_config(workdir)
    assert printed.pop("eval_files") == run_config.data.eval_files
    logged = dict(reference["eval_rows"][8][0])
    logged.pop("split")
    assert printed == logged

    # Other held-out data, as the module docstring shows it (the override was an unknown
    # flag without --config), goes to a file of its own: it replaced eval_step_8.json.
    other_data = f"--config.data.eval_files={run_config.data.train_files}"
    other = json.loads(cli("electra_jax.evaluate", f"--workdir={workdir}", "--step=8", other_data).splitlines()[-1])
    assert other["eval_files"] == run_config.data.train_files and other != printed
    [other_file] = glob.glob(os.path.join(workdir, "eval_step_8-*.json"))
    with open(other_file) as f, open(os.path.join(workdir, "eval_step_8.json")) as g:
        assert json.load(f) == other and json.load(g)["eval_files"] == run_config.data.eval_files

    out = str(tmp_path / "hf")
    assert f"exported step {REFERENCE_STEPS}" in cli(
        "electra_jax.export", f"--config.workdir={workdir}", f"--config.out={out}"
    )
    for kind in ("discriminator", "generator"):
        assert sorted(os.listdir(os.path.join(out, kind))) == EXPORT_FILES


def _eval_batch(shards):
    from data_pipelines import pretraining as data

    it = data.make_pretraining_iterator(
        shards["eval_files"],
        batch_size=4,
        seq_length=SEQ,
        seed=0,
        shuffle_buffer=0,
        repeat=False,
        process_index=0,
        process_count=1,
    )
    batch = next(it)
    batch["attention_mask"][1, SEQ // 2 :] = 0  # padding, so the mask is exercised
    batch["input_ids"][1, SEQ // 2 :] = 0
    return batch


def test_export_loads_in_transformers_with_the_same_logits(tmp_path, reference, shards):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = str(tmp_path / "hf")
    assert export.export_checkpoint(reference["workdir"], out) == REFERENCE_STEPS
    gen_cfg, disc_cfg = model.configs_from_dict(reference["config"].model)
    split = model.split_pretraining_params(reference["params"])
    gen_params, disc_params = split["generator"], split["discriminator"]
    batch = _eval_batch(shards)
    torch_inputs = {k: torch.from_numpy(v).long() for k, v in batch.items()}
    for kind, cfg, params, hf_class in (
        ("discriminator", disc_cfg, disc_params, transformers.ElectraForPreTraining),
        ("generator", gen_cfg, gen_params, transformers.ElectraForMaskedLM),
    ):
        # the run's tokenizer, which transformers opens and which gives the ids ours does
        text = "ELECTRA trains a discriminator: café, naïve, 2026."
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.join(out, kind))
        ours_ids = tokenizer_lib.load_tokenizer(reference["config"].data.tokenizer).encode(text)
        assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == ours_ids
        net = model.Discriminator(cfg) if kind == "discriminator" else model.Generator(cfg)
        ours = np.asarray(
            net.apply(
                {"params": params},
                batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"],
                deterministic=True,
            )
        )
        hf_net = hf_class.from_pretrained(os.path.join(out, kind)).eval()
        with torch.no_grad():
            theirs = hf_net(**torch_inputs).logits.numpy()
        assert theirs.shape == ours.shape
        np.testing.assert_allclose(theirs, ours, atol=1e-4, err_msg=kind)


def test_export_refuses_a_non_empty_target_unless_overwrite(tmp_path, reference):
    out = tmp_path / "hf"
    (out / "discriminator").mkdir(parents=True)
    stale = out / "discriminator" / "vocab.txt"  # would win over the new spm.model in load_tokenizer
    stale.write_text("[PAD]\n")
    with pytest.raises(FileExistsError, match=r"hf is not empty \(1 entries: discriminator\).*--config.overwrite=True"):
        export.export_checkpoint(reference["workdir"], str(out))
    assert stale.exists()  # refused before anything was written or removed
    assert export.export_checkpoint(reference["workdir"], str(out), overwrite=True) == REFERENCE_STEPS
    assert sorted(os.listdir(out / "discriminator")) == EXPORT_FILES


def test_export_overwrite_never_removes_its_own_inputs(tmp_path, reference):
    # Overwrite cleared `out` before reading the workdir, so out=W,
    # out=parent of W, or a workdir typo deleted the run or the previous export.
    workdir = tmp_path / "runs" / "w"
    shutil.copytree(reference["workdir"], workdir)
    tokenizer_dir = tmp_path / "tok"
    shutil.copytree(os.path.dirname(reference["config"].data.tokenizer), tokenizer_dir)
    with open(workdir / "config.json") as f:
        saved = json.load(f)
    saved["data"]["tokenizer"] = str(tokenizer_dir / "spm.model")
    with open(workdir / "config.json", "w") as f:
        json.dump(saved, f)
    before = file_digests(tmp_path)
    for out, what in (
        (workdir, "is the workdir"),
        (tmp_path / "runs", "holds the workdir"),
        (tokenizer_dir, "holds its tokenizer"),
    ):
        with pytest.raises(ValueError, match=f"refusing to remove {out}: it {what}"):
            export.export_checkpoint(str(workdir), str(out), overwrite=True)
    assert file_digests(tmp_path) == before
    previous = tmp_path / "hf"
    assert export.export_checkpoint(str(workdir), str(previous)) == REFERENCE_STEPS
    kept = file_digests(previous)
    with pytest.raises(FileNotFoundError, match="no config.json in .*typo"):
        export.export_checkpoint(str(tmp_path / "runs" / "typo"), str(previous), overwrite=True)
    assert file_digests(previous) == kept
    # A real overwrite still replaces, and leaves no temporary folder behind.
    assert export.export_checkpoint(str(workdir), str(previous), step=REFERENCE_STEPS - 2, overwrite=True) == 8
    assert sorted(os.listdir(tmp_path)) == ["hf", "runs", "tok"]


def test_a_workdir_records_paths_that_work_from_anywhere_and_move_with_it(tmp_path, reference, settings, monkeypatch):
    # Started as the quick start is: relative --workdir, its data inside it (default_data),
    # held-out files outside it, all relative to the directory training starts in.
    start = tmp_path / "start"
    shutil.copytree(os.path.dirname(settings["data.tokenizer"]), start / "runs" / "w" / "default_data")
    shutil.copytree(os.path.dirname(settings["data.tokenizer"]), start / "heldout")
    monkeypatch.chdir(start)
    relative = {
        "data.train_files": "runs/w/default_data/shards/train-*.tfrecord",
        "data.eval_files": "heldout/shards/eval-*.tfrecord",
        "data.tokenizer": "runs/w/default_data/spm.model",
    }
    pretrain.train_and_evaluate(make_config(settings, **relative), "runs/w", stop_at_step=2)
    with open(start / "runs" / "w" / "config.json") as f:
        data = json.load(f)["data"]
    assert data["train_files"] == "default_data/shards/train-*.tfrecord"  # relative to the workdir
    assert data["tokenizer"] == "default_data/spm.model"
    assert data["eval_files"] == str(start / "heldout" / "shards" / "eval-*.tfrecord")  # absolute

    # A copy used from another directory reads its own data, not the original's.
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(start / "runs" / "w", copy)
    shutil.rmtree(start / "runs" / "w" / "default_data")
    monkeypatch.chdir(tmp_path)
    config = checkpoints.load_run_config(str(copy))
    assert config.data.tokenizer == str(copy / "default_data" / "spm.model")
    assert evaluate.evaluate_checkpoint(config, str(copy))["step"] == 2
    assert export.export_checkpoint(str(copy), str(tmp_path / "hf")) == 2
    assert sorted(os.listdir(tmp_path / "hf" / "generator")) == EXPORT_FILES


def test_export_of_a_run_whose_tokenizer_is_gone_writes_nothing(tmp_path, reference):
    workdir = tmp_path / "run"
    shutil.copytree(reference["workdir"], workdir)
    with open(workdir / "config.json") as f:
        saved = json.load(f)
    saved["data"]["tokenizer"] = str(tmp_path / "moved" / "spm.model")
    with open(workdir / "config.json", "w") as f:
        json.dump(saved, f)
    with pytest.raises(FileNotFoundError, match=r"names the tokenizer .*moved/spm\.model, which does not exist"):
        export.export_checkpoint(str(workdir), str(tmp_path / "hf"))
    assert not os.path.exists(tmp_path / "hf")


def test_a_workdir_of_another_model_is_refused_unless_fresh(tmp_path, reference, settings):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference["workdir"], workdir)
    before = file_digests(workdir)
    other = make_config(settings, **{"model.initializer_range": 0.03})
    with pytest.raises(ValueError, match=r"model\.initializer_range: saved 0\.02 vs 0\.03.*--fresh"):
        pretrain.train_and_evaluate(other, workdir, stop_at_step=2)
    assert file_digests(workdir) == before  # refused before touching anything

    result = pretrain.train_and_evaluate(other, workdir, fresh=True, stop_at_step=0)
    assert result["step"] == 0  # a new run: it did not resume the old one's step 10
    (aside,) = glob.glob(os.path.join(workdir, "replaced-*"))
    # The previous run, byte for byte, and still a workdir evaluate/export can read.
    assert file_digests(aside) == before
    assert checkpoints.load_run_config(aside).model.initializer_range == 0.02
    assert saved_steps(aside) == [6, 8, 10]
    # The new run has its own config, no checkpoints and no logs of the old one.
    assert checkpoints.load_run_config(workdir).model.initializer_range == 0.03
    assert saved_steps(workdir) == []
    assert logged_rows(workdir, "train") == {}


def test_fresh_starts_over_whatever_the_config_but_never_moves_an_input(tmp_path, reference, settings):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference["workdir"], workdir)
    before = file_digests(workdir)
    # Continuing from this run's own weights while moving them aside cannot work: refused.
    from_itself = make_config(settings, **{"init.workdir": workdir})
    with pytest.raises(ValueError, match=r"refusing to remove .*run/config.json: it lies inside init.workdir"):
        pretrain.train_and_evaluate(from_itself, workdir, fresh=True, stop_at_step=0)
    assert file_digests(workdir) == before
    # The same config with --fresh starts over too (a damaged run's way out), not a resume.
    assert pretrain.train_and_evaluate(make_config(settings), workdir, fresh=True, stop_at_step=0)["step"] == 0
    (aside,) = glob.glob(os.path.join(workdir, "replaced-*"))
    assert saved_steps(aside) == [6, 8, 10]


def test_settings_that_would_train_on_something_else_are_refused_before_anything_runs(tmp_path, settings):
    # Tiny's data.source='default' silently replaced the user's shards.
    default_source = make_config(settings, **{"data.source": "default"})
    with pytest.raises(ValueError, match=r"data.train_files=.*given, but data.source='default'.*data.source=tfrecord"):
        pretrain.train_and_evaluate(default_source, str(tmp_path / "a"))
    # An evaluation without held-out files failed only at the first evaluation, losing its steps.
    no_eval_files = make_config(settings, **{"data.eval_files": ""})
    with pytest.raises(ValueError, match=r"train.eval_every=4 but data.eval_files is empty"):
        pretrain.train_and_evaluate(no_eval_files, str(tmp_path / "b"))
    with pytest.raises(ValueError, match=r"--stop_at_step=-1; give a step >= 0"):
        pretrain.train_and_evaluate(make_config(settings), str(tmp_path / "c"), stop_at_step=-1)
    assert not glob.glob(str(tmp_path / "*" / "checkpoints" / "*"))


def test_the_compiled_step_is_checked_against_the_prediction_left_in_the_workdir(tmp_path, settings, caplog):
    import logging

    trainer = pretrain.make_pretrainer(make_config(settings))
    peak = hlo.peak_bytes(pretrain.compile_train_step(trainer, str(tmp_path)).memory_analysis())
    prediction = {"device_kind": jax.devices()[0].device_kind, "per_device_bytes": {"peak": peak}}
    (tmp_path / pretrain.COMPILED_STEP_FILE).write_text(json.dumps(prediction))
    with caplog.at_level(logging.INFO):
        pretrain.compile_train_step(trainer, str(tmp_path))
    assert f"compiled step as predicted: {peak / 2**30:.2f} GiB/chip" in caplog.text
    prediction["per_device_bytes"]["peak"] = 2 * peak  # e.g. compiled by another libtpu
    (tmp_path / pretrain.COMPILED_STEP_FILE).write_text(json.dumps(prediction))
    caplog.clear()
    pretrain.compile_train_step(trainer, str(tmp_path))
    assert f"predicted {2 * peak / 2**30:.2f} GiB" in caplog.text and "WARNING" in caplog.text


def test_a_refused_resume_leaves_the_saved_config_as_it_was(tmp_path, reference, settings):
    # A resume that failed its checks had already rewritten config.json.
    workdir = str(tmp_path / "run")
    shutil.copytree(reference["workdir"], workdir)
    before = file_digests(workdir)
    for change, message in (
        ({"mesh.data": 3}, r"mesh .* needs 3 devices"),
        ({"train.num_steps": -5}, "num_steps=-5"),
        ({"train.num_steps": REFERENCE_STEPS // 2}, rf"holds the checkpoint of step {REFERENCE_STEPS}, past train"),
    ):
        with pytest.raises(ValueError, match=message):
            pretrain.train_and_evaluate(make_config(settings, **change), workdir)
        assert file_digests(workdir) == before
    assert evaluate.evaluate_checkpoint(checkpoints.load_run_config(workdir), workdir)["step"] == REFERENCE_STEPS


def test_evaluate_adapts_the_mesh_and_prints_metrics_it_cannot_write(tmp_path, reference, monkeypatch, capsys):
    # Evaluate computed the metrics, then died writing them to a read-only workdir;
    # and on a host with other devices it advised a --config flag it does not take.
    config = checkpoints.load_run_config(reference["workdir"])
    config.mesh.data = 3  # a layout 8 devices cannot hold
    assert evaluate.mesh_for_these_devices(config).mesh.data == -1
    assert evaluate.mesh_for_these_devices(checkpoints.load_run_config(reference["workdir"])).mesh.data == -1

    def read_only(path, value, sort_keys=False):
        raise OSError(30, "Read-only file system", path)

    monkeypatch.setattr(evaluate.files, "write_json", read_only)
    monkeypatch.setattr(evaluate.flags, "FLAGS", type("F", (), {"workdir": reference["workdir"], "step": None})())
    with pytest.raises(OSError, match=r"the metrics above could not be written to .*eval_step_10.json"):
        evaluate.main(["evaluate"], type("Flag", (), {"value": None})(), run_config=None)
    assert json.loads(capsys.readouterr().out)["step"] == REFERENCE_STEPS


def test_a_finished_run_resumed_again_changes_no_checkpoint(tmp_path, reference, settings):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference["workdir"], workdir)
    before = file_digests(os.path.join(workdir, "checkpoints"))
    result = pretrain.train_and_evaluate(make_config(settings), workdir, stop_at_step=REFERENCE_STEPS)
    assert result["step"] == REFERENCE_STEPS
    assert file_digests(os.path.join(workdir, "checkpoints")) == before


def test_a_saved_step_is_never_overwritten(tmp_path):
    ckpt = checkpoints.Checkpointer(str(tmp_path), save_every=1, keep=None)
    try:
        assert ckpt.save(1, {"w": np.ones(3, np.float32)}, force=True)
        ckpt.wait()
        before = file_digests(str(tmp_path / "checkpoints"))
        assert not ckpt.save(1, {"w": np.zeros(3, np.float32)}, force=True)
        ckpt.wait()
        assert file_digests(str(tmp_path / "checkpoints")) == before
        restored = ckpt.restore(1, {"w": jax.ShapeDtypeStruct((3,), np.float32)})
        np.testing.assert_array_equal(restored["w"], np.ones(3, np.float32))
    finally:
        ckpt.close()


def test_tensorboard_holds_the_logged_scalars(reference):
    tf = pytest.importorskip("tensorflow")
    from tensorflow.core.util import event_pb2

    scalars = {}
    for path in glob.glob(os.path.join(reference["workdir"], "tensorboard", "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            for value in event_pb2.Event.FromString(record).summary.value:
                scalars[(value.tag, event_pb2.Event.FromString(record).step)] = float(tf.make_ndarray(value.tensor))
    logged = reference["train_rows"][REFERENCE_STEPS][0]
    for name in ("loss", "mlm_loss", "disc_loss", "mlm_accuracy", "learning_rate", "grad_norm"):
        assert scalars[(f"train/{name}", REFERENCE_STEPS)] == np.float32(logged[name]), name
    for name in ("step_time_s", "tokens_per_s"):
        assert (f"train/{name}", REFERENCE_STEPS) in scalars
    assert scalars[("eval/mlm_loss", 8)] == np.float32(reference["eval_rows"][8][0]["mlm_loss"])


@pytest.mark.integration
def test_a_typo_in_a_config_override_is_an_error_naming_the_key(tmp_path):
    workdir = str(tmp_path / "run")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "electra_jax.train",
            f"--config={REPO}/configs/pretrain.py:tiny",
            f"--workdir={workdir}",
            "--config.train.typo_key=1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 1
    assert (
        "FATAL Flags parsing error: --config.train.typo_key names 'typo_key', which the config does not have"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(workdir)  # refused before anything was written


def test_a_recipe_variant_layers_over_its_size_and_an_unknown_one_is_named():
    quick, cpu_hours = recipes.get_config("tiny"), recipes.get_config("tiny,cpu_hours")
    assert (quick.data.source, cpu_hours.data.source) == ("default", "tfrecord")
    assert (quick.train.num_steps, cpu_hours.train.num_steps) == (1500, 13500)
    assert (cpu_hours.model.generator_hidden_fraction, cpu_hours.objective.disc_weight) == (1.0, 1.0)
    assert cpu_hours.objective.temperature == quick.objective.temperature == 2.0  # tiny's overrides kept
    with pytest.raises(ValueError, match="no recipe variant 'v4-32' for size 'tiny'; choose one of"):
        recipes.pretraining_config("tiny", "v4-32")


@pytest.mark.integration
@pytest.mark.parametrize(
    "config_file,override,hint",
    [
        ("glue", "--config.tsk=mrpc", 'Did you mean "task" instead of "tsk"?'),
        ("classify", "--config.text_colum=review", ""),
        ("squad", "--config.train.lr=1", ""),
    ],
)
def test_a_typo_in_a_fine_tuning_override_is_an_error_naming_it(tmp_path, config_file, override, hint):
    workdir = str(tmp_path / "out")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "electra_jax.finetune",
            f"--config=configs/{config_file}.py",
            f"--workdir={workdir}",
            override,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    key = override[len("--config.") :].split("=")[0].split(".")[0]
    assert proc.returncode == 1
    assert (
        f"FATAL Flags parsing error: {override.split('=')[0]} names {key!r}, which the config does not have. {hint}"
    ).strip() in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(workdir)


def test_console_scripts_point_at_cli_run_functions():
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        setup_source = f.read()
    scripts = {}
    for node in ast.walk(ast.parse(setup_source)):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            for spec in ast.literal_eval(node.value)["console_scripts"]:
                name, target = (part.strip() for part in spec.split("="))
                scripts[name] = target
    assert {
        "electra-jax-train",
        "electra-jax-evaluate",
        "electra-jax-export",
        "electra-jax-compile",
        "electra-jax-finetune",
        "electra-jax-fill-mask",
        "electra-jax-inference",
        "electra-jax-prepare-data",
        "electra-jax-prepare-chinese",
        "electra-jax-build-shards",
        "electra-jax-train-tokenizer",
    } <= set(scripts)
    for name, target in scripts.items():
        module, function = target.split(":")
        path = os.path.join(REPO, *module.split(".")) + ".py"
        with open(path, encoding="utf-8") as f:
            functions = {node.name for node in ast.parse(f.read()).body if isinstance(node, ast.FunctionDef)}
        assert function in functions, f"{name}: {path} has no {function}()"


_HOLD_LOCK = """
import sys, time
from electra_jax import checkpoints
with checkpoints.workdir_lock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(600)
"""


@pytest.mark.integration
def test_a_second_trainer_on_a_workdir_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, settings, compile_cache):
    workdir = tmp_path / "run"
    workdir.mkdir()
    script = tmp_path / "hold_lock.py"
    script.write_text(_HOLD_LOCK)
    holder = start([str(script), str(workdir)], tmp_path / "holder.log", compile_cache)
    try:
        wait_for(lambda: "holding" in output(holder), holder, "the lock")
        second = subprocess.run(
            [sys.executable, "-m", "electra_jax.train", *cli_args(settings, str(workdir))],
            cwd=REPO,
            env=subprocess_env(compile_cache),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
        assert second.returncode != 0
        assert f"is in use by another trainer: pid {holder.pid} on host {socket.gethostname()}" in second.stderr
        assert sorted(os.listdir(workdir)) == ["lock.json"]  # refused before it wrote anything
    finally:
        holder.kill()
        holder.wait()
    # The holder died without removing its lock: the next trainer on this host takes it over.
    with checkpoints.workdir_lock(str(workdir)):
        with open(workdir / "lock.json") as f:
            assert json.load(f)["pid"] == os.getpid()
    assert not (workdir / "lock.json").exists()


def test_token_ids_beyond_the_vocabulary_are_refused_before_the_first_step(tmp_path, settings):
    # No tokenizer to check at start-up (docs/pods.md's advice): the batch is checked.
    config = make_config(settings, **{"model.vocab_size": 100, "data.tokenizer": ""})
    with pytest.raises(ValueError, match=r"token id 1\d\d in a batch of data.train_files=.* \(ids 0 to 99\)"):
        pretrain.train_and_evaluate(config, str(tmp_path / "run"))
    assert saved_steps(str(tmp_path / "run")) == []


def test_a_diverging_run_stops_and_never_saves_a_non_finite_state(tmp_path, settings):
    workdir = str(tmp_path / "run")
    config = make_config(settings, **{"optim.learning_rate": 1e30})
    message = r"(non-finite parameters|loss nan|loss inf) at step \d+; stopped without saving it \(the last"
    with pytest.raises(FloatingPointError, match=message):
        pretrain.train_and_evaluate(config, workdir, stop_at_step=REFERENCE_STEPS)
    for step in saved_steps(workdir):
        params = saved_params(config, workdir, step)
        assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(params)), step


def test_a_resume_that_cannot_be_honoured_is_refused_before_anything_is_written(tmp_path, reference, settings, shards):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference["workdir"], workdir)
    before = file_digests(workdir)
    new_files = make_config(settings, **{"data.train_files": shards["eval_files"]})
    with pytest.raises(ValueError, match=r"data\.train_files: saved .*train-\*.* vs .*eval-\*.*reset_iterator=True"):
        pretrain.train_and_evaluate(new_files, workdir, stop_at_step=REFERENCE_STEPS + 1)
    # A batch of 4 on the batch-8 run: refused by name, not a shape error after config.json
    # was rewritten (so evaluate of the old checkpoints still reads the old config).
    refused = r"train\.batch_size: saved 8 vs 4\); a resume may change only train\.num_steps"
    with pytest.raises(ValueError, match=refused):
        pretrain.train_and_evaluate(make_config(settings, **{"train.batch_size": 4}), workdir)
    assert file_digests(workdir) == before


def test_a_resume_over_deleted_shards_is_refused_not_taken_for_damage(tmp_path, settings):
    data_dir = tmp_path / "data"
    shutil.copytree(os.path.dirname(settings["data.tokenizer"]), data_dir)
    config = make_config(settings, **{"data.train_files": str(data_dir / "shards" / "train-*.tfrecord")})
    workdir = str(tmp_path / "run")
    pretrain.train_and_evaluate(config, workdir, stop_at_step=2)
    (first, *_) = sorted(glob.glob(str(data_dir / "shards" / "train-*.tfrecord")))
    os.remove(first)
    with pytest.raises(ValueError, match=rf"2 training files, but 1 match now \(missing: {os.path.basename(first)}\)"):
        pretrain.train_and_evaluate(config, workdir, stop_at_step=3)
    assert saved_steps(workdir) == [2] and not os.path.exists(os.path.join(workdir, "damaged"))
    reset = make_config(settings, **{"data.train_files": config.data.train_files, "data.reset_iterator": True})
    assert pretrain.train_and_evaluate(reset, workdir, stop_at_step=3)["step"] == 3


def test_reset_iterator_resumes_on_new_training_data(tmp_path, reference, settings, shards):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference["workdir"], workdir)
    config = make_config(settings, **{"data.train_files": shards["eval_files"], "data.reset_iterator": True})
    result = pretrain.train_and_evaluate(config, workdir, stop_at_step=REFERENCE_STEPS + 1)
    assert result["step"] == REFERENCE_STEPS + 1
    assert checkpoints.load_run_config(workdir).data.train_files == shards["eval_files"]
    # The same data again: an exact resume from the new data's iterator position, not a reset.
    assert pretrain.train_and_evaluate(config, workdir, stop_at_step=REFERENCE_STEPS + 2)["step"] == REFERENCE_STEPS + 2


def test_a_first_ctrl_c_asks_for_a_save_and_a_second_stops_at_once():
    # Ctrl-C was a raw KeyboardInterrupt traceback, and the steps since the last save were lost.
    from electra_jax import trainer

    preemption = trainer.Preemption()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert preemption.requested  # the loop saves at the end of this step and stops
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        preemption.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_evaluate_refuses_a_config_of_another_model_instead_of_calling_checkpoints_damaged(reference):
    saved = checkpoints.load_run_config(reference["workdir"])
    other = checkpoints.load_run_config(reference["workdir"])
    other.model.vocab_size = saved.model.vocab_size + 8
    with pytest.raises(ValueError, match=r"another model than the run's \(model.vocab_size: saved \d+ vs \d+\)"):
        evaluate.check_same_model(saved, other)
    evaluate.check_same_model(saved, saved)
