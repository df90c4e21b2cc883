"""Export a pretraining checkpoint to HuggingFace transformers format.

    python -m electra_jax.export --config.workdir=DIR --config.out=HF_DIR \
        [--config.step=N] [--config.overwrite=True]

Writes HF_DIR/discriminator (ElectraForPreTraining; not for an MLM-only run) and
HF_DIR/generator (ElectraForMaskedLM), each config.json + model.safetensors, plus the
tokenizer file the run was trained with when the config names one.
"""

import os
from typing import Optional

import ml_collections
from absl import logging
from etils import epath

from data_pipelines import errors, files


def export_checkpoint(workdir: str, out_dir: str, step: Optional[int] = None, overwrite: bool = False) -> int:
    """Writes OUT/<network> for every network of the run at `step` (latest if None), in
    transformers' format with the run's tokenizer; returns the step. A non-empty `out_dir`
    is refused unless `overwrite`: a stale file left beside a new model (an old vocab.txt
    beside a new spm.model) would be read in its place. With `overwrite` the old export is
    replaced only once the new one is complete, and refused when it holds the workdir or
    the tokenizer (the inputs are read before anything is removed)."""
    check_export_target(out_dir, overwrite)
    import jax

    from data_pipelines import hf_tokenizer
    from data_pipelines import tokenizer as tokenizer_lib
    from electra_jax import hf, loading, model  # after flag parsing: importing jax is slow

    config, step, params = loading.restore_pretraining_params(workdir, step)
    if config.data.tokenizer and not epath.Path(config.data.tokenizer).exists():
        raise FileNotFoundError(
            f"the run in {workdir} names the tokenizer {config.data.tokenizer}, which does not exist "
            f"(moved or deleted?); put it back there. Nothing was written to {out_dir}"
        )
    tokenizer = tokenizer_lib.load_tokenizer(config.data.tokenizer) if config.data.tokenizer else None
    params = model.split_pretraining_params(jax.device_get(params))
    temp = epath.Path(f"{out_dir}.tmp")
    files.check_spares_inputs(
        [path for path in (out_dir, temp) if epath.Path(path).exists()],
        {"the workdir": workdir, "its tokenizer (data.tokenizer)": config.data.tokenizer},
        fix="Export to a folder that is neither the run's workdir nor inside or around it or its tokenizer.",
    )
    # Written beside OUT and renamed into place: a failure leaves no half-written export under OUT.
    with files.temporary_path(out_dir) as temp_dir:
        if temp.exists():
            logging.info("removing %s, left by an export that did not finish", temp)
            temp.rmtree()
        for kind, cfg in model.pretraining_networks(config).items():
            hf.save_pretrained(cfg, params[kind], os.path.join(temp_dir, kind), kind)
            if tokenizer is not None:
                hf_tokenizer.save_pretrained(tokenizer, os.path.join(temp_dir, kind), cfg.max_position_embeddings)
    logging.info("exported step %d of %s to %s", step, workdir, out_dir)
    return step


def check_export_target(out_dir: str, overwrite: bool) -> None:
    out = epath.Path(out_dir)
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if existing and not overwrite:
        shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise FileExistsError(
            f"{out_dir} is not empty ({len(existing)} entries: {shown}); export into a new or "
            "empty directory, or pass overwrite=True (--config.overwrite=True) to replace it"
        )
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out_dir} is a file; export into a directory")


def export_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = ""  # the pretraining workdir to export
    c.step = ml_collections.config_dict.placeholder(int)  # checkpoint step; None = the latest
    c.out = ""  # output directory: new or empty, unless overwrite
    c.overwrite = False  # replace a non-empty out (once the new export is complete)
    return c


def main(config, arguments):
    del arguments
    step = export_checkpoint(config.workdir, config.out, config.step, config.overwrite)
    print(f"exported step {step} to {config.out}")


def run():
    errors.run_tool(export_config(), main, required=("workdir", "out"))


if __name__ == "__main__":
    run()
