"""ELECTRA pretraining CLI.

    python -m electra_jax.train --config=configs/electra_small.py --workdir=DIR \\
        --config.data.train_files='shards/train-*.tfrecord' --config.train.batch_size=256

Resumes from the latest checkpoint in --workdir by default. Multi-process (TPU pods, SLURM,
or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set by hand) is detected
and `jax.distributed.initialize()` is called before anything touches a device.
"""

import json
import os

from absl import app, flags, logging

from data_pipelines import errors
from electra_jax import cli

_CONFIG = cli.define_config_file(None, "A configs/electra_*.py file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and TensorBoard go here.")
_FRESH = flags.DEFINE_bool(
    "fresh",
    False,
    "Start over in a workdir whose run has a different config (its checkpoints are moved aside, never deleted).",
)
_STOP_AT_STEP = flags.DEFINE_integer(
    "stop_at_step", None, "Stop (with a checkpoint) at this step; the schedule still spans config.train.num_steps."
)
flags.mark_flags_as_required(["config", "workdir"])


def _on_cloud_tpu_vm() -> bool:
    # Set by `import jax` (cloud_tpu_init) on TPU VMs with libtpu; JAX's own cluster
    # detection keys on the same flag. Single-host TPU VMs initialize as 1 process.
    from jax._src import cloud_tpu_init

    return bool(cloud_tpu_init.running_in_cloud_tpu_vm)


def maybe_initialize_distributed() -> None:
    """jax.distributed for multi-process runs; a no-op for one process.

    Cloud TPU VMs, SLURM (one task per host or per GPU) and Open MPI are detected by JAX
    itself. Anywhere else set JAX_COORDINATOR_ADDRESS=host:port (process 0's address),
    JAX_NUM_PROCESSES and JAX_PROCESS_ID in every process's environment.
    """
    import jax

    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS") and "SLURM_NTASKS" not in env:
        missing = [name for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not env.get(name)]
        if missing:
            raise ValueError(
                f"JAX_COORDINATOR_ADDRESS={env['JAX_COORDINATOR_ADDRESS']} is set but "
                f"{' and '.join(missing)} not; set both in every process (process "
                "ids 0 .. JAX_NUM_PROCESSES-1, the coordinator is process 0)"
            )
        jax.distributed.initialize(
            env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    elif int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1 or _on_cloud_tpu_vm():
        jax.distributed.initialize()
    else:
        return
    logging.info(
        "process %d of %d, %d local devices of %d",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    maybe_initialize_distributed()
    # after distributed init: nothing may touch devices before
    from electra_jax import checkpoints, pretrain

    result = pretrain.train_and_evaluate(
        _CONFIG.value, _WORKDIR.value, fresh=_FRESH.value, stop_at_step=_STOP_AT_STEP.value
    )
    workdir = checkpoints.absolute_workdir(_WORKDIR.value)
    print(json.dumps({"step": result["step"], "train": result["train"], "eval": result["eval"]}))
    print(f"checkpoints: {workdir}/checkpoints\ntensorboard: tensorboard --logdir {workdir}/tensorboard")


def run():
    app.run(errors.one_line_errors(main), flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
