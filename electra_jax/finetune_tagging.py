"""NER fine-tuning CLI on CoNLL-2003-format files.

    python -m electra_jax.finetune_tagging --config=configs/tagging.py \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.train_file=train.txt \\
        --config.dev_file=valid.txt --config.test_file=test.txt --workdir=OUT

Writes OUT/results.json (entity precision / recall / F1, per type), OUT/label_map.json,
OUT/seed_<k>/ (transformers ElectraForTokenClassification + tokenizer) and, with a test
file, OUT/test_predictions.txt (`word gold predicted`, conlleval's input).
"""
from electra_jax import cli

run = cli.finetune_main("tagging", "Results, label map and fine-tuned models.",
                        lambda results: {"median": results["median"], "test": results.get("test")})

if __name__ == "__main__":
    run()
