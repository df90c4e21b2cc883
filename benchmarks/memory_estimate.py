"""Per-chip memory of ELECTRA pretraining for every paper size on every TPU pod layout.

    python benchmarks/memory_estimate.py                 # all presets.POD_LAYOUTS
    python benchmarks/memory_estimate.py --size=base --pod=v4-32

Parameters, Adam moments and gradients are counted exactly from the parameter shapes and
their shardings (logical-axis rules over the config's mesh, no devices needed).
Activations follow Korthikanti et al. 2022 ("Reducing activation recomputation", eq. 1):
per layer s*b*h*(34 + 5*a*s/h) bytes at 2-byte activations with 1-byte dropout masks,
scaled to the compute dtype; "full" remat keeps one layer's worth plus every layer's
input. The generator (its own h and a) and the gathered MLM logits are added. XLA's buffer
assignment differs in detail; tests/test_memory_estimate.py bounds the gap on the CPU.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from electra_jax import model, presets, sharding, tpu  # noqa: E402

GIB = 2**30


def _shard_elements(shape, mesh_axes, mesh_sizes: dict) -> int:
    """Elements of one device's shard of an array of `shape` split as `mesh_axes`."""
    total = 1
    for dim, axes in zip(shape, tuple(mesh_axes) + (None,) * (len(shape) - len(mesh_axes))):
        total *= math.ceil(dim / sharding.num_shards(axes, mesh_sizes))
    return total


def state_bytes_per_chip(config, num_chips: int) -> dict[str, int]:
    """float32 parameters, Adam mu and nu, and gradients, as sharded on one chip."""
    mesh_sizes = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(config.mesh, num_chips)))
    boxed = model.abstract_pretraining_params(config)
    specs = nn.get_partition_spec(boxed)
    rules = sharding.logical_axis_rules(config)
    shapes = jax.tree_util.tree_leaves(nn.meta.unbox(boxed))
    mesh_specs = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(
            lambda s: nn.logical_to_mesh_axes(s, rules),
            specs,
            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec),
        ),
        is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec),
    )
    param_bytes = sum(
        _shard_elements(leaf.shape, spec, mesh_sizes) * jnp.dtype(leaf.dtype).itemsize
        for leaf, spec in zip(shapes, mesh_specs)
    )
    total_params = sum(math.prod(leaf.shape) for leaf in shapes)
    return {"total_params": total_params, "params": param_bytes, "adam": 2 * param_bytes, "grads": param_bytes}


def activation_bytes_per_chip(config, num_chips: int) -> int:
    """Saved activations of one microbatch on one chip (see the module docstring)."""
    mesh = sharding.mesh_shape(config.mesh, num_chips)
    batch_shards = mesh[sharding.MESH_AXES.index("data")] * mesh[sharding.MESH_AXES.index("fsdp")]
    b = config.train.batch_size // config.train.grad_accum_steps / batch_shards
    s = config.train.max_seq_length
    scale = jnp.dtype(config.model.dtype).itemsize / 2  # the formula counts 2-byte activations
    gen_cfg, disc_cfg = model.configs_from_dict(config.model)
    total = 0.0
    for cfg in (gen_cfg, disc_cfg):
        h, a, layers = cfg.hidden_size, cfg.num_heads, cfg.num_layers
        per_layer = s * b * h * (34 + 5 * a * s / h) * scale
        if cfg.remat_policy == "full":  # layer inputs kept, one layer recomputed at a time
            total += layers * s * b * h * 2 * scale + per_layer
        else:
            total += layers * per_layer
    # generator logits at the gathered positions: float32 logits, softmax and their gradient
    predictions = config.objective.max_predictions_per_seq
    total += 3 * b * predictions * gen_cfg.padded_vocab_size * 4
    return int(total)


def estimate(config, num_chips: int) -> dict[str, float]:
    state = state_bytes_per_chip(config, num_chips)
    activations = activation_bytes_per_chip(config, num_chips)
    return {
        **state,
        "activations": activations,
        "total": state["params"] + state["adam"] + state["grads"] + activations,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["small", "base", "large"])
    parser.add_argument("--pod", choices=sorted({pod for _, pod in presets.POD_LAYOUTS}))
    args = parser.parse_args(argv)
    print(
        "| size | pod | seq/chip (x microbatches) | params | params+Adam+grads GiB | "
        "activations GiB | total GiB | HBM GiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, pod in presets.POD_LAYOUTS:
        if (args.size and size != args.size) or (args.pod and pod != args.pod):
            continue
        config = presets.pod_config(size, pod)
        chips, hbm = tpu.SLICES[pod].chips, tpu.CHIPS[tpu.SLICES[pod].chip].hbm_bytes / GIB
        e = estimate(config, chips)
        mesh = sharding.mesh_shape(config.mesh, chips)
        per_chip = config.train.batch_size // config.train.grad_accum_steps // (mesh[0] * mesh[1])
        state = (e["params"] + e["adam"] + e["grads"]) / GIB
        print(
            f"| {size} | {pod} | {per_chip} (x{config.train.grad_accum_steps}) | "
            f"{e['total_params'] / 1e6:.0f}M | {state:.2f} | {e['activations'] / GIB:.1f} | "
            f"{e['total'] / GIB:.1f} | {hbm:.0f} |"
        )


if __name__ == "__main__":
    main()
