"""SQuAD 1.1 / 2.0 fine-tuning with ELECTRA's QA recipe (the knobs live in electra_jax/finetune/squad.py).

    python -m electra_jax.finetune --config=configs/squad.py --config.version=2.0 \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.data_dir=SQUAD_DIR --workdir=OUT
"""

from electra_jax.finetune import squad


def get_config():
    config = squad.squad_config()
    config.lock()
    return config
