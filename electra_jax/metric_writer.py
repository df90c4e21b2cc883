"""Scalars of a run, to `metrics.jsonl` (always) and TensorBoard (optional), from process
0 only: what pretraining and every fine-tuning run write their metrics through.

    writer = MetricWriter(workdir, tensorboard=True, start_step=0)
    writer.write(step, "train", {"loss": 0.3})
    writer.close()

Each line of metrics.jsonl is {"step", "split", <name>: <float>, ...}.
"""

from __future__ import annotations

import json
import os

import jax
from absl import logging
from etils import epath

from data_pipelines import files


def flat_scalars(metrics: dict, prefix: str = "") -> dict[str, float]:
    """{"mnli_m": {"accuracy": 80.1}} -> {"mnli_m/accuracy": 80.1}: nested metric dicts (a
    fine-tuning task's dev metrics) as the named scalars `MetricWriter.write` takes."""
    flat = {}
    for name, value in metrics.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(flat_scalars(value, f"{key}/"))
        else:
            flat[key] = float(value)
    return flat


def _drop_rows_after(path: epath.Path, step: int) -> None:
    """Rewrites `path` (atomically) without its rows for steps after `step`, and without a
    line cut short by a kill; logs what it dropped."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept, replayed, partial = [], 0, 0
    for line in lines:
        try:
            row_step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            partial += 1
            continue
        if row_step <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
        else:
            replayed += 1
    if replayed or partial:
        logging.info(
            "%s: dropped %d rows of steps after %d (replayed by this run) and %d unreadable lines",
            path,
            replayed,
            step,
            partial,
        )
        with files.atomic_open(path) as f:
            f.writelines(kept)


class MetricWriter:
    """Scalars to WORKDIR/metrics.jsonl and WORKDIR/tensorboard/, for a run that starts at
    `start_step` (0 for a new run, the restored step on resume). Rows an earlier run wrote
    for steps after `start_step` are dropped first: a run killed between two checkpoints
    replays those steps, and its file must not hold two series for them. (TensorBoard's
    event files are append-only; they keep the replayed steps.)"""

    def __init__(self, workdir: str, tensorboard: bool, *, start_step: int):
        self.enabled = jax.process_index() == 0
        self.tb = None
        if not self.enabled:
            return
        # epath: local or gs:// (TensorFlow's GCS filesystem re-uploads the object on flush)
        path = epath.Path(workdir) / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_rows_after(path, start_step)
        self.jsonl = path.open("a", encoding="utf-8")
        if tensorboard:
            try:
                from flax.metrics import tensorboard as flax_tb  # needs tensorflow
            except ImportError as e:
                raise ImportError(
                    f"TensorBoard summaries need tensorflow and tensorboard ({e}); "
                    "pip install tensorboard, or set --config.train.tensorboard=False "
                    "(fine-tuning: --config.tensorboard=False)"
                ) from e
            self.tb = flax_tb.SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for name, value in scalars.items():
                self.tb.scalar(f"{split}/{name}", value, step)
            self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()
