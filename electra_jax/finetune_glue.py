"""GLUE fine-tuning CLI: one task or all nine, the ELECTRA paper's recipe, official metrics.

    python -m electra_jax.finetune_glue --config=configs/glue.py --config.task=mrpc \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.data_dir=GLUE_DIR --workdir=OUT
    # the whole suite, 5 seeds, median reported:
    ... --config.task=all --config.seeds=5
    # score a fine-tuned model on a dev or test split:
    ... --config.eval_only --config.init=OUT/mrpc/seed_0 --config.eval_split=test

Writes OUT/results.json, OUT/results.md, OUT/<task>/seed_<k>/ (transformers
ElectraForSequenceClassification + tokenizer) and OUT/submission/<Task>.tsv.
"""
import json

from absl import app, flags, logging

from electra_jax import cli

_CONFIG = cli.define_config_file("configs/glue.py", "configs/glue.py")
_WORKDIR = flags.DEFINE_string("workdir", None, "Results, fine-tuned models and submission files.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from electra_jax.finetune import glue  # after flag parsing: importing jax is slow
    config = _CONFIG.value
    if config.eval_only:
        result = glue.evaluate_finetuned(config, _WORKDIR.value)
        print(json.dumps(result, indent=2))
        return
    results = glue.run(config, _WORKDIR.value)
    logging.info("GLUE results written to %s/results.json", _WORKDIR.value)
    print(glue.results_table(results))


def run():
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
