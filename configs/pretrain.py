"""ELECTRA pretraining: every size's recipe, its named variants and its TPU pod layouts,
as data, and the config they make (`get_config`).

    --config=configs/pretrain.py:small            the paper's recipe, float32, any devices
    --config=configs/pretrain.py:small,v4-32      laid out for a TPU pod slice (POD_LAYOUTS:
                                                  batch, microbatches, fsdp, remat; bfloat16)
    --config=configs/pretrain.py:tiny             the README quick start (embedded corpus)
    --config=configs/pretrain.py:tiny,cpu_hours   at most two CPU core-hours on prepared shards
    --config=configs/pretrain.py:small,init       the size's recipe, the architecture of the
                                                  weights --config.init.* names (docs/pretraining.md
                                                  "Continuing from released weights")

Sizes: tiny, small, base, large (electra_jax/presets.MODEL_SIZES, which fine-tuning reads
too). Sizes and hyper-parameters follow Clark et al. 2020 (Table 6) and google-research/
electra `configure_pretraining.py`. Override any field on the command line, e.g.
--config.train.batch_size=64; from Python, `get_config("small,v4-32")` or
`pretraining_config("tiny")`.
"""

from __future__ import annotations

import ml_collections

from electra_jax import presets, tpu

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


# size -> {section.field: value}: where a size's recipe leaves the paper's. tiny is the README
# quick start, found by measurement (benchmarks/results/HISTORY.md "Quick-start recipe"): no dropout (a few
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
    # (benchmarks/results/HISTORY.md "GLUE against pretraining minutes"). A generator as wide as the
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


def _leave_architecture_to_init(m: ml_collections.ConfigDict) -> None:
    """presets.ARCHITECTURE fields unset, keeping their types (so a command line may still set one)
    and the references to them (optim.num_layers)."""
    for field in presets.ARCHITECTURE:
        m.get_ref(field).set(None)


def model_config(size: str) -> ml_collections.ConfigDict:
    if size not in presets.MODEL_SIZES:
        raise ValueError(f"model size {size!r}; choose one of {sorted(presets.MODEL_SIZES)}")
    size_fields = presets.MODEL_SIZES[size]
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
    m.attention_impl = ml_collections.config_dict.placeholder(str)  # None (XLA), "cudnn" or "pallas_tpu"
    m.vocab_pad_multiple = 1  # embedding rows / MLM logits padded to a multiple (e.g. 128); masked
    return m


def pretraining_config(size: str, variant: str | None = None) -> ml_collections.ConfigDict:
    """The full pretraining config for a paper size (and one of its RECIPE_VARIANTS); lock it
    before handing it to users."""
    if variant not in (None, presets.FROM_INIT) and (size, variant) not in RECIPE_VARIANTS:
        raise ValueError(
            f"no recipe variant {variant!r} for size {size!r}; choose one of "
            f"{sorted([presets.FROM_INIT] + [v for s, v in RECIPE_VARIANTS if s == size])}"
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
    o.max_predictions_per_seq = presets.max_predictions_per_seq(mask_prob, seq_len)  # static cap per sequence
    o.mask_token_frac = 0.85  # of the chosen positions: replaced by [MASK]
    o.random_token_frac = 0.0  # ... replaced by a random token (the paper: none); the rest stay unchanged
    o.disc_weight = 50.0  # lambda: total = mlm_loss + disc_weight * disc_loss
    o.temperature = 1.0  # sampling temperature for the generator's replacements
    o.sampler = "gumbel"  # gumbel (the original's) | inverse_cdf (same law, one uniform a position)
    o.disallow_correct = False  # if True, never sample the original token (an ablation in the paper)
    o.mask_token_id = 4  # [MASK]; checked against the tokenizer at start-up
    o.special_token_ids = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]: never masked

    c.optim = presets.optim_config(learning_rate=recipe["learning_rate"], warmup_steps=recipe["warmup_steps"])
    c.optim.num_layers = c.model.get_ref("num_layers")

    c.train = t = ml_collections.ConfigDict()
    t.seed = 0  # initialisation, masking and sampling all derive from it
    t.eval_seed = presets.DEFAULT_EVAL_SEED  # the held-out masking and sampling
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

    c.init = presets.init_config()
    c.mesh = presets.mesh_config()
    c.sharding = presets.sharding_config()
    if variant == presets.FROM_INIT:
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
    ("base", "v4-8"): (256, 1, 1, "full"),  # 64 seq/chip; 6.0 of 32 GiB (beats 4 microbatches without remat)
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
            f"name a model size: --config=configs/pretrain.py:SIZE[,VARIANT], SIZE one of {sorted(presets.MODEL_SIZES)}"
        )
    size, _, variant = arg.partition(",")
    if size not in presets.MODEL_SIZES:
        raise ValueError(f"model size {size!r} in {arg!r}; choose one of {sorted(presets.MODEL_SIZES)}")
    return named_config(size, variant or None)
