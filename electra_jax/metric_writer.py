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


class MetricWriter:
    """Scalars to WORKDIR/metrics.jsonl (appended) and WORKDIR/tensorboard/."""

    def __init__(self, workdir: str, tensorboard: bool):
        self.enabled = jax.process_index() == 0
        self.tb = None
        if not self.enabled:
            return
        # epath: local or gs:// (TensorFlow's GCS filesystem re-uploads the object on flush)
        self.jsonl = (epath.Path(workdir) / "metrics.jsonl").open("a", encoding="utf-8")
        if tensorboard:
            try:
                from flax.metrics import tensorboard as flax_tb  # needs tensorflow
            except ImportError as e:
                raise ImportError(
                    f"TensorBoard summaries need tensorflow and tensorboard ({e}); "
                    "pip install tensorboard, or set "
                    "--config.train.tensorboard=False"
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
