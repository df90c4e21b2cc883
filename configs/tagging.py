"""Token classification (NER) on CoNLL-2003-format files.

    python -m electra_jax.finetune --config=configs/tagging.py \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.train_file=train.txt \\
        --config.dev_file=valid.txt --config.test_file=test.txt --workdir=OUT
"""

import ml_collections

from electra_jax.finetune import common


def get_config() -> ml_collections.ConfigDict:
    """`common.base_config()` plus the files and columns of a NER data set."""
    c = common.base_config()
    c.program = "tagging"
    c.train_file = ""  # CoNLL-format training file
    c.dev_file = ""  # CoNLL-format dev file (scored; picks the median run)
    c.test_file = ""  # optional CoNLL-format file to predict with the median run ("" = none)
    c.label_column = -1  # column of the tag on each line (python index; -1 = last)
    c.labels = ""  # comma-separated tag set; "" = the tags of train_file ("O" first, then sorted)
    c.lock()
    return c
