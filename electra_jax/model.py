"""ELECTRA in Flax: embeddings, BERT-style post-LN encoder, generator and discriminator.

The architecture follows the published ELECTRA (Clark et al. 2020, google-research/electra)
exactly, and every parameter name maps one-to-one onto HuggingFace transformers'
`ElectraForPreTraining` / `ElectraForMaskedLM` (see `hf.py`), e.g.
`electra/encoder/layer_3/attention/self/query/kernel` <-> `electra.encoder.layer.3.attention.self.query.weight`.

Every parameter carries logical axis names (`sharding.py` maps them onto the mesh):
  vocab: vocabulary rows            embed: embedding_size (before the projection)
  hidden: hidden_size               heads: attention projections (num_heads * head_dim)
  mlp: intermediate (FFN) size      layers: the stacked-layer axis when layers are scanned
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from electra_jax import objective

Array = jax.Array

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
}


FLOAT_DTYPES = ("float32", "bfloat16", "float16")


ATTENTION_IMPLS = (None, "xla", "cudnn", "pallas_tpu")


@dataclasses.dataclass(frozen=True)
class ElectraConfig:
    """Static hyper-parameters of one ELECTRA network (a generator or a discriminator)."""

    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 256
    num_layers: int = 12
    num_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    dtype: str = "float32"  # compute dtype (bfloat16 on accelerators)
    param_dtype: str = "float32"  # storage dtype of the parameters
    scan_layers: bool = False  # nn.scan over layers: one compiled layer, faster compiles
    remat_policy: str = "none"  # none | full | dots | dots_saveable
    # None/'xla'/'cudnn': jax.nn.dot_product_attention's implementation; 'pallas_tpu': the
    # Pallas flash-attention kernel of TPUs (no [batch, heads, seq, seq] tensor in HBM)
    attention_impl: Optional[str] = None
    # Word-embedding rows (= MLM logit columns) rounded up to a multiple of this, for
    # tile-aligned matmuls on accelerators; rows past vocab_size are never looked up and
    # their logits are masked, so outputs equal the unpadded model's.
    vocab_pad_multiple: int = 1

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                "choose num_heads that divides hidden_size"
            )
        if self.remat_policy != "none" and self.remat_policy not in _REMAT_POLICIES:
            raise ValueError(f"remat_policy={self.remat_policy!r}; choose one of {['none', *_REMAT_POLICIES]}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl={self.attention_impl!r}; choose one of {ATTENTION_IMPLS}")
        if self.attention_impl == "pallas_tpu" and self.attention_dropout:
            raise ValueError(
                "attention_impl='pallas_tpu' fuses the softmax and has no dropout on its "
                f"probabilities; set attention_dropout=0 (it is {self.attention_dropout})"
            )
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in FLOAT_DTYPES:
                raise ValueError(f"{field}={getattr(self, field)!r}; choose one of {FLOAT_DTYPES}")
        if self.vocab_pad_multiple < 1:
            raise ValueError(
                f"vocab_pad_multiple={self.vocab_pad_multiple}; use 1 (no padding) or a positive multiple such as 128"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the word-embedding table: vocab_size rounded up to vocab_pad_multiple."""
        return -(-self.vocab_size // self.vocab_pad_multiple) * self.vocab_pad_multiple


def generator_config(disc: ElectraConfig, hidden_fraction: float) -> ElectraConfig:
    """The generator the ELECTRA paper pairs with `disc`: same depth and embeddings,
    hidden and FFN sizes scaled by `hidden_fraction`, heads = max(1, hidden // 64)."""
    hidden = max(1, int(round(disc.hidden_size * hidden_fraction)))
    return dataclasses.replace(disc, hidden_size=hidden, intermediate_size=4 * hidden, num_heads=max(1, hidden // 64))


def configs_from_dict(model_config: Any) -> tuple[ElectraConfig, ElectraConfig]:
    """(generator, discriminator) configs from the `model` section of an ml_collections config."""
    fields = {f.name for f in dataclasses.fields(ElectraConfig)}
    values = {k: v for k, v in dict(model_config).items() if k in fields}
    disc = ElectraConfig(**values)
    return generator_config(disc, model_config.generator_hidden_fraction), disc


def pretraining_networks(config: Any) -> dict[str, ElectraConfig]:
    """network name -> config of what a pretraining config trains (`objective.OBJECTIVES`):
    ELECTRA's generator and discriminator; a generator without a discriminator (the MLM
    baseline) has the discriminator's size."""
    networks = objective.named(config.objective.kind).networks
    gen, disc = configs_from_dict(config.model)
    if "discriminator" not in networks:
        return {"generator": disc}
    return {"generator": gen, "discriminator": disc}


def build_pretraining_model(config: Any) -> ElectraPretrainingModel:
    networks = pretraining_networks(config)
    return ElectraPretrainingModel(networks["generator"], networks.get("discriminator"))


def pretraining_dummy_inputs(config: Any) -> tuple[Array, ...]:
    """(input_ids, attention_mask, token_type_ids, masked_positions) of one zero example:
    what `ElectraPretrainingModel.init` traces its shapes with."""
    ids = jnp.zeros((1, config.train.max_seq_length), jnp.int32)
    positions = jnp.zeros((1, config.objective.max_predictions_per_seq), jnp.int32)
    return ids, ids, ids, positions


def abstract_pretraining_params(config: Any):
    """Shapes and dtypes of the ElectraPretrainingModel's params, still in their
    logical-axis boxes (the sharding rules read them)."""
    net = build_pretraining_model(config)
    return jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), *pretraining_dummy_inputs(config))["params"])


def dense(features: int, axes: tuple, cfg: ElectraConfig, name: str, kernel_init=None) -> nn.Dense:
    """A dense layer with logical axes; kernel N(0, initializer_range) as BERT unless given."""
    return nn.Dense(
        features,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        kernel_init=nn.with_logical_partitioning(kernel_init or nn.initializers.normal(cfg.initializer_range), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]),
        name=name,
    )


def _layer_norm(axis_name: str, cfg: ElectraConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axis_name,)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis_name,)),
        name=name,
    )


def gelu(x: Array) -> Array:
    return nn.gelu(x, approximate=False)  # the exact erf form, as BERT/ELECTRA and HF "gelu"


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout ([B, S] -> [B, S, E])."""

    config: ElectraConfig

    def setup(self):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)

        def embed(num, axes, name):
            return nn.Embed(
                num,
                cfg.embedding_size,
                dtype=cfg.dtype,
                param_dtype=cfg.param_dtype,
                embedding_init=nn.with_logical_partitioning(init, axes),
                name=name,
            )

        self.word_embeddings = embed(cfg.padded_vocab_size, ("vocab", "embed"), "word_embeddings")
        self.position_embeddings = embed(cfg.max_position_embeddings, (None, "embed"), "position_embeddings")
        self.token_type_embeddings = embed(cfg.type_vocab_size, (None, "embed"), "token_type_embeddings")
        self.layer_norm = _layer_norm("embed", cfg, "LayerNorm")
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def __call__(self, input_ids: Array, token_type_ids: Array, deterministic: bool) -> Array:
        seq_len = input_ids.shape[-1]
        if seq_len > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}; truncate the inputs"
            )
        embedded = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(jnp.arange(seq_len)[None, :])
            + self.token_type_embeddings(token_type_ids)
        )
        embedded = self.dropout(self.layer_norm(embedded), deterministic=deterministic)
        return nn.with_logical_constraint(embedded, ("batch", "length", "embed"))

    def attend(self, hidden: Array) -> Array:
        """Logits against the word-embedding matrix (the tied MLM output layer)."""
        return self.word_embeddings.attend(hidden)


class SelfAttention(nn.Module):
    config: ElectraConfig

    @nn.compact
    def __call__(self, hidden: Array, attention_mask: Array, deterministic: bool) -> Array:
        cfg = self.config
        batch, seq_len, _ = hidden.shape
        heads_shape = (batch, seq_len, cfg.num_heads, cfg.head_dim)
        query, key, value = (
            dense(cfg.hidden_size, ("hidden", "heads"), cfg, name)(hidden).reshape(heads_shape)
            for name in ("query", "key", "value")
        )
        key_mask = attention_mask[:, None, None, :].astype(bool)  # [B, 1, 1, S]
        if cfg.attention_impl == "pallas_tpu":
            context = _pallas_tpu_attention(query, key, value, attention_mask)
        elif deterministic or cfg.attention_dropout == 0.0:
            context = jax.nn.dot_product_attention(query, key, value, mask=key_mask, implementation=cfg.attention_impl)
        else:
            # jax.nn.dot_product_attention has no dropout on the probabilities; the paper's
            # recipe (attention dropout 0.1) needs this explicit path while training.
            scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / jnp.sqrt(cfg.head_dim).astype(query.dtype)
            scores = jnp.where(key_mask, scores, jnp.finfo(scores.dtype).min)
            probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(query.dtype)
            probs = nn.Dropout(cfg.attention_dropout)(probs, deterministic=False)
            context = jnp.einsum("bhqk,bkhd->bqhd", probs, value)
        return context.reshape(batch, seq_len, cfg.hidden_size)


def _pallas_tpu_attention(query: Array, key: Array, value: Array, attention_mask: Array) -> Array:
    """Softmax attention by the Pallas TPU flash kernel, [B, S, H, D] in and out. Padding
    becomes segment ids: a real token attends to the real ones only, as under the key mask
    (a padded query attends to the padding, and its output is never used). A Pallas kernel
    is not partitioned by XLA, so under a mesh it runs per shard (batch and heads split as
    the logical-axis rules split them)."""
    from jax.experimental.pallas.ops.tpu import flash_attention

    def attend(q, k, v, mask):
        segments = flash_attention.SegmentIds(q=mask, kv=mask)
        q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # the kernel's [B, H, S, D]
        out = flash_attention.flash_attention(q, k, v, segment_ids=segments, sm_scale=q.shape[-1] ** -0.5)
        return out.transpose(0, 2, 1, 3)

    mask = attention_mask.astype(jnp.int32)
    if jax.sharding.get_abstract_mesh().empty:  # the mesh sharding.under_mesh sets, as flax's constraints read it
        return attend(query, key, value, mask)
    heads = nn.logical_to_mesh_axes(("batch", "length", "heads", None))
    masks = nn.logical_to_mesh_axes(("batch", "length"))
    return jax.shard_map(attend, in_specs=(heads, heads, heads, masks), out_specs=heads, check_vma=False)(
        query, key, value, mask
    )


class TransformerLayer(nn.Module):
    """One post-LayerNorm BERT layer; submodule names follow HF's `ElectraLayer`."""

    config: ElectraConfig

    @nn.compact
    def __call__(self, hidden: Array, attention_mask: Array, deterministic: bool) -> Array:
        cfg = self.config
        dropout = nn.Dropout(cfg.hidden_dropout)
        context = SelfAttention(cfg, name="attention_self")(hidden, attention_mask, deterministic)
        attended = dense(cfg.hidden_size, ("heads", "hidden"), cfg, "attention_output_dense")(context)
        hidden = _layer_norm("hidden", cfg, "attention_output_LayerNorm")(
            dropout(attended, deterministic=deterministic) + hidden
        )
        intermediate = gelu(dense(cfg.intermediate_size, ("hidden", "mlp"), cfg, "intermediate_dense")(hidden))
        ffn_out = dense(cfg.hidden_size, ("mlp", "hidden"), cfg, "output_dense")(intermediate)
        hidden = _layer_norm("hidden", cfg, "output_LayerNorm")(dropout(ffn_out, deterministic=deterministic) + hidden)
        return nn.with_logical_constraint(hidden, ("batch", "length", "hidden"))


class _ScannedLayer(nn.Module):
    """Adapts TransformerLayer to nn.scan's (carry, xs) -> (carry, ys) signature."""

    config: ElectraConfig

    @nn.compact
    def __call__(self, hidden, attention_mask, deterministic):
        return _layer_class(self.config)(self.config, name="layer")(hidden, attention_mask, deterministic), None


def _layer_class(cfg: ElectraConfig):
    if cfg.remat_policy == "none":
        return TransformerLayer
    return nn.remat(TransformerLayer, policy=_REMAT_POLICIES[cfg.remat_policy], static_argnums=(3,))


class Encoder(nn.Module):
    """`num_layers` transformer layers, either unrolled (`layer_{i}`) or scanned (`layers`,
    every parameter stacked on a leading `layers` axis)."""

    config: ElectraConfig

    @nn.compact
    def __call__(self, hidden: Array, attention_mask: Array, deterministic: bool) -> Array:
        cfg = self.config
        if cfg.scan_layers:
            scanned = nn.scan(
                _ScannedLayer,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            hidden, _ = scanned(cfg, name="layers")(hidden, attention_mask, deterministic)
            return hidden
        layer_class = _layer_class(cfg)
        for i in range(cfg.num_layers):
            hidden = layer_class(cfg, name=f"layer_{i}")(hidden, attention_mask, deterministic)
        return hidden


class ElectraModel(nn.Module):
    """HF's `electra` backbone: embeddings -> (projection) -> encoder -> [B, S, H].

    `shared_embeddings`, when given, is an `Embeddings` module owned by a parent (the
    pretraining model), so the generator and discriminator use one set of tables.
    """

    config: ElectraConfig
    shared_embeddings: Optional[Embeddings] = None

    def setup(self):
        cfg = self.config
        self.embeddings = self.shared_embeddings or Embeddings(cfg)
        if cfg.embedding_size != cfg.hidden_size:
            self.embeddings_project = dense(cfg.hidden_size, ("embed", "hidden"), cfg, "embeddings_project")
        self.encoder = Encoder(cfg)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        hidden = self.embeddings(input_ids, token_type_ids, deterministic)
        if self.config.embedding_size != self.config.hidden_size:
            hidden = self.embeddings_project(hidden)
        return self.encoder(hidden, attention_mask, deterministic)


class DiscriminatorHead(nn.Module):
    """dense(hidden) -> gelu -> dense(1): one replaced-token logit per position."""

    config: ElectraConfig

    @nn.compact
    def __call__(self, hidden: Array) -> Array:
        cfg = self.config
        hidden = gelu(dense(cfg.hidden_size, ("hidden", None), cfg, "dense")(hidden))
        return dense(1, ("hidden", None), cfg, "dense_prediction")(hidden)[..., 0]


class GeneratorHead(nn.Module):
    """HF's `generator_predictions`: dense(embedding_size) -> gelu -> LayerNorm."""

    config: ElectraConfig

    @nn.compact
    def __call__(self, hidden: Array) -> Array:
        cfg = self.config
        hidden = gelu(dense(cfg.embedding_size, ("hidden", "embed"), cfg, "dense")(hidden))
        return _layer_norm("embed", cfg, "LayerNorm")(hidden)


class LMOutputBias(nn.Module):
    """The output bias of the tied MLM layer (HF `generator_lm_head.bias`); logits of the
    padding columns past vocab_size are set to the dtype's minimum (probability 0)."""

    config: ElectraConfig

    @nn.compact
    def __call__(self, logits: Array) -> Array:
        cfg = self.config
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
            (cfg.padded_vocab_size,),
            cfg.param_dtype,
        )
        logits = logits + bias.astype(logits.dtype)
        if cfg.padded_vocab_size == cfg.vocab_size:
            return logits
        is_token = jnp.arange(cfg.padded_vocab_size) < cfg.vocab_size
        return jnp.where(is_token, logits, jnp.finfo(logits.dtype).min)


class Discriminator(nn.Module):
    """ELECTRA discriminator (HF `ElectraForPreTraining`): [B, S] replaced-token logits."""

    config: ElectraConfig
    shared_embeddings: Optional[Embeddings] = None

    def setup(self):
        self.electra = ElectraModel(self.config, self.shared_embeddings)
        self.discriminator_predictions = DiscriminatorHead(self.config)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
        hidden = self.electra(input_ids, attention_mask, token_type_ids, deterministic)
        return self.discriminator_predictions(hidden)


class Generator(nn.Module):
    """ELECTRA generator (HF `ElectraForMaskedLM`), output layer tied to the word embeddings.

    With `masked_positions` ([B, P] int) the logits are computed only there ([B, P, V]), as
    pretraining needs; without, over the whole sequence ([B, S, V]). V is the padded
    vocabulary (`config.padded_vocab_size`); columns past vocab_size hold the dtype's minimum.
    """

    config: ElectraConfig
    shared_embeddings: Optional[Embeddings] = None

    def setup(self):
        self.electra = ElectraModel(self.config, self.shared_embeddings)
        self.generator_predictions = GeneratorHead(self.config)
        self.generator_lm_head = LMOutputBias(self.config)

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        deterministic=True,
        masked_positions: Optional[Array] = None,
    ):
        hidden = self.electra(input_ids, attention_mask, token_type_ids, deterministic)
        if masked_positions is not None:
            hidden = jnp.take_along_axis(hidden, masked_positions[..., None], axis=1)  # [B, P, H]
        hidden = self.generator_predictions(hidden)
        return self.generator_lm_head(self.electra.embeddings.attend(hidden))


class ElectraPretrainingModel(nn.Module):
    """Generator + discriminator holding ONE embedding module (top-level `embeddings`).

    Param tree: {embeddings, generator: {electra: {embeddings_project?, encoder},
    generator_predictions, generator_lm_head}, discriminator: {electra: {...},
    discriminator_predictions}}. With `discriminator_config=None` (the MLM-only objective)
    there is no `discriminator` subtree: a BERT-style masked LM.
    """

    generator_config: ElectraConfig
    discriminator_config: Optional[ElectraConfig]

    def setup(self):
        gen, disc = self.generator_config, self.discriminator_config
        shared = ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size")
        mismatched = [f for f in shared if disc is not None and getattr(gen, f) != getattr(disc, f)]
        if mismatched:
            raise ValueError(f"generator and discriminator must agree on {mismatched} to share embeddings")
        self.embeddings = Embeddings(disc or gen)
        self.generator = Generator(gen, shared_embeddings=self.embeddings)
        if disc is not None:
            self.discriminator = Discriminator(disc, shared_embeddings=self.embeddings)

    def __call__(self, input_ids, attention_mask, token_type_ids, masked_positions, deterministic=True):
        """Init helper: runs every network once on the same inputs."""
        gen_logits = self.generate(input_ids, attention_mask, token_type_ids, masked_positions, deterministic)
        if self.discriminator_config is None:
            return gen_logits
        return gen_logits, self.discriminate(input_ids, attention_mask, token_type_ids, deterministic)

    def generate(self, input_ids, attention_mask, token_type_ids, masked_positions, deterministic=True):
        return self.generator(
            input_ids, attention_mask, token_type_ids, deterministic, masked_positions=masked_positions
        )

    def discriminate(self, input_ids, attention_mask, token_type_ids, deterministic=True):
        return self.discriminator(input_ids, attention_mask, token_type_ids, deterministic)


def count_params(params: Any) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(params))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_params(module: nn.Module, rng: Array, seq_len: int):
    ids = jnp.zeros((1, seq_len), jnp.int32)
    return module.init(rng, ids, ids, ids, deterministic=True)["params"]


def abstract_params(module: nn.Module):
    """Shapes and dtypes of a network's params in their logical-axis boxes (for shardings)."""
    return jax.eval_shape(lambda: _init_params(module, jax.random.PRNGKey(0), 8))


def init_params(module: nn.Module, rng: Array, seq_len: int = 8):
    """Random parameters (logical-axis boxes removed) for a Generator or Discriminator."""
    return nn.meta.unbox(_init_params(module, rng, seq_len))


def apply_network(net: nn.Module, params: Any, batch: dict, deterministic: bool, rngs=None) -> Any:
    """`net` (a Discriminator, Generator or task model) on a batch holding data_pipelines.pretraining.FEATURE_KEYS."""
    return net.apply(
        {"params": params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        deterministic=deterministic,
        rngs=rngs,
    )


def split_pretraining_params(params: dict) -> dict[str, dict]:
    """The networks of an ElectraPretrainingModel's params ("generator", and "discriminator"
    unless MLM-only) as standalone Generator / Discriminator trees, each with its own
    reference to the shared embeddings."""
    return {
        network: {**params[network], "electra": {"embeddings": params["embeddings"], **params[network]["electra"]}}
        for network in ("generator", "discriminator")
        if network in params
    }


def join_pretraining_params(networks: dict[str, dict], shared_from: str) -> dict:
    """The inverse of `split_pretraining_params`: standalone networks as one
    ElectraPretrainingModel tree, its shared embeddings taken from `networks[shared_from]`."""
    params = {"embeddings": networks[shared_from]["electra"]["embeddings"]}
    for network, tree in networks.items():
        encoder = {name: subtree for name, subtree in tree["electra"].items() if name != "embeddings"}
        params[network] = {**tree, "electra": encoder}
    return params
