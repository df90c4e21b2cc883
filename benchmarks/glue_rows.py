"""GLUE dev for several initialisations (rows) under one fine-tuning recipe: the table that
says whether a pretraining run was worth having.

    python -m benchmarks.glue_rows --root=runs/glue --cores=0,1 --tasks=cola,sst2,mrpc,stsb,rte \
        --row random=init=workdirs/mini/electra,from_scratch=True \
        --row mlm=init=workdirs/mini/mlm --row electra=init=workdirs/mini/electra \
        --task sst2=max_train_examples=10000 \
        -- --config.seeds=5 --config.data_dir=../shared/data/glue

Each (row, task) is one `python -m electra_jax.finetune` process in ROOT/ROW/TASK with
the shared flags after `--`, then the task's and the row's `key=value` overrides; one whose
results.json exists is not repeated, so a killed table continues where it stopped.
`--cores=0,1` runs that many at once, each pinned to one core. Writes ROOT/summary.json and
ROOT/table.md: per task the ELECTRA paper's metric (CoLA MCC, STS-B Spearman, else
accuracy; x100) as median [min-max] over fine-tuning seeds, and the average of the task
medians with the min-max of the per-seed averages (the seed spread of the average).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from benchmarks.seed_study import parse_overrides, run_all, split_argv
from electra_jax.finetune.metrics import ELECTRA_PAPER_METRIC


def command(workdir: str, task: str, shared: list[str], overrides: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "electra_jax.finetune",
        "--config=configs/glue.py",
        f"--config.task={task}",
        f"--workdir={workdir}",
        "--config.save_models=False",
        "--config.predict_test=False",
        *shared,
    ] + [f"--config.{o}" for o in overrides]


def task_scores(results: dict, task: str) -> list[float]:
    """The paper metric of every fine-tuning seed, in seed order."""
    metric = ELECTRA_PAPER_METRIC[task]
    return [run["dev"][task][metric] for run in results["tasks"][task]["runs"]]


def summarize(scores: dict[str, dict[str, list[float]]]) -> dict:
    """{row: {task: [per seed]}} -> medians, ranges and the average with its seed spread."""
    summary = {}
    for row, by_task in scores.items():
        per_seed_average = [statistics.mean(seed_scores) for seed_scores in zip(*by_task.values())]
        summary[row] = {
            "tasks": {
                task: {"median": statistics.median(v), "min": min(v), "max": max(v), "per_seed": v}
                for task, v in by_task.items()
            },
            "average": statistics.mean(statistics.median(v) for v in by_task.values()),
            "per_seed_average": per_seed_average,
        }
    return summary


def table(summary: dict, tasks: list[str]) -> str:
    header = "| row | " + " | ".join(f"{t} ({ELECTRA_PAPER_METRIC[t]})" for t in tasks) + " | average |"
    rows = [header, "|" + " --- |" * (len(tasks) + 2)]
    for row, s in summary.items():
        cells = [
            f"{s['tasks'][t]['median']:.1f} [{s['tasks'][t]['min']:.1f}-{s['tasks'][t]['max']:.1f}]" for t in tasks
        ]
        spread = s["per_seed_average"]
        rows.append(
            f"| {row} | " + " | ".join(cells) + f" | **{s['average']:.1f}** [{min(spread):.1f}-{max(spread):.1f}] |"
        )
    return "\n".join(rows) + "\n"


def main(argv=None) -> None:
    own, shared = split_argv(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--tasks", default="cola,sst2,mrpc,stsb,rte")
    parser.add_argument("--row", action="append", required=True, help="NAME=key=value[,key=value]")
    parser.add_argument("--task", action="append", default=[], help="TASK=key=value[,...]: one task's overrides")
    parser.add_argument("--cores", default="", help="e.g. 0,1: parallel runs, one core each")
    args = parser.parse_args(own)
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in ELECTRA_PAPER_METRIC]
    if unknown:
        raise ValueError(f"--tasks {unknown}: choose from {sorted(ELECTRA_PAPER_METRIC)}")
    rows, task_overrides = parse_overrides(args.row), parse_overrides(args.task)
    jobs = []
    for task in tasks:  # task-major: every row of a task is done before the next task starts
        for row, overrides in rows.items():
            workdir = os.path.join(args.root, row, task)
            if not os.path.exists(os.path.join(workdir, "results.json")):
                jobs.append((workdir, command(workdir, task, shared, task_overrides.get(task, []) + overrides)))
    walls = run_all(jobs, [c for c in args.cores.split(",") if c])
    scores = {}
    for row in rows:
        scores[row] = {}
        for task in tasks:
            with open(os.path.join(args.root, row, task, "results.json"), encoding="utf-8") as f:
                scores[row][task] = task_scores(json.load(f), task)
    summary = summarize(scores)
    markdown = table(summary, tasks)
    print(markdown)
    with open(os.path.join(args.root, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "shared_flags": shared,
                "rows": rows,
                "task_overrides": task_overrides,
                "summary": summary,
                "wall_s": walls,
            },
            f,
            indent=1,
        )
    with open(os.path.join(args.root, "table.md"), "w", encoding="utf-8") as f:
        f.write(markdown)


if __name__ == "__main__":
    main()
