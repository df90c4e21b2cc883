"""GLUE dev for several initialisations (rows) under one fine-tuning recipe: the table that
says whether a pretraining run was worth having.

    python -m benchmarks.studies.glue_rows --root=runs/glue --cores=0,1 --tasks=cola,sst2,mrpc,stsb,rte \
        --row random=init=workdirs/mini/electra,from_scratch=True \
        --row mlm=init=workdirs/mini/mlm --row electra=init=workdirs/mini/electra \
        --task sst2=max_train_examples=10000 \
        -- --config.seeds=5 --config.data_dir=../shared/data/glue

Each (row, task) is one `python -m electra_jax.finetune` process in ROOT/ROW/TASK with
the shared flags after `--`, then the task's and the row's `key=value` overrides; one whose
results.json exists is not repeated, so a killed table continues where it stopped.
`--cores=0,1` runs that many at once, each pinned to one core. `--split=2` runs each
(row, task)'s fine-tuning seeds as two processes (ROOT/ROW/TASK/seeds_A-B, the first taking
the larger half), so that a row of one task fills two cores, and merges their results into
ROOT/ROW/TASK/results.json (`electra_jax.finetune.glue.merge_seed_splits`) as soon as the
last of them ends: a seed's run does not depend on the process it ran in. Writes
ROOT/summary.json and ROOT/table.md: per task the ELECTRA paper's metric (CoLA MCC, STS-B
Spearman, else accuracy; x100) as median [min-max] over fine-tuning seeds, and the average
of the task medians with the min-max of the per-seed averages (the seed spread of the
average).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from benchmarks.studies.seed_study import parse_overrides, run_all, split_argv
from data_pipelines import files
from electra_jax.finetune import common, glue
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


def seed_range(argv: list[str]) -> range:
    """The fine-tuning seeds a `command` asks for: its last `--config.seed=` / `--config.seeds=`
    (the row's overrides come last), else configs/glue.py's defaults."""
    defaults = common.base_config()
    values = {"seed": defaults.seed, "seeds": defaults.seeds}
    for arg in argv:
        name, sep, value = arg.partition("=")
        if name in ("--config.seed", "--config.seeds"):
            if not sep:
                raise ValueError(f"{arg}: write it as {arg}=N so that --split can read it")
            values[name.removeprefix("--config.")] = int(value)
    return range(values["seed"], values["seed"] + values["seeds"])


def split_seeds(seeds: range, parts: int) -> list[range]:
    """`seeds` in `parts` consecutive ranges, the first ones one seed longer when uneven."""
    if not 1 <= parts <= len(seeds):
        raise ValueError(f"--split={parts}: needs 1 to {len(seeds)} parts for seeds {list(seeds)}")
    size, extra = divmod(len(seeds), parts)
    bounds = [seeds.start + k * size + min(k, extra) for k in range(parts + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def finished(workdir: str) -> bool:
    """A fine-tuning workdir (a part or a merged (row, task)) is done once its results.json exists."""
    return os.path.exists(os.path.join(workdir, "results.json"))


def plan(root: str, tasks: list[str], rows: dict, task_overrides: dict, shared: list[str], split: int):
    """(jobs to run: [(workdir, argv)], {results.json to merge: [its parts' workdirs]}),
    task-major so that every row of a task is done before the next task starts. A (row,
    task) whose results.json exists is done; a part whose results.json exists is not rerun."""
    jobs, merges = [], {}
    for task in tasks:
        for row, row_overrides in rows.items():
            workdir = os.path.join(root, row, task)
            if finished(workdir):
                continue
            overrides = task_overrides.get(task, []) + row_overrides
            if split == 1:
                jobs.append((workdir, command(workdir, task, shared, overrides)))
                continue
            seeds = seed_range(command(workdir, task, shared, overrides))
            merges[workdir] = []
            for r in split_seeds(seeds, split):
                part = os.path.join(workdir, f"seeds_{r.start}-{r.stop - 1}")
                merges[workdir].append(part)
                if not finished(part):
                    jobs.append((part, command(part, task, shared, [*overrides, f"seed={r.start}", f"seeds={len(r)}"])))
    return jobs, merges


def merge_parts(workdir: str, parts: list[str]) -> None:
    """Writes the merged results.json atomically: a half-written one would count as done."""
    results = [files.read_json(os.path.join(part, "results.json")) for part in parts]
    merged = {**glue.merge_seed_splits(results), "merged_from": [os.path.relpath(p, workdir) for p in parts]}
    files.write_json(os.path.join(workdir, "results.json"), merged)


def merge_finished(merges: dict[str, list[str]]) -> None:
    """Merges each (row, task) whose parts have all finished and that is not merged yet: called
    as every job ends, so that a task's table cell lands while later tasks still run."""
    for workdir, parts in merges.items():
        if not finished(workdir) and all(finished(part) for part in parts):
            merge_parts(workdir, parts)


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
    parser.add_argument("--split", type=int, default=1, help="processes per (row, task), its seeds split")
    args = parser.parse_args(own)
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in ELECTRA_PAPER_METRIC]
    if unknown:
        raise ValueError(f"--tasks {unknown}: choose from {sorted(ELECTRA_PAPER_METRIC)}")
    rows, task_overrides = parse_overrides(args.row), parse_overrides(args.task)
    jobs, merges = plan(args.root, tasks, rows, task_overrides, shared, args.split)
    merge_finished(merges)  # parts finished by an earlier, stopped call
    walls = run_all(jobs, [c for c in args.cores.split(",") if c], on_done=lambda _: merge_finished(merges))
    scores = {}
    for row in rows:
        scores[row] = {}
        for task in tasks:
            scores[row][task] = task_scores(files.read_json(os.path.join(args.root, row, task, "results.json")), task)
    summary = summarize(scores)
    markdown = table(summary, tasks)
    print(markdown)
    summary_file = {
        "shared_flags": shared,
        "rows": rows,
        "task_overrides": task_overrides,
        "summary": summary,
        "wall_s": walls,
    }
    files.write_json(os.path.join(args.root, "summary.json"), summary_file)
    files.write_text(os.path.join(args.root, "table.md"), markdown)


if __name__ == "__main__":
    main()
