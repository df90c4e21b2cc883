"""The ELECTRA recipes as data: one `pretraining_config(size)` for every paper size.

`configs/pretrain.py:SIZE[,VARIANT]` is `get_config` below, so every knob has one home and
one comment. Sizes and
hyper-parameters follow Clark et al. 2020 (Table 6/7) and google-research/electra
`configure_pretraining.py`; the fine-tuning recipe of each size is beside them.
"""

from __future__ import annotations

import ml_collections

from electra_jax import tpu

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
# The pretraining recipe of each size (Table 6, configure_pretraining.py).
PRETRAINING_RECIPES = {
    "tiny": dict(
        max_seq_length=128, batch_size=32, learning_rate=2e-3, num_steps=1500, warmup_steps=100, mask_prob=0.15
    ),
    "small": dict(
        max_seq_length=128, batch_size=128, learning_rate=5e-4, num_steps=1_000_000, warmup_steps=10_000, mask_prob=0.15
    ),
    "base": dict(
        max_seq_length=512, batch_size=256, learning_rate=2e-4, num_steps=766_000, warmup_steps=10_000, mask_prob=0.15
    ),
    "large": dict(
        max_seq_length=512, batch_size=2048, learning_rate=2e-4, num_steps=400_000, warmup_steps=10_000, mask_prob=0.25
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

# size -> {section.field: value}: where a size's recipe leaves the paper's. tiny is the README
# quick start, found by measurement (BENCHMARKS.md "Quick-start recipe"): no dropout (a few
# epochs at most, and faster on CPUs), the inverse-CDF sampler (same law, faster on CPUs),
# and replacements sampled at temperature 2. At temperature 1 its discriminator stayed at
# ROC-AUC ~0.55 for 1-2K steps whatever the learning rate, width, vocabulary, length or
# disc_weight: a 1/4-width generator reaches unigram-like samples within ~100 steps, and
# telling those apart needs context the tiny discriminator has not learned yet.
RECIPE_OVERRIDES = {
    "tiny": {
        "model.hidden_dropout": 0.0,
        "model.attention_dropout": 0.0,
        "objective.sampler": "inverse_cdf",
        "objective.temperature": 2.0,
        "train.eval_every": 500,
    },
}

# (size, variant) -> {section.field: value} on top of the size's recipe: named recipes for
# one job, selected as `--config=configs/pretrain.py:<size>,<variant>`.
RECIPE_VARIANTS = {
    # cpu_hours: at most two CPU core-hours on real English text (the books, wiki and plays of
    # ../shared/data, prepared by data_pipelines.prepare_data; pass its data flags), then GLUE
    # (BENCHMARKS.md "GLUE against pretraining minutes"). A generator as wide as the
    # discriminator (as the released ELECTRA-Small's) and disc_weight 1: at 50 the
    # discriminator's gradient dominates the shared embeddings and the generator never leaves
    # the unigram plateau in this budget ("The generator's plateau"). 13,500 steps: STS-B
    # gained +10 over random init at 4,000 steps and +29 at 13,500 (one schedule, one draw),
    # so the 2-hour length is the preset.
    # A checkpoint every 500 steps, all kept: the GLUE-vs-minutes curve reads them.
    ("tiny", "cpu_hours"): {
        "data.source": "tfrecord",
        "model.generator_hidden_fraction": 1.0,
        "objective.disc_weight": 1.0,
        "train.num_steps": 13500,
        "optim.warmup_steps": 500,
        "train.eval_every": 500,
        "train.checkpoint_every": 500,
        "train.keep_checkpoints": 30,
    },
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


def _leave_architecture_to_init(m: ml_collections.ConfigDict) -> None:
    """ARCHITECTURE fields unset, keeping their types (so a command line may still set one)
    and the references to them (optim.num_layers)."""
    for field in ARCHITECTURE:
        m.get_ref(field).set(None)


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


def max_predictions_per_seq(mask_prob: float, max_seq_length: int) -> int:
    """The original's cap on masked positions per sequence (19 at 15% and 128 tokens)."""
    return int((mask_prob + 0.005) * max_seq_length)


def size_of(hidden_size: int, num_layers: int) -> str | None:
    """The paper size ("small", ...) of that hidden size and depth, else None."""
    for size, fields in MODEL_SIZES.items():
        if (fields["hidden_size"], fields["num_layers"]) == (hidden_size, num_layers):
            return size
    return None


def model_config(size: str) -> ml_collections.ConfigDict:
    if size not in MODEL_SIZES:
        raise ValueError(f"model size {size!r}; choose one of {sorted(MODEL_SIZES)}")
    size_fields = MODEL_SIZES[size]
    m = ml_collections.ConfigDict()
    m.vocab_size = size_fields["vocab_size"]  # must equal the tokenizer's vocabulary size
    m.embedding_size = size_fields["embedding_size"]  # E; projected to hidden_size when they differ
    m.hidden_size = size_fields["hidden_size"]  # discriminator hidden size H
    m.num_layers = size_fields["num_layers"]  # depth of both generator and discriminator
    m.num_heads = size_fields["num_heads"]  # discriminator attention heads
    m.intermediate_size = size_fields["intermediate_size"]  # discriminator FFN size
    # generator hidden/FFN/heads = this x discriminator's
    m.generator_hidden_fraction = size_fields["generator_hidden_fraction"]
    m.max_position_embeddings = 512  # learned position table size
    m.type_vocab_size = 2  # segment A / B
    m.hidden_dropout = 0.1  # dropout after embeddings, attention output and FFN
    m.attention_dropout = 0.1  # dropout on attention probabilities (0 enables fused attention in training)
    m.layer_norm_eps = 1e-12  # BERT/ELECTRA LayerNorm epsilon
    m.initializer_range = 0.02  # stddev of the truncated-free normal init (as HF)
    m.dtype = "float32"  # compute dtype; "bfloat16" on GPU/TPU
    m.param_dtype = "float32"  # parameter and optimizer-state dtype
    m.scan_layers = False  # nn.scan over layers: faster compiles for deep models
    m.remat_policy = "none"  # none | full | dots | dots_saveable: activation rematerialisation
    m.attention_impl = ml_collections.config_dict.placeholder(str)  # None (XLA) or "cudnn"
    m.vocab_pad_multiple = 1  # embedding rows / MLM logits padded to a multiple (e.g. 128); masked
    return m


def pretraining_config(size: str, variant: str | None = None) -> ml_collections.ConfigDict:
    """The full pretraining config for a paper size (and one of its RECIPE_VARIANTS); lock it
    before handing it to users."""
    if variant not in (None, FROM_INIT) and (size, variant) not in RECIPE_VARIANTS:
        raise ValueError(
            f"no recipe variant {variant!r} for size {size!r}; choose one of "
            f"{sorted([FROM_INIT] + [v for s, v in RECIPE_VARIANTS if s == size])}"
        )
    recipe = PRETRAINING_RECIPES[size]
    seq_len, mask_prob = recipe["max_seq_length"], recipe["mask_prob"]
    c = ml_collections.ConfigDict()
    c.model = model_config(size)

    c.objective = o = ml_collections.ConfigDict()
    # electra: generator MLM + discriminator RTD; mlm: BERT-style masked LM alone at the
    # discriminator's size (the baseline ELECTRA is measured against; disc_* knobs unused)
    o.kind = "electra"
    o.mask_prob = mask_prob  # fraction of real tokens the generator must predict
    o.whole_word_masking = False  # mask whole words (the shards' word_starts), the cap in pieces
    o.max_predictions_per_seq = max_predictions_per_seq(mask_prob, seq_len)  # static cap per sequence
    o.mask_token_frac = 0.85  # of the chosen positions: replaced by [MASK]
    o.random_token_frac = 0.0  # ... replaced by a random token (the paper: none); the rest stay unchanged
    o.disc_weight = 50.0  # lambda: total = mlm_loss + disc_weight * disc_loss
    o.temperature = 1.0  # sampling temperature for the generator's replacements
    o.sampler = "gumbel"  # gumbel (the original's) | inverse_cdf (same law, one uniform a position)
    o.disallow_correct = False  # if True, never sample the original token (an ablation in the paper)
    o.mask_token_id = 4  # [MASK]; checked against the tokenizer at start-up
    o.special_token_ids = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]: never masked

    c.optim = optim_config(learning_rate=recipe["learning_rate"], warmup_steps=recipe["warmup_steps"])
    c.optim.num_layers = c.model.get_ref("num_layers")

    c.train = t = ml_collections.ConfigDict()
    t.seed = 0  # initialisation, masking and sampling all derive from it
    t.eval_seed = DEFAULT_EVAL_SEED  # the held-out masking and sampling
    t.batch_size = recipe["batch_size"]  # global batch (sequences per optimizer step)
    t.max_seq_length = seq_len  # tokens per sequence; must match the shards
    t.num_steps = recipe["num_steps"]  # optimizer steps
    t.grad_accum_steps = 1  # microbatches per step (lax.scan); batch_size must divide by it
    t.log_every = 100  # steps between logged metrics
    t.eval_every = 1000  # steps between evaluations on held-out data (0 = never)
    t.eval_steps = 20  # batches per evaluation
    t.checkpoint_every = 1000  # steps between checkpoints
    t.keep_checkpoints = 3  # how many recent checkpoints to keep
    t.tensorboard = True  # TensorBoard summaries (needs tensorflow) beside metrics.jsonl

    c.data = d = ml_collections.ConfigDict()
    # tfrecord | synthetic (random tokens; benchmarks, no tensorflow) | default (the embedded
    # corpus, tokenized and sharded into WORKDIR/default_data on first use)
    d.source = "default" if size == "tiny" else "tfrecord"
    d.train_files = ""  # glob of training TFRecord shards
    d.eval_files = ""  # glob of held-out TFRecord shards
    d.tokenizer = ""  # sentencepiece .model or WordPiece vocab.txt the shards were built with
    d.shuffle_buffer = 10_000  # examples in the tf.data shuffle buffer
    # True: a resume may change the training data (files, source, shuffle buffer); the input
    # pipeline then starts afresh at the restored step. False: such a resume is refused.
    d.reset_iterator = False

    c.init = init_config()
    c.mesh = mesh_config()
    c.sharding = sharding_config()
    if variant == FROM_INIT:
        _leave_architecture_to_init(c.model)
    overrides = {**RECIPE_OVERRIDES.get(size, {}), **RECIPE_VARIANTS.get((size, variant), {})}
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


# ------------------------------------------------------------------ TPU pod layouts
# (size, pod) -> (global batch, grad_accum_steps, mesh.fsdp, remat_policy), bfloat16 compute,
# float32 parameters and Adam moments, scanned layers; mesh.data takes the remaining chips.
# Batches are the paper's except where a pod has more chips than sequences; then the batch
# grows (tune the learning rate: not validated here). Every layout is compiled by libtpu for
# its slice at 128 and 512 tokens: benchmarks/results/pod_layouts/ (python
# benchmarks/pod_layouts.py); the comments give its compiled peak per chip at 512 tokens.
POD_LAYOUTS = {
    # small: 14M + 4M generator; data parallel is plenty
    ("small", "v4-8"): (128, 1, 1, "none"),  # 32 seq/chip; 8.4 of 32 GiB
    ("small", "v4-32"): (128, 1, 1, "none"),  # 8 seq/chip; 2.5 of 32 GiB
    ("small", "v5e-256"): (1024, 1, 1, "none"),  # 4 seq/chip; 1.3 of 16 GiB
    # base: 110M + 34M generator
    ("base", "v4-8"): (256, 1, 1, "full"),  # 64 seq/chip; 6.0 of 32 GiB (remat with HBM to spare)
    ("base", "v4-32"): (256, 1, 1, "none"),  # 16 seq/chip; 16.7 of 32 GiB
    ("base", "v5e-256"): (256, 1, 1, "none"),  # 1 seq/chip; 2.7 of 16 GiB
    ("base", "v5p-32"): (256, 1, 1, "none"),  # 16 seq/chip; 16.7 of 95 GiB
    ("base", "v6e-64"): (256, 1, 1, "none"),  # 4 seq/chip; 5.2 of 30 GiB
    # large: 335M + 51M generator, batch 2048: fsdp shards the 6 GiB of parameters and
    # moments, microbatches bound the activations
    ("large", "v4-8"): (2048, 16, 4, "full"),  # 32 seq/chip x 16; 8.4 of 32 GiB
    ("large", "v4-32"): (2048, 4, 16, "full"),  # 32 seq/chip x 4; 13.1 of 32 GiB
    ("large", "v5e-256"): (2048, 4, 256, "full"),  # 2 seq/chip x 4: 8 did not fit at 512 tokens, 4 left 8% free
    ("large", "v5p-32"): (2048, 1, 16, "full"),  # 128 seq/chip; without remat 32 x 4 needed 379 GiB
    ("large", "v6e-64"): (2048, 2, 64, "full"),  # 16 seq/chip x 2: 32 a chip needed 32.8 GiB
}


def pod_config(size: str, pod: str) -> ml_collections.ConfigDict:
    """The pretraining config of `size` laid out for a TPU pod slice (see POD_LAYOUTS)."""
    if (size, pod) not in POD_LAYOUTS:
        raise ValueError(
            f"no layout for size={size!r} on pod={pod!r}; choose a pod of "
            f"{sorted({p for _, p in POD_LAYOUTS})} for a size of {sorted({s for s, _ in POD_LAYOUTS})}"
        )
    batch, grad_accum, fsdp, remat = POD_LAYOUTS[(size, pod)]
    c = pretraining_config(size)
    c.train.batch_size = batch
    c.train.grad_accum_steps = grad_accum
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, fsdp, 1
    c.mesh.tpu_slice = pod
    c.model.dtype = "bfloat16"
    c.model.remat_policy = remat
    # One compiled layer: libtpu compiles small (12 layers) in 35 s scanned, >20 min unrolled.
    c.model.scan_layers = True
    return c


def named_config(size: str, variant: str | None = None) -> ml_collections.ConfigDict:
    """The locked pretraining config of `size`, with `variant` a RECIPE_VARIANTS name or a
    TPU pod slice of POD_LAYOUTS (None: the size's own recipe)."""
    if variant in tpu.SLICES:
        config = pod_config(size, variant)
    else:
        config = pretraining_config(size, variant)
    config.lock()
    return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`configs/pretrain.py:SIZE[,VARIANT]`, e.g. `:small`, `:small,v4-32`, `:tiny,cpu_hours`."""
    if not arg:
        raise ValueError(
            f"name a model size: --config=configs/pretrain.py:SIZE[,VARIANT], SIZE one of {sorted(MODEL_SIZES)}"
        )
    size, _, variant = arg.partition(",")
    if size not in MODEL_SIZES:
        raise ValueError(f"model size {size!r} in {arg!r}; choose one of {sorted(MODEL_SIZES)}")
    return named_config(size, variant or None)
