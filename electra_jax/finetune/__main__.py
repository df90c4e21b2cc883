"""Fine-tuning CLI for every task; the config file picks the program (`config.program`).

    python -m electra_jax.finetune --config=configs/glue.py --config.task=mrpc \\
        --config.init=PRETRAIN_WORKDIR_OR_HF_DIR --config.data_dir=GLUE_DIR --workdir=OUT
    ... --config.task=all --config.seeds=5           # the whole GLUE suite, median of 5 seeds
    ... --config.eval_only --config.init=OUT/mrpc/seed_0 --config.eval_split=test
    python -m electra_jax.finetune --config=configs/classify.py --config.init=... \\
        --config.train_file=train.csv --config.dev_file=dev.csv --config.text_column=review --workdir=OUT
    python -m electra_jax.finetune --config=configs/tagging.py --config.init=... \\
        --config.train_file=train.txt --config.dev_file=valid.txt --config.test_file=test.txt --workdir=OUT
    python -m electra_jax.finetune --config=configs/squad.py --config.version=1.1 --config.init=... \\
        --config.data_dir=SQUAD_DIR --workdir=OUT
    ... --config.train_file=dev-v1.1.json --config.train_articles=0:40 \\
        --config.eval_file=dev-v1.1.json --config.eval_articles=40:   # one file split by articles

(installed: `electra-jax-finetune`, same flags). Every program writes OUT/results.json and,
with save_models, OUT/[<task>/]seed_<k>/ as a transformers directory with its tokenizer:
GLUE also OUT/results.md and OUT/submission/<Task>.tsv; classify and tagging
OUT/label_map.json and, with a test file, their test predictions; SQuAD the official
predictions.json (and null_odds.json for 2.0) beside each model.

Multi-host (a TPU pod slice, SLURM, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID as for pretraining): run the same command on every host. Each reads all of
the task's data, the mesh spans every device, and process 0 alone writes OUT.
"""

import importlib

from absl import app, flags

from data_pipelines import errors
from electra_jax import cli

PROGRAMS = ("glue", "classify", "tagging", "squad")  # modules of electra_jax.finetune


def main(argv, config_flag, workdir_flag):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = config_flag.value
    if config.get("program") not in PROGRAMS:
        raise app.UsageError(
            f"config.program={config.get('program')!r}; a fine-tuning config names "
            f"one of {PROGRAMS} (configs/glue.py, classify.py, tagging.py, squad.py)"
        )
    cli.maybe_initialize_distributed()  # multi-host: before anything touches a device
    # imported after flag parsing: importing jax is slow
    program = importlib.import_module(f"electra_jax.finetune.{config.program}")
    print(program.report(config, workdir_flag.value))


def run():
    config_flag = cli.define_config_file(None, "configs/glue.py, classify.py, tagging.py or squad.py")
    workdir_flag = flags.DEFINE_string("workdir", None, "Results, predictions and fine-tuned models.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(errors.one_line_errors(lambda argv: main(argv, config_flag, workdir_flag)), flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
