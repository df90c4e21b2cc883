"""Model FLOPs of an ELECTRA training step and device peaks, for MFU reporting."""

from __future__ import annotations

import math
import re

from electra_jax import model

# Dense peak FLOP/s per chip from vendor datasheets, matched by device_kind prefix (first
# match wins, so more specific prefixes come first). Override with --peak_flops.
PEAK_FLOPS = {
    ("NVIDIA H100", "bfloat16"): 989e12,
    ("NVIDIA H200", "bfloat16"): 989e12,
    ("NVIDIA A100", "bfloat16"): 312e12,
    ("TPU v4", "bfloat16"): 275e12,
    ("TPU v5 lite", "bfloat16"): 197e12,
    ("TPU v5", "bfloat16"): 459e12,
    ("NVIDIA H100", "float32"): 67e12,
    ("NVIDIA H200", "float32"): 67e12,
}


def peak_flops(device_kind: str, dtype: str, override: float | None = None) -> float | None:
    if override:
        return override
    for (kind, kind_dtype), value in PEAK_FLOPS.items():
        if device_kind.startswith(kind) and dtype == kind_dtype:
            return value
    return None


def _encoder_forward_flops(cfg: model.ElectraConfig, seq_len: int) -> float:
    """Matmul FLOPs of one network's embedding projection + encoder, per sequence."""
    h, f = cfg.hidden_size, cfg.intermediate_size
    per_token_per_layer = 2 * (4 * h * h + 2 * h * f) + 2 * 2 * seq_len * h  # dense + QK^T, PV
    projection = 2 * cfg.embedding_size * h if cfg.embedding_size != h else 0
    return seq_len * (cfg.num_layers * per_token_per_layer + projection)


def train_flops_per_sequence(
    gen: model.ElectraConfig, disc: model.ElectraConfig | None, seq_len: int, max_predictions: int
) -> float:
    """Analytic model FLOPs (forward + backward = 3x forward) of one ELECTRA training sequence.

    Generator: encoder over all tokens, MLM head (dense -> tied vocab projection) at the
    `max_predictions` gathered positions only. Discriminator: encoder + dense head at every
    token (`disc=None`: an MLM-only model, no discriminator). Embedding lookups, LayerNorms,
    softmaxes and the optimizer are not counted, nor
    the padding columns of a padded vocabulary (model FLOPs count useful work only).
    """
    gen_head = max_predictions * (2 * gen.hidden_size * gen.embedding_size + 2 * gen.embedding_size * gen.vocab_size)
    forward = _encoder_forward_flops(gen, seq_len) + gen_head
    if disc is not None:
        disc_head = seq_len * (2 * disc.hidden_size * disc.hidden_size + 2 * disc.hidden_size)
        forward += _encoder_forward_flops(disc, seq_len) + disc_head
    return 3.0 * forward


def train_flops_per_step(config) -> float:
    """Model FLOPs of one optimizer step (the whole global batch) of a pretraining config."""
    networks = model.pretraining_networks(config)
    return config.train.batch_size * train_flops_per_sequence(
        networks["generator"],
        networks.get("discriminator"),
        config.train.max_seq_length,
        config.objective.max_predictions_per_seq,
    )


_HLO_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]")


def hlo_dot_flops(hlo_text: str) -> float:
    """2 * M * N * K summed over the `dot` instructions of an HLO module's text.

    The matmul part of what XLA's cost analysis counts, to cross-check
    `train_flops_per_sequence` term by term. A dot inside a while loop (nn.scan, gradient
    accumulation) is counted once, as XLA's cost analysis does, so compare unrolled steps.
    """
    shapes = {}
    for line in hlo_text.splitlines():
        found = _HLO_INSTRUCTION.match(line)
        if found:
            shapes[found.group(1)] = [int(d) for d in found.group(2).split(",") if d]
    total = 0.0
    for line in hlo_text.splitlines():
        operands = re.search(r" dot\(([^)]*)\)", line)
        if not operands:
            continue
        output_shape = shapes[_HLO_INSTRUCTION.match(line).group(1)]
        # Operands print as `name` or, in some versions, `f32[8,128]{1,0} %name`.
        untyped = re.sub(r"\w+\[[\d,]*\](\{[\d,]*\})?\s*", "", operands.group(1))
        lhs_name = untyped.split(",")[0].strip().lstrip("%")
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line).group(1)
        contracted = math.prod(shapes[lhs_name][int(d)] for d in contracting.split(",") if d)
        total += 2.0 * math.prod(output_shape) * contracted
    return total
