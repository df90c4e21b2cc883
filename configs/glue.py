"""GLUE fine-tuning with the ELECTRA paper's recipe (the knobs live in electra_jax/finetune/glue.py).

    python -m electra_jax.finetune --config=configs/glue.py --config.task=mrpc \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.data_dir=GLUE_DIR --workdir=OUT
"""

from electra_jax.finetune import glue


def get_config():
    config = glue.glue_config()
    config.lock()
    return config
