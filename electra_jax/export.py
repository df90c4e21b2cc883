"""Export a pretraining checkpoint to HuggingFace transformers format.

    python -m electra_jax.export --workdir=DIR [--step=N] --out=HF_DIR

Writes HF_DIR/discriminator (ElectraForPreTraining) and HF_DIR/generator
(ElectraForMaskedLM), each config.json + model.safetensors, plus the tokenizer file the
run was trained with when the config names one.
"""
from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A pretraining workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from electra_jax import pretrain  # after flag parsing: importing jax is slow
    step = pretrain.export_checkpoint(_WORKDIR.value, _OUT.value, _STEP.value)
    print(f"exported step {step}: {_OUT.value}/discriminator, {_OUT.value}/generator")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
