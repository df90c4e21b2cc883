"""What the programs read of the recipes at run time, and the config sections they share.

The paper's model sizes (Clark et al. 2020, Table 6) and each size's fine-tuning recipe
(Table 7), which fine-tuning looks up by the pretrained model's shape; the sections every
program's config has (optimizer, mesh, sharding, where the first weights come from). The
pretraining recipes, their variants and the TPU pod layouts are `configs/pretrain.py`.
"""

from __future__ import annotations

import ml_collections

# Apart from train.seed, so that runs of different training seeds are scored on the same
# held-out corruption.
DEFAULT_EVAL_SEED = 0

# The paper sizes (Table 6), each a named entry. tiny is ours: CPU demos and tests; it
# trains in minutes on the embedded default corpus.
MODEL_SIZES = {
    "tiny": dict(
        vocab_size=8192,
        embedding_size=128,
        hidden_size=128,
        num_layers=2,
        num_heads=2,
        intermediate_size=512,
        generator_hidden_fraction=0.25,
    ),
    "small": dict(
        vocab_size=30522,
        embedding_size=128,
        hidden_size=256,
        num_layers=12,
        num_heads=4,
        intermediate_size=1024,
        generator_hidden_fraction=0.25,
    ),
    "base": dict(
        vocab_size=30522,
        embedding_size=768,
        hidden_size=768,
        num_layers=12,
        num_heads=12,
        intermediate_size=3072,
        generator_hidden_fraction=1 / 3,
    ),
    "large": dict(
        vocab_size=30522,
        embedding_size=1024,
        hidden_size=1024,
        num_layers=24,
        num_heads=16,
        intermediate_size=4096,
        generator_hidden_fraction=0.25,
    ),
}
# The fine-tuning recipe of each size (Table 7): peak learning rate and layer-wise decay.
# tiny follows small.
FINETUNING_RECIPES = {
    "tiny": dict(learning_rate=3e-4, layerwise_lr_decay=0.8),
    "small": dict(learning_rate=3e-4, layerwise_lr_decay=0.8),
    "base": dict(learning_rate=1e-4, layerwise_lr_decay=0.8),
    "large": dict(learning_rate=5e-5, layerwise_lr_decay=0.9),
}

# The variant of every size that starts from other weights: the size gives the recipe,
# `init.*` the architecture (electra_jax/init_from.py fills these fields in).
FROM_INIT = "init"
ARCHITECTURE = (
    "vocab_size",
    "embedding_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "generator_hidden_fraction",
)


def init_config() -> ml_collections.ConfigDict:
    """Where a pretraining run's first weights come from (all empty: random init). A
    workdir that holds checkpoints resumes from them instead."""
    c = ml_collections.ConfigDict()
    c.discriminator = ""  # transformers ELECTRA directory: ElectraForPreTraining, or any ELECTRA's encoder
    c.generator = ""  # transformers ElectraForMaskedLM directory
    c.discriminator_only = False  # True: no generator to load; it starts fresh at model.generator_hidden_fraction
    c.workdir = ""  # an electra-jax pretraining workdir (phase 2, a new corpus, a bigger batch)
    c.step = ml_collections.config_dict.placeholder(int)  # its checkpoint; None = the latest
    return c


DEFAULT_LOGICAL_AXIS_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("hidden", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
)


def mesh_config() -> ml_collections.ConfigDict:
    """The device mesh of a run (pretraining and fine-tuning): all devices, data-parallel."""
    mh = ml_collections.ConfigDict()
    mh.data = -1  # data-parallel axis; -1 takes the remaining devices
    mh.fsdp = 1  # parameters and optimizer state sharded over this axis
    mh.tensor = 1  # tensor (model) parallel axis
    mh.tpu_slice = ""  # the TPU slice (tpu.SLICES) a layout is for; python -m electra_jax.compile compiles for it
    return mh


def sharding_config() -> ml_collections.ConfigDict:
    sh = ml_collections.ConfigDict()
    sh.logical_axis_rules = DEFAULT_LOGICAL_AXIS_RULES  # logical axis -> mesh axes
    return sh


def optim_config(learning_rate: float, warmup_steps: int = 0, warmup_fraction: float = 0.0):
    """The optimizer section of pretraining and fine-tuning alike (optim.make_optimizer)."""
    p = ml_collections.ConfigDict()
    p.learning_rate = learning_rate  # peak learning rate (fine-tuning: 0 = the paper's for the size)
    p.warmup_steps = warmup_steps  # linear warmup, multiplied into the decay (as the original)
    p.warmup_fraction = warmup_fraction  # or warmup over this fraction of all steps (fine-tuning's way)
    p.decay = "linear"  # linear | polynomial
    p.end_learning_rate = 0.0  # learning rate at the end of the decay
    p.power = 1.0  # polynomial decay power (1.0 = linear)
    p.b1 = 0.9  # Adam beta1
    p.b2 = 0.999  # Adam beta2
    p.eps = 1e-6  # Adam epsilon
    p.bias_correction = True  # False: the original's Adam (raw moments; larger early steps)
    p.optimizer = "adamw"  # adamw | lamb (per-matrix trust ratio, for large batches; optim.py)
    p.weight_decay = 0.01  # decoupled weight decay; never on LayerNorm or biases
    p.clip_norm = 1.0  # global gradient-norm clip (0 = off)
    # per-layer learning rate x decay^(depth from the top); 1.0 = off (pretraining);
    # fine-tuning: 0 = the paper's for the size (0.8 small/base, 0.9 large)
    p.layerwise_lr_decay = 1.0
    p.num_layers = 0  # the encoder's depth, for layer-wise decay: the model's, set by the program
    return p


def check_ranges(section, ranges: dict[str, tuple], prefix: str) -> None:
    """Raises naming the first field of `section` outside `ranges` ({field: (least, most)}
    or (least, most, "open") where the value must exceed `least`; None = unbounded, bounds
    otherwise inclusive), as `--config.<prefix><field>`."""
    for field, (least, most, *openness) in ranges.items():
        value = section.get(field)
        if value is None:
            continue
        too_low = least is not None and (value <= least if openness else value < least)
        if too_low or (most is not None and value > most):
            low = f"> {least}" if openness else f">= {least}"
            bounds = low if most is None else f"in {'(' if openness else '['}{least}, {most}]"
            raise ValueError(f"{prefix}{field}={value}; it must be {bounds} (--config.{prefix}{field})")


def max_predictions_per_seq(mask_prob: float, max_seq_length: int) -> int:
    """The original's cap on masked positions per sequence (19 at 15% and 128 tokens)."""
    return int((mask_prob + 0.005) * max_seq_length)


def size_of(hidden_size: int, num_layers: int) -> str | None:
    """The paper size ("small", ...) of that hidden size and depth, else None."""
    for size, fields in MODEL_SIZES.items():
        if (fields["hidden_size"], fields["num_layers"]) == (hidden_size, num_layers):
            return size
    return None
