"""Mesh construction and shardings, declared from config (never hand-placed).

Mesh axes are ('data', 'fsdp', 'tensor'). The batch is split over data x fsdp; parameters
carry logical axis names (model.py) that `config.sharding.logical_axis_rules` maps onto
mesh axes; optimizer state follows the parameters it belongs to.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_config: Any, num_devices: int) -> tuple[int, ...]:
    """Sizes for ('data', 'fsdp', 'tensor'); one axis may be -1 and takes what remains."""
    sizes = [int(mesh_config[name]) for name in MESH_AXES]
    free = [name for name, size in zip(MESH_AXES, sizes) if size == -1]
    if len(free) > 1 or any(size == 0 or size < -1 for size in sizes):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))}: each axis must be a positive "
            "size, and at most one may be -1 (the remaining devices)"
        )
    fixed = math.prod(size for size in sizes if size != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices do not "
                f"divide by the fixed axes' product {fixed}"
            )
        sizes[MESH_AXES.index(free[0])] = num_devices // fixed
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices "
            f"but {num_devices} are available; set one axis to -1"
        )
    return tuple(sizes)


def make_mesh(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(mesh_config, len(devices))
    try:  # topology-aware placement on TPU/GPU; falls back for CPU and odd device counts
        device_array = mesh_utils.create_device_mesh(shape, devices)
    except (AssertionError, NotImplementedError, ValueError):
        device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, MESH_AXES)


def logical_axis_rules(config: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in config.sharding.logical_axis_rules
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """[batch, seq] arrays: batch split over data x fsdp, sequence unsplit."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def with_shardings(shapes: Any, shardings: Any) -> Any:
    """`shapes` (a tree of jax.ShapeDtypeStruct, e.g. from jax.eval_shape) carrying
    `shardings`: the target of a restore or an ahead-of-time lowering."""
    return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def place(tree: Any, shardings: Any) -> Any:
    """Host arrays (every process holding the same full values) as global arrays with
    `shardings`: each process fills only its own devices' shards (multi-host safe).
    Leaves that are jax.Arrays already stay as they are."""

    def place_leaf(x, s):
        if isinstance(x, jax.Array):
            return x
        return jax.make_array_from_callback(x.shape, s, lambda index: x[index])

    return jax.tree_util.tree_map(place_leaf, tree, shardings)


def param_shardings(boxed_params: Any, mesh: Mesh, rules) -> Any:
    """NamedShardings for (abstract) parameters that carry logical-axis boxes."""
    specs = nn.get_partition_spec(boxed_params)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def num_shards(spec_entry: Any, mesh_sizes: dict[str, int]) -> int:
    """How many pieces one PartitionSpec entry (None, an axis name or a tuple of names)
    splits its dimension into."""
    axes = () if spec_entry is None else (spec_entry,) if isinstance(spec_entry, str) else spec_entry
    return math.prod(mesh_sizes[axis] for axis in axes)


def check_divisible(abstract_params: Any, shardings: Any) -> None:
    """Every parameter dimension must split evenly over the mesh axes it is sharded on
    (jax refuses uneven shardings deep inside init); fail first, naming the parameters."""
    uneven = []

    def check(path, leaf, sharding: NamedSharding):
        for dim, axes in zip(leaf.shape, sharding.spec):
            parts = num_shards(axes, sharding.mesh.shape)
            if dim % parts:
                names = "x".join((axes,) if isinstance(axes, str) else axes)
                uneven.append(f"{jax.tree_util.keystr(path)} {tuple(leaf.shape)}: {dim} over {names}={parts}")

    jax.tree_util.tree_map_with_path(check, abstract_params, shardings)
    if uneven:
        raise ValueError(
            f"{len(uneven)} parameter dimension(s) do not split evenly over the mesh: "
            f"{'; '.join(uneven[:4])}{' ...' if len(uneven) > 4 else ''}. Choose mesh sizes that "
            "divide them; for the vocabulary, set --config.model.vocab_pad_multiple to a "
            "multiple of those sizes (e.g. 128)"
        )


def opt_state_shardings(
    tx: optax.GradientTransformation, abstract_opt_state: Any, params_sharding: Any, mesh: Mesh
) -> Any:
    """Optimizer moments share their parameter's sharding; counters are replicated."""
    return optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        abstract_opt_state,
        params_sharding,
        transform_non_params=lambda _: replicated(mesh),
    )


def under_mesh(mesh: Mesh, rules, fn):
    """`fn` (a jitted function) called, and lowered, with the mesh and the logical-axis
    rules active, so the model's activation constraints apply."""

    @functools.wraps(fn)
    def wrapped(*args):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return fn(*args)

    def lower(*args):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return fn.lower(*args)

    wrapped.lower = lower
    return wrapped
