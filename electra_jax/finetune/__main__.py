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

(installed: `electra-jax-finetune`, same flags). The same command run again resumes a
killed or preempted run (each seed from its last checkpoint; finished seeds are kept), and
--fresh starts over. Every program writes OUT/config.json, OUT/results.json and,
with save_models, OUT/[<task>/]seed_<k>/ as a transformers directory with its tokenizer:
GLUE also OUT/results.md and OUT/submission/<Task>.tsv; classify and tagging
OUT/label_map.json and, with a test file, their test predictions; SQuAD the official
predictions.json (and null_odds.json for 2.0) beside each model.

Multi-host (a TPU pod slice, SLURM, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID as for pretraining): run the same command on every host. Each reads all of
the task's data, the mesh spans every device, and process 0 alone writes OUT.
"""

import importlib
import json
import os

from absl import app, logging
from etils import epath

from data_pipelines import errors, files
from electra_jax import cli

# A fine-tuning run stopped by a preemption signal exits as a process killed by SIGTERM does
# (128 + 15): a scheduler's restart-on-failure then reruns it, which resumes it.
PREEMPTED_EXIT_CODE = 143
# config.program -> the module that fine-tunes it: its `report(config, workdir)` runs the
# task (`run`, on `common.Setup` and `common.run_seeds`) and returns what the CLI prints; its
# `check_config(config)`, where it has one, checks the task's own keys before the workdir is
# claimed. A new task is its module (config, data, head, loss, metrics, outputs) and one line here.
TASKS = {
    "glue": "electra_jax.finetune.glue",
    "classify": "electra_jax.finetune.classify",
    "tagging": "electra_jax.finetune.tagging",
    "squad": "electra_jax.finetune.squad",
}
# The config keys that name what a fine-tuning run reads: --fresh never moves them aside.
INPUT_KEYS = ("init", "tokenizer", "data_dir", "tfds_data_dir", "train_file", "dev_file", "test_file", "eval_file")


CONFIG_FILE = "config.json"  # WORKDIR/CONFIG_FILE: the run's config, which a rerun must match
# What a rerun on the same workdir may change and still resume it (more seeds add runs).
RESUME_MAY_CHANGE = ("log_every", "eval_every", "checkpoint_every", "tensorboard", "seeds", "mesh.*", "sharding.*")


def claim_workdir(config, workdir: str, fresh: bool) -> None:
    """One run per workdir: the same command run again resumes it (each seed from its last
    checkpoint, finished seeds kept); a workdir that holds a run of another config is
    refused, or with `fresh` that run is moved to WORKDIR/replaced-<time>/, never deleted,
    and never when that would move an input. WORKDIR/config.json records the run's config."""
    from electra_jax import checkpoints

    path = epath.Path(workdir)
    entries = path.iterdir() if path.is_dir() else ()
    # this run's own lock, and earlier runs already moved aside, are not an earlier run
    earlier = sorted(p.name for p in entries if p.name != checkpoints.LOCK_FILE and not p.name.startswith("replaced-"))
    current = json.loads(config.to_json_best_effort(sort_keys=True))
    # A run trains in directories (seed_<k>/, <task>/seed_<k>/); one that failed before any
    # left only files this run writes again (config.json, label_map.json): nothing to resume.
    started = [name for name in earlier if (path / name).is_dir() or name == "results.json"]
    if earlier and not started and not fresh:
        logging.info("%s holds an earlier run that failed before training (%s): starting anew", workdir, earlier)
    elif earlier and not fresh:
        _check_resumable(path / CONFIG_FILE, current, earlier)
        logging.info("resuming the fine-tuning run in %s", workdir)
    elif earlier:
        inputs = {f"config.{key}": config[key] for key in INPUT_KEYS if key in config and config[key]}
        files.check_spares_inputs(
            [os.path.join(workdir, name) for name in earlier],
            inputs,
            fix="--fresh moves the earlier run aside: use another --workdir, or copy that input out first",
        )
        logging.warning("--fresh: moved the earlier run to %s", files.move_aside(workdir, earlier))
    files.write_json(path / CONFIG_FILE, current, sort_keys=True)


def _check_resumable(saved_path: epath.Path, current: dict, earlier: list[str]) -> None:
    from electra_jax import checkpoints

    fix = "use another --workdir, or --fresh to move it to WORKDIR/replaced-<time>/"
    if not saved_path.exists():
        shown = ", ".join(earlier[:5]) + (", ..." if len(earlier) > 5 else "")
        raise FileExistsError(f"{saved_path.parent} holds files of another program ({shown}); {fix}")
    saved = files.read_json(saved_path)
    if "program" not in saved:
        raise FileExistsError(
            f"{saved_path.parent} holds a pretraining run, not a fine-tuning one: fine-tuning writes a workdir of "
            "its own (the pretraining workdir goes in --config.init); use another --workdir"
        )
    differences = checkpoints.config_differences(saved, current)
    refused = checkpoints.refused_changes(differences, RESUME_MAY_CHANGE)
    if refused:
        details = checkpoints.describe_changes(refused)
        raise FileExistsError(
            f"{saved_path.parent} holds a fine-tuning run with another config ({details}); a rerun resumes it "
            f"only if it changes no more than {', '.join(RESUME_MAY_CHANGE)}: {fix}"
        )


def main(argv, config_flag, workdir_flag, fresh_flag):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = config_flag.value
    if config.get("program") not in TASKS:
        raise app.UsageError(
            f"config.program={config.get('program')!r}; a fine-tuning config names "
            f"one of {sorted(TASKS)} (configs/glue.py, classify.py, tagging.py, squad.py)"
        )
    cli.maybe_initialize_distributed()  # multi-host: before anything touches a device
    # imported after flag parsing: importing jax is slow
    import jax

    from electra_jax import checkpoints, trainer
    from electra_jax.finetune import common

    program = importlib.import_module(TASKS[config.program])
    common.check_config(config)  # before config.json is written: a bad value must not become the run's
    if hasattr(program, "check_config"):
        program.check_config(config)
    workdir = workdir_flag.value
    cli.check_same_workdir(workdir)
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    with checkpoints.workdir_lock(workdir):  # a second run on this workdir is refused
        if jax.process_index() == 0:
            claim_workdir(config, workdir, fresh_flag.value)
        try:
            print(program.report(config, workdir))
        except trainer.Preempted as stopped:
            logging.warning("%s", stopped)
            raise SystemExit(PREEMPTED_EXIT_CODE) from None


def run():
    config_flag, workdir_flag, fresh_flag = cli.define_run_flags(
        "configs/glue.py, classify.py, tagging.py or squad.py", "Results, predictions, fine-tuned models, checkpoints."
    )
    app.run(
        errors.one_line_errors(lambda argv: main(argv, config_flag, workdir_flag, fresh_flag)),
        flags_parser=cli.parse_flags,
    )


if __name__ == "__main__":
    run()
