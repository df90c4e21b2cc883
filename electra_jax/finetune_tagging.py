"""NER fine-tuning CLI on CoNLL-2003-format files.

    python -m electra_jax.finetune_tagging --config=configs/tagging.py \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.train_file=train.txt \\
        --config.dev_file=valid.txt --config.test_file=test.txt --workdir=OUT

Writes OUT/results.json (entity precision / recall / F1, per type), OUT/label_map.json,
OUT/seed_<k>/ (transformers ElectraForTokenClassification + tokenizer) and, with a test
file, OUT/test_predictions.txt (`word gold predicted`, conlleval's input).
"""
import json

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/tagging.py", "configs/tagging.py",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Results, label map and fine-tuned models.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from electra_jax.finetune import tagging  # after flag parsing: importing jax is slow
    results = tagging.run(_CONFIG.value, _WORKDIR.value)
    print(json.dumps({"median": results["median"], "test": results.get("test")}, indent=2))


if __name__ == "__main__":
    app.run(main)
