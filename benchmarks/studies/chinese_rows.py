"""The Chinese pipeline's numbers (BENCHMARKS.md "Chinese"), from the runs' own output files:

    python -m benchmarks.studies.chinese_rows --pretrain=workdirs/zh_tiny \\
        --run sentiment/pretrained=workdirs/zh_sentiment --run sentiment/random=workdirs/zh_sentiment_scratch \\
        --run ner/pretrained=workdirs/zh_ner --run ner/random=workdirs/zh_ner_scratch --out=rows.json

prints a markdown table: the pretraining run's last held-out MLM accuracy and replaced-token
AUC, then per fine-tuning run the median dev score over its seeds, every seed's dev score,
and the test score of the median-seed model (sentiment: accuracy; NER: entity F1).
"""

import argparse
import json
import os

# task -> (metric key in results.json's dev / test dicts, its name in the table)
METRICS = {"sentiment": ("accuracy", "accuracy"), "ner": ("f1", "entity F1")}


def last_eval(workdir: str) -> dict:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    held_out = [row for row in rows if row.get("split") == "eval"]
    if not held_out:
        raise ValueError(f"{workdir}/metrics.jsonl has no held-out (split=eval) rows")
    return held_out[-1]


def finetune_row(name: str, workdir: str) -> dict:
    task, _, init = name.partition("/")
    if task not in METRICS:
        raise ValueError(f"run {name!r}: the task before '/' must be one of {sorted(METRICS)}")
    key, _ = METRICS[task]
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    return {
        "task": task,
        "init": init,
        "median_dev": round(results["median"][key], 2),
        "dev_per_seed": [round(run["dev"][key], 2) for run in results["runs"]],
        "test_of_median_seed": round(results["test"][key], 2) if "test" in results else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain", required=True, help="the pretraining workdir")
    parser.add_argument("--run", action="append", default=[], help="TASK/INIT=FINETUNE_WORKDIR, repeated")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    pretrain = last_eval(args.pretrain)
    rows = [finetune_row(*spec.split("=", 1)) for spec in args.run]
    print(
        f"pretraining step {pretrain['step']}: held-out MLM accuracy {pretrain['mlm_accuracy']:.3f}, "
        f"replaced-token AUC {pretrain['disc_auc']:.3f}\n"
    )
    print("| task | init | median dev | dev per seed | test (median seed) |\n| --- | --- | ---: | --- | ---: |")
    for row in rows:
        print(
            f"| {row['task']} ({METRICS[row['task']][1]}) | {row['init']} | {row['median_dev']} | "
            f"{' / '.join(map(str, row['dev_per_seed']))} | {row['test_of_median_seed']} |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"pretrain": pretrain, "finetune": rows}, f, indent=2)


if __name__ == "__main__":
    main()
