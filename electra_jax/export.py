"""Export a pretraining checkpoint to HuggingFace transformers format.

    python -m electra_jax.export --workdir=DIR [--step=N] --out=HF_DIR

Writes HF_DIR/discriminator (ElectraForPreTraining; not for an MLM-only run) and
HF_DIR/generator (ElectraForMaskedLM), each config.json + model.safetensors, plus the
tokenizer file the run was trained with when the config names one.
"""

import os
from typing import Optional

from absl import app, flags, logging


def export_checkpoint(workdir: str, out_dir: str, step: Optional[int] = None) -> int:
    """Writes OUT/<network> for every network of the run at `step` (latest if None), in
    transformers' format with the run's tokenizer; returns the step."""
    import jax

    from data_pipelines import tokenizer as tokenizer_lib
    from electra_jax import hf, loading, model  # after flag parsing: importing jax is slow

    config, step, params = loading.restore_pretraining_params(workdir, step)
    params = model.split_pretraining_params(jax.device_get(params))
    for kind, cfg in model.pretraining_networks(config).items():
        hf.save_pretrained(cfg, params[kind], os.path.join(out_dir, kind), kind)
        if config.data.tokenizer:
            tokenizer_lib.copy_tokenizer_file(config.data.tokenizer, os.path.join(out_dir, kind))
    logging.info("exported step %d of %s to %s", step, workdir, out_dir)
    return step


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    values = flags.FLAGS
    step = export_checkpoint(values.workdir, values.out, values.step)
    print(f"exported step {step} to {values.out}")


def run():
    # Flags are defined here, not at import, so the library function above imports freely.
    flags.DEFINE_string("workdir", None, "A pretraining workdir.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.DEFINE_string("out", None, "Output directory.")
    flags.mark_flags_as_required(["workdir", "out"])
    app.run(main)


if __name__ == "__main__":
    run()
