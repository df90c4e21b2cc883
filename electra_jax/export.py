"""Export a pretraining checkpoint to HuggingFace transformers format.

    python -m electra_jax.export --workdir=DIR [--step=N] --out=HF_DIR

Writes HF_DIR/discriminator (ElectraForPreTraining) and HF_DIR/generator
(ElectraForMaskedLM), each config.json + model.safetensors, plus the tokenizer file the
run was trained with when the config names one.
"""
import os
import shutil

import jax
from absl import app, flags, logging

from electra_jax import evaluate, hf, model

_WORKDIR = flags.DEFINE_string("workdir", None, "A pretraining workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
flags.mark_flags_as_required(["workdir", "out"])


def export(workdir: str, out_dir: str, step=None) -> int:
    config = evaluate.load_run_config(workdir)
    _, state = evaluate.restore_state(config, workdir, step)
    gen_cfg, disc_cfg = model.configs_from_dict(config.model)
    gen_params, disc_params = model.split_pretraining_params(jax.device_get(state.params))
    hf.save_pretrained(disc_cfg, disc_params, os.path.join(out_dir, "discriminator"), "discriminator")
    hf.save_pretrained(gen_cfg, gen_params, os.path.join(out_dir, "generator"), "generator")
    if config.data.tokenizer:
        for kind in ("discriminator", "generator"):
            shutil.copy(config.data.tokenizer, os.path.join(out_dir, kind))
    logging.info("exported step %d of %s to %s", int(state.step), workdir, out_dir)
    return int(state.step)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    step = export(_WORKDIR.value, _OUT.value, _STEP.value)
    print(f"exported step {step}: {_OUT.value}/discriminator, {_OUT.value}/generator")


if __name__ == "__main__":
    app.run(main)
