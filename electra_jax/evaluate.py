"""Restore a pretraining checkpoint and report held-out MLM / discriminator metrics.

    python -m electra_jax.evaluate --workdir=DIR [--step=N] [--config.data.eval_files=...]

The config is the run's own (`DIR/config.json`) unless --config is given. Metrics are
logged and written to `DIR/eval_step_<N>.json`; they equal what training logged at that
step for the same eval data (same masking seed, dropout off).
"""
import json
import os

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Defaults to WORKDIR/config.json.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "A pretraining workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["workdir"])


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config.json in {workdir}; is it a pretraining workdir?")
    with open(path, encoding="utf-8") as f:
        config = ml_collections.ConfigDict(json.load(f))
    rules = config.sharding.logical_axis_rules
    config.sharding.logical_axis_rules = tuple(
        (name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)
    config.objective.special_token_ids = tuple(config.objective.special_token_ids)
    return config


def restore_state(config, workdir: str, step=None):
    """(trainer, state) for `step` (latest if None) of a pretraining workdir."""
    from electra_jax import checkpoints, pretrain
    trainer = pretrain.make_pretrainer(config)
    ckpt = checkpoints.Checkpointer(workdir, save_every=1, keep=None)
    try:
        step = ckpt.latest_step() if step is None else step
        state = ckpt.restore(step, pretrain.abstract_train_state(trainer))
    finally:
        ckpt.close()
    return trainer, state


def evaluate_checkpoint(config, workdir: str, step=None) -> dict:
    from electra_jax import pretrain, sharding
    trainer, state = restore_state(config, workdir, step)
    batches = pretrain.eval_batches(config, sharding.batch_sharding(trainer.mesh))
    metrics = pretrain.evaluate(trainer, state, batches, config.train.seed + 1)
    return {"step": int(state.step), **metrics}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value or load_run_config(_WORKDIR.value)
    result = evaluate_checkpoint(config, _WORKDIR.value, _STEP.value)
    path = os.path.join(_WORKDIR.value, f"eval_step_{result['step']}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    logging.info("eval at step %d: %s (written to %s)", result["step"], result, path)
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
