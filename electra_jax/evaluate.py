"""Restore a pretraining checkpoint and report held-out MLM / discriminator metrics.

    python -m electra_jax.evaluate --workdir=DIR [--step=N] [--config.data.eval_files=...]

The config is the run's own (`DIR/config.json`), its fields changed by `--config.KEY=VALUE`,
unless --config=FILE is given (of the same model). Metrics are logged and written to
`DIR/eval_step_<N>.json` (on other held-out data than the run's, `eval_step_<N>-<digest of
the files>.json`, with the files in it); they equal what training logged at that step for
the same eval data (same masking seed, dropout off).
"""

import functools
import hashlib
import json
import os
import sys
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


def main(argv, config_flag, run_config):
    """`run_config`: the workdir's config.json as read before the flags were defined (its
    overrides applied to a copy, `config_flag.value`), or None where --config=FILE was given
    or the workdir's could not be read."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from electra_jax import checkpoints

    workdir = flags.FLAGS.workdir
    saved = run_config or checkpoints.load_run_config(workdir)
    config = config_flag.value or saved
    if run_config is not None or not config_flag.value:
        config = mesh_for_these_devices(config)
    else:
        check_same_model(saved, config)
    result = evaluate_checkpoint(config, workdir, flags.FLAGS.step)
    result["eval_files"] = config.data.eval_files
    print(json.dumps(result))  # first: a workdir that cannot be written to loses no metrics
    path = os.path.join(workdir, result_name(result["step"], config.data.eval_files, saved.data.eval_files))
    try:
        files.write_json(path, result)  # local or gs://
    except OSError as error:
        raise OSError(f"the metrics above could not be written to {path}: {error}") from error
    logging.info("eval at step %d: %s (written to %s)", result["step"], result, path)


def result_name(step: int, eval_files: str, run_eval_files: str) -> str:
    """eval_step_<N>.json on the run's own held-out data; on other data the name carries a
    digest of its files, so an evaluation on other data never replaces one on the run's."""
    if eval_files == run_eval_files:
        return f"eval_step_{step}.json"
    return f"eval_step_{step}-{hashlib.sha256(eval_files.encode('utf-8')).hexdigest()[:8]}.json"


def check_same_model(saved, config) -> None:
    """A --config whose model differs from the run's cannot read its checkpoints (which
    would look damaged): refused, naming the fields."""
    from electra_jax import checkpoints

    differences = checkpoints.config_differences({"model": saved.model.to_dict()}, {"model": config.model.to_dict()})
    if differences:
        raise ValueError(
            f"--config describes another model than the run's ({checkpoints.describe_changes(differences)}); leave "
            "--config out to evaluate with the run's own config, and change a field with --config.KEY=VALUE"
        )


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
    # Without --config the run's own config.json is the config, and --config.KEY=VALUE
    # overrides its fields (e.g. data.eval_files).
    run_config = cli.run_config_of(sys.argv)
    if run_config is None:
        config_flag = cli.define_config_file(None, "Defaults to WORKDIR/config.json.")
    else:  # overridden on a copy: `run_config` stays what the run saved
        overridable = run_config.copy_and_resolve_references()
        config_flag = cli.define_config_dict(overridable, "WORKDIR/config.json, overridden by --config.KEY=VALUE.")
    flags.DEFINE_string("workdir", None, "A pretraining workdir.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.mark_flags_as_required(["workdir"])
    main_of_flags = functools.partial(main, config_flag=config_flag, run_config=run_config)
    app.run(errors.one_line_errors(main_of_flags), flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
