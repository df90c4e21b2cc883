"""Restore a pretraining checkpoint and report held-out MLM / discriminator metrics.

    python -m electra_jax.evaluate --workdir=DIR [--step=N] [--config.data.eval_files=...]

The config is the run's own (`DIR/config.json`) unless --config is given. Metrics are
logged and written to `DIR/eval_step_<N>.json`; they equal what training logged at that
step for the same eval data (same masking seed, dropout off).
"""

import functools
import json
import os
from typing import Optional

from absl import app, flags, logging

from data_pipelines import errors, files
from electra_jax import cli


def evaluate_checkpoint(config, workdir: str, step: Optional[int] = None) -> dict[str, float]:
    """Held-out metrics of a saved step: what training logged at that step (same eval
    data, masking seed, dropout off)."""
    # after flag parsing: importing jax is slow
    from data_pipelines import input_pipeline
    from electra_jax import pretrain, sharding

    trainer, state = pretrain.restore_train_state(config, workdir, step)
    batches = input_pipeline.eval_batches(config, sharding.batch_sharding(trainer.mesh))
    return {"step": int(state.step), **pretrain.evaluate(trainer, state, batches, config.train.eval_seed)}


def main(argv, config_flag):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from electra_jax import checkpoints

    workdir = flags.FLAGS.workdir
    config = config_flag.value or checkpoints.load_run_config(workdir)
    if not config_flag.value:
        config = mesh_for_these_devices(config)
    result = evaluate_checkpoint(config, workdir, flags.FLAGS.step)
    print(json.dumps(result))  # first: a workdir that cannot be written to loses no metrics
    path = os.path.join(workdir, f"eval_step_{result['step']}.json")
    try:
        files.write_json(path, result)  # local or gs://
    except OSError as error:
        raise OSError(f"the metrics above could not be written to {path}: {error}") from error
    logging.info("eval at step %d: %s (written to %s)", result["step"], result, path)


def mesh_for_these_devices(config):
    """The run's config with a mesh this host can build: the run's own where its fixed axes
    divide the devices here, else data parallel over all of them (the evaluation is the same
    computation on any mesh)."""
    import jax

    from electra_jax import sharding

    try:
        sharding.mesh_shape(config.mesh, jax.device_count())
        return config
    except ValueError:
        logging.info(
            "the run's mesh %s does not fit %d devices here: evaluating data parallel", config.mesh, jax.device_count()
        )
    config = config.copy_and_resolve_references()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
    return config


def run():
    # Flags are defined here, not at import, so the library function above imports freely.
    config_flag = cli.define_config_file(None, "Defaults to WORKDIR/config.json.")
    flags.DEFINE_string("workdir", None, "A pretraining workdir.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.mark_flags_as_required(["workdir"])
    app.run(errors.one_line_errors(functools.partial(main, config_flag=config_flag)), flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
