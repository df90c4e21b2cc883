"""Text classification on your own CSV / TSV / JSONL files (knobs: electra_jax/finetune/classify.py).

    python -m electra_jax.finetune --config=configs/classify.py \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.train_file=train.csv \\
        --config.dev_file=dev.csv --config.text_column=review --config.truncation=head_tail \\
        --config.max_seq_length=512 --workdir=OUT
"""

from electra_jax.finetune import classify


def get_config():
    config = classify.classify_config()
    config.lock()
    return config
