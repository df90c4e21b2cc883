"""SQuAD 1.1 / 2.0 fine-tuning with ELECTRA's QA recipe.

    python -m electra_jax.finetune --config=configs/squad.py --config.version=2.0 \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.data_dir=SQUAD_DIR --workdir=OUT
"""

import ml_collections

from electra_jax.finetune import common


def get_config() -> ml_collections.ConfigDict:
    """Every knob of SQuAD fine-tuning (`common.base_config()` plus the QA ones)."""
    c = common.base_config()
    c.program = "squad"
    c.version = "1.1"  # 1.1 | 2.0 (unanswerable questions)
    c.data_dir = ""  # folder holding the official train-v<version>.json / dev-v<version>.json
    c.train_file = ""  # training JSON in the official format (overrides data_dir / TFDS)
    c.eval_file = ""  # evaluation JSON in the official format (overrides data_dir / TFDS)
    c.tfds_data_dir = ""  # TFDS data_dir holding a prepared squad/v<version> ("" = TFDS default)
    c.source = "auto"  # auto (files if given, TFDS if prepared, else data_dir) | tfds | json
    c.train_articles = ""  # "start:end" slice of the training articles ("" = all)
    c.eval_articles = ""  # "start:end" slice of the evaluation articles ("" = all)
    c.max_seq_length = 512  # tokens per window, [CLS] question [SEP] context [SEP] (the original's)
    c.max_query_length = 64  # question tokens kept (the rest is cut)
    c.doc_stride = 128  # tokens between the starts of consecutive context windows
    c.n_best_size = 20  # start and end candidates per window; n-best answers kept per question
    c.max_answer_length = 30  # longest predicted answer, in tokens
    c.answerable_head = True  # 2.0: ELECTRA's answerability classifier (False: HF's null score)
    c.answerable_weight = 0.5  # weight of the answerability loss (the original's)
    c.na_threshold = ml_collections.config_dict.placeholder(float)  # None: -2.75 head / 0.0 null score
    c.lock()
    return c
