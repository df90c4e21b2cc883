"""Runs one pretraining recipe over several train seeds (and arms) and tabulates the
held-out metrics: how a learning claim is checked, never by one seed.

    python -m benchmarks.studies.seed_study --root=runs/sampler --seeds=0,1,2,3,4 \
        --arm gumbel=objective.sampler=gumbel --arm inverse_cdf=objective.sampler=inverse_cdf \
        -- --config=configs/pretrain.py:tiny --config.train.num_steps=1000

Each (arm, seed) is one `python -m electra_jax.train` process in ROOT/ARM/seed_N with the
arm's `key=value` overrides (comma-separated) and `--config.train.seed=N` after the shared
flags that follow `--`; a finished run is not repeated (the trainer resumes or returns),
so a killed study continues where it stopped. `--cores=0,1` runs that many processes at
once, each pinned to one core (learning metrics only: wall times then are per core).
Prints, per arm, every seed's last eval row and the median, min and max, and writes them
to ROOT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

METRICS = ("mlm_accuracy", "disc_auc", "disc_accuracy", "disc_baseline_accuracy")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def last_eval(workdir: str) -> dict:
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
    evals = [row for row in rows if row["split"] == "eval"]
    if not evals:
        raise ValueError(f"{workdir}/metrics.jsonl has no eval row; set --config.train.eval_every")
    return evals[-1]


def command(workdir: str, seed: int, overrides: list[str], shared: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "electra_jax.train",
        f"--workdir={workdir}",
        *shared,
        f"--config.train.seed={seed}",
    ] + [f"--config.{o}" for o in overrides]


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the script's own flags, the shared flags after `--`)."""
    if "--" not in argv:
        return argv, []
    return argv[: argv.index("--")], argv[argv.index("--") + 1 :]


def parse_overrides(specs: list[str]) -> dict[str, list[str]]:
    """["name=k=v,k=v", ...] -> {name: ["k=v", ...]}, in the order given."""
    parsed = {}
    for spec in specs:
        name, sep, overrides = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"{spec!r}: expected NAME=key=value[,key=value]")
        parsed[name] = [o for o in overrides.split(",") if o]
    return parsed


def run_all(
    jobs: list[tuple[str, list[str]]], cores: list[str], on_done: Callable[[str], None] = lambda workdir: None
) -> dict[str, float]:
    """Runs (workdir, argv) jobs, len(cores) at a time, calling `on_done(workdir)` as each one
    succeeds; returns workdir -> wall seconds."""
    pending, running, walls = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < max(1, len(cores)):
            workdir, argv = pending.pop(0)
            os.makedirs(workdir, exist_ok=True)
            core = [c for c in cores if c not in {r[2] for r in running.values()}][:1]
            prefix = ["taskset", "-c", core[0]] if core else []
            log = open(os.path.join(workdir, "train.log"), "a", encoding="utf-8")
            proc = subprocess.Popen(prefix + argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            running[workdir] = (proc, time.perf_counter(), core[0] if core else None)
        time.sleep(2)
        for workdir, (proc, start, _) in list(running.items()):
            if proc.poll() is not None:
                if proc.returncode:
                    raise RuntimeError(f"{workdir}: exit {proc.returncode}; see {workdir}/train.log")
                walls[workdir] = time.perf_counter() - start
                del running[workdir]
                on_done(workdir)
    return walls


def main(argv=None) -> None:
    own, shared = split_argv(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--arm",
        action="append",
        default=[],
        help="NAME=key=value[,key=value]; default one arm 'recipe' with no overrides",
    )
    parser.add_argument("--cores", default="", help="e.g. 0,1: parallel runs, one core each")
    args = parser.parse_args(own)
    arms = parse_overrides(args.arm or ["recipe="])
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [
        (
            os.path.join(args.root, name, f"seed_{seed}"),
            command(os.path.join(args.root, name, f"seed_{seed}"), seed, overrides, shared),
        )
        for seed in seeds
        for name, overrides in arms.items()
    ]
    walls = run_all(jobs, [c for c in args.cores.split(",") if c])
    summary = {}
    for name in arms:
        per_seed = {seed: last_eval(os.path.join(args.root, name, f"seed_{seed}")) for seed in seeds}
        summary[name] = {
            "overrides": arms[name],
            "per_seed": per_seed,
            "wall_s": {seed: walls.get(os.path.join(args.root, name, f"seed_{seed}")) for seed in seeds},
        }
        print(f"\n{name} ({', '.join(arms[name]) or 'the recipe'}), step {per_seed[seeds[0]]['step']}:")
        for key in METRICS:
            values = [per_seed[seed][key] for seed in seeds]
            print(
                f"  {key:24s} "
                + " ".join(f"{v:.3f}" for v in values)
                + f"  median {statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"
            )
    with open(os.path.join(args.root, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({"shared_flags": shared, "arms": summary}, f, indent=1)


if __name__ == "__main__":
    main()
