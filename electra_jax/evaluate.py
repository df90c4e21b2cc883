"""Restore a pretraining checkpoint and report held-out MLM / discriminator metrics.

    python -m electra_jax.evaluate --workdir=DIR [--step=N] [--config.data.eval_files=...]

The config is the run's own (`DIR/config.json`) unless --config is given. Metrics are
logged and written to `DIR/eval_step_<N>.json`; they equal what training logged at that
step for the same eval data (same masking seed, dropout off).
"""
import json
import os

from absl import app, flags, logging
from etils import epath

from electra_jax import cli

_CONFIG = cli.define_config_file(None, "Defaults to WORKDIR/config.json.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A pretraining workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from electra_jax import checkpoints, pretrain  # after flag parsing: importing jax is slow
    config = _CONFIG.value or checkpoints.load_run_config(_WORKDIR.value)
    result = pretrain.evaluate_checkpoint(config, _WORKDIR.value, _STEP.value)
    path = os.path.join(_WORKDIR.value, f"eval_step_{result['step']}.json")
    epath.Path(path).write_text(json.dumps(result, indent=2), encoding="utf-8")  # local or gs://
    logging.info("eval at step %d: %s (written to %s)", result["step"], result, path)
    print(json.dumps(result))


def run():
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
