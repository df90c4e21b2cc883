"""Scalars of a run, to `metrics.jsonl` (always) and TensorBoard (optional), from process
0 only: what pretraining and every fine-tuning run write their metrics through.

    writer = MetricWriter(workdir, tensorboard=True)
    writer.write(step, "train", {"loss": 0.3})
    writer.close()

Each line of metrics.jsonl is {"step", "split", <name>: <float>, ...}.
"""

from __future__ import annotations

import json
import os

import jax
from etils import epath


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


class MetricWriter:
    """Scalars to WORKDIR/metrics.jsonl and WORKDIR/tensorboard/. `append` keeps the lines of
    an earlier run (pretraining resumes); False starts the file afresh (a fine-tuning run
    has no resume, and a rerun into the same directory must not mix two series)."""

    def __init__(self, workdir: str, tensorboard: bool, append: bool = True):
        self.enabled = jax.process_index() == 0
        self.tb = None
        if not self.enabled:
            return
        # epath: local or gs:// (TensorFlow's GCS filesystem re-uploads the object on flush)
        epath.Path(workdir).mkdir(parents=True, exist_ok=True)
        self.jsonl = (epath.Path(workdir) / "metrics.jsonl").open("a" if append else "w", encoding="utf-8")
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
