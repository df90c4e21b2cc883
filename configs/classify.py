"""Text classification on your own CSV / TSV / JSONL files.

    python -m electra_jax.finetune --config=configs/classify.py \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.train_file=train.csv \\
        --config.dev_file=dev.csv --config.text_column=review --config.truncation=head_tail \\
        --config.max_seq_length=512 --workdir=OUT
"""

import ml_collections

from electra_jax.finetune import common


def get_config() -> ml_collections.ConfigDict:
    """`common.base_config()` plus the files, columns and truncation of a classification set."""
    c = common.base_config()
    c.program = "classify"
    c.train_file = ""  # .csv / .tsv (header row) or .jsonl training file
    c.dev_file = ""  # the same format; scored, picks the median run
    c.test_file = ""  # optional file to predict with the median run ("" = none; labels optional)
    c.text_column = "text"  # the text to classify
    c.text_pair_column = ""  # second text of a pair task ("" = single texts)
    c.label_column = "label"  # the class
    c.labels = ""  # comma-separated label set, in id order; "" = the training labels sorted
    common.add_classifier_head(c)
    c.truncation = "head"  # head | tail | head_tail: which tokens of a long text are kept
    c.lock()
    return c
