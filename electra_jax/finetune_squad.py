"""SQuAD fine-tuning CLI: span head (+ answerability head for 2.0), doc-stride windows,
n-best decoding, the official EM/F1.

    python -m electra_jax.finetune_squad --config=configs/squad.py --config.version=1.1 \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.data_dir=SQUAD_DIR --workdir=OUT
    # one file split by articles (train on the first 40, evaluate on the rest):
    ... --config.train_file=dev-v1.1.json --config.train_articles=0:40 \\
        --config.eval_file=dev-v1.1.json --config.eval_articles=40:

Writes OUT/results.json and OUT/seed_<k>/ (predictions.json in the official format,
null_odds.json for 2.0, the transformers ElectraForQuestionAnswering + tokenizer).
"""
from electra_jax import cli

run = cli.finetune_main("squad", "Results, predictions and fine-tuned models.",
                        lambda results: {"version": results["version"], "median": results["median"],
                                         "hyperparameters": results["hyperparameters"]})

if __name__ == "__main__":
    run()
