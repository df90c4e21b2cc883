"""GLUE fine-tuning with the ELECTRA paper's recipe.

    python -m electra_jax.finetune --config=configs/glue.py --config.task=mrpc \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.data_dir=GLUE_DIR --workdir=OUT
"""

import ml_collections

from electra_jax.finetune import common


def get_config() -> ml_collections.ConfigDict:
    """Every knob of GLUE fine-tuning (`common.base_config()` plus the GLUE ones); zeros mean
    "the paper's value for this size/task"."""
    c = common.base_config()
    c.program = "glue"
    c.task = "mrpc"  # a GLUE task (cola sst2 mrpc qqp stsb mnli qnli rte wnli) or "all"
    c.data_dir = ""  # folder holding CoLA/, SST-2/, ... (GLUE's TSV layout); needed unless TFDS has glue
    c.tfds_data_dir = ""  # TFDS data_dir holding a prepared glue/<task> ("" = the TFDS default)
    c.source = "auto"  # auto (TFDS if prepared, else TSV) | tfds | tsv
    c.num_epochs = 0.0  # 0 = per task (3; 10 for RTE and STS-B)
    c.max_seq_length = 128  # [CLS] a [SEP] b [SEP], longest-first truncation
    # train on both sentence orders (every pair again as b, a; the original's double_unordered)
    # for the tasks where order carries no meaning: None = per task (DOUBLE_UNORDERED_TASKS)
    c.double_unordered = ml_collections.config_dict.placeholder(bool)
    common.add_classifier_head(c)
    c.predict_test = True  # write leaderboard files for the test split when it is available
    c.eval_only = False  # score the fine-tuned `init` on `eval_split` instead of training
    c.eval_split = "dev"  # eval_only: dev | test (MNLI: dev_matched, test_mismatched, ..., ax)
    c.lock()
    return c
