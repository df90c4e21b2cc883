"""ELECTRA pretraining CLI.

    python -m electra_jax.train --config=configs/pretrain.py:small --workdir=DIR \\
        --config.data.train_files='shards/train-*.tfrecord' --config.train.batch_size=256

Resumes from the latest checkpoint in --workdir by default. Multi-process (TPU pods, SLURM,
or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set by hand) is detected
and `jax.distributed.initialize()` is called before anything touches a device.
"""

import json

from absl import app, flags

from data_pipelines import errors
from electra_jax import cli

_CONFIG, _WORKDIR, _FRESH = cli.define_run_flags(
    "configs/pretrain.py:SIZE[,VARIANT], e.g. configs/pretrain.py:small", "Checkpoints, logs and TensorBoard go here."
)
_STOP_AT_STEP = flags.DEFINE_integer(
    "stop_at_step", None, "Stop (with a checkpoint) at this step; the schedule still spans config.train.num_steps."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.maybe_initialize_distributed()
    cli.check_same_workdir(_WORKDIR.value)
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
