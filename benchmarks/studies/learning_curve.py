"""Draws held-out MLM accuracy and replaced-token ROC-AUC against steps from metrics.jsonl.

    python -m benchmarks.studies.learning_curve --run electra=runs/mini --run mlm=runs/mini_mlm \
        --out benchmarks/results/mini_curve.png

Each `--run NAME=WORKDIR` (or NAME=path/to/metrics.jsonl) adds a line per panel from the
run's `"split": "eval"` rows; an MLM-only run has no AUC and appears in the MLM panel only.
A row repeated by a resume after a crash counts once (the last one written). Also prints
the eval rows as a Markdown table. Needs matplotlib (`pip install -e ".[plots]"`).
"""

from __future__ import annotations

import argparse
import json
import os

PANELS = (("mlm_accuracy", "held-out MLM accuracy"), ("disc_auc", "held-out replaced-token ROC-AUC"))


def eval_rows(path: str) -> list[dict]:
    """The eval rows of a metrics.jsonl (or of WORKDIR/metrics.jsonl), one per step."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    by_step = {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_number}: not a JSON line ({e})") from e
            if row.get("split") == "eval":
                by_step[row["step"]] = row
    if not by_step:
        raise ValueError(f"{path} has no eval rows; train with --config.train.eval_every > 0")
    return [by_step[step] for step in sorted(by_step)]


def markdown_table(runs: dict[str, list[dict]]) -> str:
    lines = [
        "| run | step | MLM acc | RTD AUC | disc acc | all-original acc |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in runs.items():
        for row in rows:
            cells = [
                f"{row[key]:.3f}" if key in row else "-"
                for key in ("mlm_accuracy", "disc_auc", "disc_accuracy", "disc_baseline_accuracy")
            ]
            lines.append(f"| {name} | {row['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], out: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.6))
    for ax, (key, label) in zip(axes, PANELS):
        # A run keeps its colour in every panel: an MLM-only run has no AUC points.
        for color, (name, rows) in enumerate(runs.items()):
            points = [(row["step"], row[key]) for row in rows if key in row]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=name, color=f"C{color}")
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].axhline(0.5, color="grey", linestyle=":", linewidth=1)  # chance
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=WORKDIR or NAME=metrics.jsonl")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.run:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--run {spec!r}: expected NAME=WORKDIR")
        runs[name] = eval_rows(path)
    plot(runs, args.out, args.title)
    print(markdown_table(runs))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
