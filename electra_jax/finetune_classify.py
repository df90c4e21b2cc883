"""Text classification fine-tuning CLI on your own CSV / TSV / JSONL files.

    python -m electra_jax.finetune_classify --config=configs/classify.py \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.train_file=train.csv \\
        --config.dev_file=dev.csv --config.text_column=review --workdir=OUT

Writes OUT/results.json (accuracy, macro-F1), OUT/label_map.json, OUT/seed_<k>/
(transformers ElectraForSequenceClassification with id2label + tokenizer) and, with a test
file, OUT/test_predictions.jsonl ({"line", "label"} per row).
"""
import json

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/classify.py", "configs/classify.py",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Results, label map and fine-tuned models.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from electra_jax.finetune import classify  # after flag parsing: importing jax is slow
    results = classify.run(_CONFIG.value, _WORKDIR.value)
    print(json.dumps({"median": results["median"], "test": results.get("test")}, indent=2))


if __name__ == "__main__":
    app.run(main)
