"""Text classification fine-tuning CLI on your own CSV / TSV / JSONL files.

    python -m electra_jax.finetune_classify --config=configs/classify.py \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.train_file=train.csv \\
        --config.dev_file=dev.csv --config.text_column=review --workdir=OUT

Writes OUT/results.json (accuracy, macro-F1), OUT/label_map.json, OUT/seed_<k>/
(transformers ElectraForSequenceClassification with id2label + tokenizer) and, with a test
file, OUT/test_predictions.jsonl ({"line", "label"} per row).
"""
from electra_jax import cli

run = cli.finetune_main("classify", "Results, label map and fine-tuned models.",
                        lambda results: {"median": results["median"], "test": results.get("test")})

if __name__ == "__main__":
    run()
