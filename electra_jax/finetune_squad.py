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
import json

from absl import app, flags
from ml_collections import config_flags

from electra_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", "configs/squad.py", "configs/squad.py",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Results, predictions and fine-tuned models.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from electra_jax.finetune import squad  # after flag parsing: importing jax is slow
    results = squad.run(_CONFIG.value, _WORKDIR.value)
    print(json.dumps({"version": results["version"], "median": results["median"],
                      "hyperparameters": results["hyperparameters"]}, indent=2))


def run():
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
