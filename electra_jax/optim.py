"""Optimizer and learning-rate schedules of ELECTRA (google-research/electra optimization.py).

Fields read from `optim_config` (presets.optim_config): learning_rate, warmup_steps or
warmup_fraction (of all steps), decay ('linear' |
'polynomial'), end_learning_rate, power, b1, b2, eps, weight_decay, clip_norm,
layerwise_lr_decay (0 or 1.0 = off; fine-tuning uses 0.8 small/base, 0.9 large),
num_layers (the encoder depth, for layer-wise decay), bias_correction, optimizer ('adamw'
| 'lamb'; absent = 'adamw'). clip_norm 0 disables clipping.

`optimizer='lamb'` is LAMB (You et al. 2020), NVIDIA's choice for large-batch ELECTRA:
the AdamW update of each weight matrix is rescaled by its trust ratio
||param|| / ||update|| (1 where either is 0), as tensorflow-addons' LAMB, which NVIDIA's
ELECTRA uses; LayerNorm parameters and biases, excluded from weight decay, are excluded
from the trust ratio too (tfa's default for exclude_from_layer_adaptation).

`bias_correction=False` is the original AdamWeightDecayOptimizer: m / (sqrt(v) + eps) of
the raw moments. optax's Adam (True) divides them by 1 - b**t first, so its early updates
are SMALLER than the original's, by sqrt(1 - b2**t) / (1 - b1**t): 0.32 at steps 1 to 100,
0.80 at 1K, 0.98 at 4K. Inside the paper's 10K-step warmup the learning rate is tiny then;
a 1K-step CPU run spends its whole life in that regime.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from electra_jax import presets

_DECAYS = ("linear", "polynomial")
OPTIMIZERS = ("adamw", "lamb")


def make_learning_rate_schedule(
    peak_lr: float,
    warmup_steps: int,
    total_steps: int,
    *,
    decay: str = "linear",
    end_lr: float = 0.0,
    power: float = 1.0,
) -> Callable[[Any], Any]:
    """ELECTRA's schedule: polynomial decay from `peak_lr` to `end_lr` over `total_steps`,
    MULTIPLIED by the warmup ramp min(1, step / warmup_steps) (as the original does, so the
    peak actually reached is slightly below `peak_lr`). `decay='linear'` is power 1 (the
    `power` argument only matters for 'polynomial'). Returns step -> learning rate."""
    if decay not in _DECAYS:
        raise ValueError(f"optim.decay={decay!r}; choose one of {_DECAYS}")
    if total_steps <= 0:
        raise ValueError(f"total_steps={total_steps} must be positive")
    power = 1.0 if decay == "linear" else power

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        # (total - step) / total, not 1 - step / total: XLA turns the division into a
        # reciprocal multiply and 1 - 1000 * (1 / 1000) is -6e-8, a negative learning rate.
        remaining = (total_steps - jnp.minimum(step, total_steps)) / total_steps
        lr = (peak_lr - end_lr) * remaining**power + end_lr
        if warmup_steps:
            lr = lr * jnp.minimum(1.0, step / warmup_steps)
        return lr

    return schedule


def _path_names(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def _decays(names: list[str]) -> bool:
    # The original's exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"].
    no_decay = names[-1] == "bias" or any("LayerNorm" in n or "layer_norm" in n for n in names)
    return not no_decay


def decay_mask(params: Any) -> Any:
    """Pytree of bools: True where weight decay applies (not LayerNorm params, not biases)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: _decays(_path_names(path)), params)


_LAYER_NAME = re.compile(r"layer_(\d+)")


def layer_depth(path_names: list[str], num_layers: int) -> int:
    """ELECTRA's `_get_layer_lrs` depth of an unrolled parameter: `embeddings` and
    `embeddings_project` 0, `layer_i` i + 1, everything else (task heads) num_layers + 2."""
    for name in path_names:
        if name in ("embeddings", "embeddings_project"):
            return 0
        layer = _LAYER_NAME.fullmatch(name)
        if layer:
            return int(layer.group(1)) + 1
    return num_layers + 2


def _leaf_multiplier(path, leaf, decay: float, num_layers: int):
    names = _path_names(path)
    if "layers" in names:
        # nn.scan stacks layer i at index i of the leading axis: one multiplier per slice.
        if leaf.shape[0] != num_layers:
            raise ValueError(
                f"scanned parameter {'/'.join(names)} stacks {leaf.shape[0]} layers "
                f"but num_layers={num_layers}; set optim.num_layers={leaf.shape[0]}"
            )
        depths = jnp.arange(1, num_layers + 1, dtype=jnp.float32)
        per_layer = decay ** (num_layers + 2 - depths)
        return per_layer.reshape((num_layers,) + (1,) * (leaf.ndim - 1))
    return decay ** (num_layers + 2 - layer_depth(names, num_layers))


def layerwise_lr_decay_multipliers(params: Any, decay: float, num_layers: int) -> Any:
    """Pytree of learning-rate multipliers decay ** (num_layers + 2 - depth) (see
    `layer_depth`), exactly as google-research/electra fine-tuning: the top layer gets
    decay**2 and the task head decay**0 (the original's off-by-one, kept so published
    GLUE recipes reproduce). Scanned stacks get a [num_layers, 1, ...] array."""
    return jax.tree_util.tree_map_with_path(lambda path, leaf: _leaf_multiplier(path, leaf, decay, num_layers), params)


def scale_by_layerwise_lr_decay(decay: float, num_layers: int) -> optax.GradientTransformation:
    """Multiplies each update by its layer's multiplier; the multipliers come from the
    update tree's paths and shapes, so no params are needed to build the optimizer."""

    def update(updates, state, params=None):
        multipliers = layerwise_lr_decay_multipliers(updates, decay, num_layers)
        return jax.tree_util.tree_map(lambda u, m: (u * m).astype(u.dtype), updates, multipliers), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def scale_by_adam_without_bias_correction(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """The original's Adam: m / (sqrt(v) + eps) of the raw (not bias-corrected) moments.
    Its state is optax's ScaleByAdamState, so shardings and checkpoints are the same."""

    def init(params):
        zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)  # noqa: E731
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros())

    def update(grads, state, params=None):
        mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        updates = jax.tree_util.tree_map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        return updates, optax.ScaleByAdamState(count=optax.safe_increment(state.count), mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


# field -> (least, most) value it may take, None: no bound. A negative learning rate is
# gradient ascent that still "succeeds"; these fail before the first step instead.
RANGES = {
    "learning_rate": (0.0, None),
    "warmup_steps": (0, None),
    "warmup_fraction": (0.0, 1.0),
    "end_learning_rate": (0.0, None),
    "power": (0.0, None),
    "b1": (0.0, 1.0),
    "b2": (0.0, 1.0),
    "eps": (0.0, None),
    "weight_decay": (0.0, None),
    "clip_norm": (0.0, None),
    "layerwise_lr_decay": (0.0, 1.0),
}


def check_ranges(optim_config: Any) -> None:
    presets.check_ranges(optim_config, RANGES, "optim.")


def make_optimizer(optim_config: Any, total_steps: int) -> tuple[optax.GradientTransformation, Callable]:
    """(transformation, schedule) for `optim_config` (fields in the module docstring),
    checked against RANGES first.

    Order as the original: clip the global norm of the raw gradients, Adam, add decoupled
    weight decay (masked), [LAMB's trust ratio (masked),] scale by the layer-wise
    multipliers, then by -schedule(step); so decay and weight decay are both scaled by the
    per-layer learning rate, as in AdamWeightDecayOptimizer."""
    c = optim_config
    check_ranges(c)
    optimizer = c.get("optimizer", "adamw")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optim.optimizer={optimizer!r}; choose one of {OPTIMIZERS}")
    warmup_fraction = c.get("warmup_fraction", 0.0)
    if warmup_fraction and c.warmup_steps:
        raise ValueError(
            f"optim.warmup_steps={c.warmup_steps} and optim.warmup_fraction={warmup_fraction}: give one of them "
            "(set the other to 0)"
        )
    warmup_steps = int(warmup_fraction * total_steps) if warmup_fraction else c.warmup_steps
    schedule = make_learning_rate_schedule(
        c.learning_rate, warmup_steps, total_steps, decay=c.decay, end_lr=c.end_learning_rate, power=c.power
    )
    chain = [optax.clip_by_global_norm(c.clip_norm)] if c.clip_norm else []
    adam = (
        optax.scale_by_adam(b1=c.b1, b2=c.b2, eps=c.eps)
        if c.get("bias_correction", True)
        else scale_by_adam_without_bias_correction(c.b1, c.b2, c.eps)
    )
    chain += [adam, optax.add_decayed_weights(c.weight_decay, mask=decay_mask)]
    if optimizer == "lamb":
        chain.append(optax.masked(optax.scale_by_trust_ratio(), decay_mask))
    if c.layerwise_lr_decay not in (0, 1):
        chain.append(scale_by_layerwise_lr_decay(c.layerwise_lr_decay, c.num_layers))
    chain.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*chain), schedule


@flax.struct.dataclass
class TrainState:
    """What an optimizer step updates, in pretraining and fine-tuning alike."""

    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    def apply_gradients(self, grads: Any, tx: optax.GradientTransformation) -> "TrainState":
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        return TrainState(step=self.step + 1, params=optax.apply_updates(self.params, updates), opt_state=opt_state)
