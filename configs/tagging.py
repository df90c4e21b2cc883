"""Token classification (NER) on CoNLL-2003-format files (knobs: electra_jax/finetune/tagging.py).

    python -m electra_jax.finetune --config=configs/tagging.py \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.train_file=train.txt \\
        --config.dev_file=valid.txt --config.test_file=test.txt --workdir=OUT
"""

from electra_jax.finetune import tagging


def get_config():
    config = tagging.tagging_config()
    config.lock()
    return config
