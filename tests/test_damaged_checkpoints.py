"""A damaged latest checkpoint: restore falls back to the newest intact
step, says which it skipped and why, and a trainer sets the damaged one aside unharmed."""

import glob
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax import checkpoints

STATE = {"a": jnp.arange(1000.0), "b": {"c": jnp.ones((30, 30))}}


def _abstract():
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), STATE)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A workdir with steps 1 and 2 (state + step)."""
    workdir = str(tmp_path_factory.mktemp("saved"))
    ckpt = checkpoints.Checkpointer(workdir, save_every=1, keep=5)
    for step in (1, 2):
        ckpt.save(step, jax.tree_util.tree_map(lambda x: x + step, STATE), force=True)
    ckpt.close()
    return workdir


def _largest_data_file(step_dir):
    return max(glob.glob(f"{step_dir}/state/ocdbt.process_0/d/*"), key=os.path.getsize)


DAMAGES = {
    "truncated data file": lambda d: open(_largest_data_file(d), "r+b").truncate(100),
    "overwritten data file": lambda d: open(_largest_data_file(d), "r+b").write(b"\0" * 500),
    "emptied manifest": lambda d: open(f"{d}/state/manifest.ocdbt", "w").close(),
    "emptied meta file": lambda d: open(f"{d}/meta/metadata", "w").close(),
    "deleted meta file": lambda d: os.remove(f"{d}/meta/metadata"),
    "deleted state": lambda d: shutil.rmtree(f"{d}/state"),
}


def _damaged_copy(saved, tmp_path, damage):
    workdir = str(tmp_path / "run")
    shutil.copytree(saved, workdir)
    DAMAGES[damage](f"{workdir}/checkpoints/2")
    return workdir


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_reader_falls_back_to_the_newest_intact_step(saved, tmp_path, damage, caplog):
    workdir = _damaged_copy(saved, tmp_path, damage)
    ckpt = checkpoints.Checkpointer(workdir, save_every=1, keep=None, read_only=True)
    state = ckpt.restore(None, _abstract())
    np.testing.assert_array_equal(state["a"], np.arange(1000.0) + 1)  # step 1's values
    assert "checkpoint 2" in caplog.text and "cannot be read" in caplog.text
    assert os.path.isdir(f"{workdir}/checkpoints/2")  # a reader moves nothing
    with pytest.raises(checkpoints.DamagedCheckpointError, match="checkpoint 2 .* cannot be read"):
        ckpt.restore(2, _abstract())


def test_trainer_sets_the_damaged_step_aside_and_saves_again(saved, tmp_path):
    workdir = _damaged_copy(saved, tmp_path, "truncated data file")
    ckpt = checkpoints.Checkpointer(workdir, save_every=1, keep=5, async_save=False)
    state = ckpt.restore(None, _abstract())
    np.testing.assert_array_equal(state["b"]["c"], np.full((30, 30), 2.0))
    assert ckpt.all_steps() == [1]
    (aside,) = glob.glob(f"{workdir}/damaged/2-*/checkpoint")
    assert os.path.isdir(f"{aside}/state")  # moved whole, nothing deleted
    assert ckpt.save(2, state, force=True)  # the trainer's next save of step 2 is not refused
    ckpt.close()


def test_no_intact_step_is_one_message(saved, tmp_path):
    workdir = _damaged_copy(saved, tmp_path, "deleted state")
    shutil.rmtree(f"{workdir}/checkpoints/1/state")
    ckpt = checkpoints.Checkpointer(workdir, save_every=1, keep=None, read_only=True)
    with pytest.raises(checkpoints.DamagedCheckpointError, match=r"no checkpoint .*\(step 2: .*; step 1: .*--fresh"):
        ckpt.restore(None, _abstract())


SCRIPT = """
import sys, jax, jax.numpy as jnp
from electra_jax import checkpoints
device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
abstract = {"a": jax.ShapeDtypeStruct((1000,), jnp.float32, sharding=device),
            "b": {"c": jax.ShapeDtypeStruct((30, 30), jnp.float32, sharding=device)}}
state = checkpoints.Checkpointer(sys.argv[1], save_every=1, keep=None, read_only=True).restore(None, abstract)
print("restored", float(state["a"][0]))
"""


def test_real_process_reads_a_truncated_checkpoint_without_tracebacks(saved, tmp_path):
    workdir = _damaged_copy(saved, tmp_path, "truncated data file")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT, workdir], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "restored 1.0" in done.stdout
    assert "checkpoint 2" in done.stderr and "cannot be read" in done.stderr
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr


FULL_DISK_SCRIPT = """
import sys, jax, jax.numpy as jnp
from data_pipelines import errors
from electra_jax import checkpoints

def main(argv):
    ckpt = checkpoints.Checkpointer(sys.argv[1], save_every=1, keep=5)
    for step in (1, 2, 3):  # each 4 MB, incompressible: the third does not fit
        ckpt.save(step, {"a": jax.random.normal(jax.random.PRNGKey(step), (1_000_000,))}, force=True)
    ckpt.close()

errors.one_line_errors(main)(sys.argv)
"""


def _small_filesystem(path, megabytes):
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)]
    mounted = subprocess.run(mount, capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small filesystem here ({mounted.stderr.decode().strip()})")
    return path


def test_a_full_disk_during_a_save_is_one_line_naming_the_step_and_where_a_rerun_resumes(tmp_path):
    # It was a raw TF ResourceExhaustedError, or four orbax thread tracebacks before the error.
    small = _small_filesystem(tmp_path / "small", megabytes=10)
    try:
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
        done = subprocess.run(
            [sys.executable, "-c", FULL_DISK_SCRIPT, str(small / "run")], capture_output=True, text=True, env=env
        )
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    [message] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert message.startswith(f"error: could not save the checkpoint of step 3 in {small / 'run'} (")
    assert "No space left on device" in message and message.endswith("it resumes from step 2")


def test_a_failed_input_position_write_is_an_os_error_naming_the_directory(tmp_path, monkeypatch):
    import tensorflow as tf

    from data_pipelines import pretraining

    tf_iterator = pretraining.PretrainingIterator(iter(tf.data.Dataset.range(3)), 0, 1)

    def full(self, prefix):
        raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}.index; No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "write", full)
    with pytest.raises(OSError, match=rf"could not write the input position to {tmp_path}/7: .*No space left"):
        tf_iterator.save(str(tmp_path / "7"))
