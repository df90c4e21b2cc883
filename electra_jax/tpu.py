"""TPU chips and slices: what each chip offers and how a slice looks to JAX, for compiling
the real train step for a slice on a machine without one (`electra_jax.compile`).

Chip figures are Google Cloud's published per-chip specifications (cloud.google.com/tpu/docs/
v4, v5e, v5p-training, v6e, read 2026-12). The collective bandwidth is the per-chip share of
the published all-reduce bandwidth per pod (v4: 1.1 PB/s over 4,096 chips; v5e: 51.2 TB/s and
v6e: 102.4 TB/s over 256 chips); v5p publishes none, so it gets half its bidirectional ICI
bandwidth (1,200 GB/s), the ratio v5e and v6e show.
"""

from __future__ import annotations

import dataclasses
import os

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU chip as JAX sees it (a v4 / v5p chip is one megacore device of 2 cores)."""

    device_kind: str  # jax's Device.device_kind
    peak_bf16_flops: float  # dense matmul FLOP/s
    hbm_bytes: int
    hbm_bytes_per_s: float
    allreduce_bytes_per_s: float  # per chip; see the module doc


CHIPS = {
    "v4": Chip("TPU v4", 275e12, 32 * GIB, 1200e9, 1.1e15 / 4096),
    "v5e": Chip("TPU v5 lite", 197e12, 16 * GIB, 819e9, 51.2e12 / 256),
    "v5p": Chip("TPU v5", 459e12, 95 * GIB, 2765e9, 1200e9 / 2),
    "v6e": Chip("TPU v6 lite", 918e12, 32 * 10**9, 1638e9, 102.4e12 / 256),
}


@dataclasses.dataclass(frozen=True)
class Slice:
    chip: str  # a CHIPS key
    topology: str  # libtpu's topology name
    chips: int

    @property
    def chip_config(self) -> str:
        """v4 and v5p run as megacore: one JAX device per chip, as on the real slice."""
        return "megacore" if self.chip in ("v4", "v5p") else "default"


# Cloud TPU names count TensorCores for v4 / v5p (2 a chip) and chips for v5e / v6e.
SLICES = {
    "v4-8": Slice("v4", "v4:2x2x1", 4),
    "v4-32": Slice("v4", "v4:2x2x4", 16),
    "v4-128": Slice("v4", "v4:4x4x4", 64),
    "v5e-4": Slice("v5e", "v5e:2x2", 4),
    "v5e-8": Slice("v5e", "v5e:2x4", 8),
    "v5e-256": Slice("v5e", "v5e:16x16", 256),
    "v5p-32": Slice("v5p", "v5:2x2x4", 16),
    "v5p-128": Slice("v5p", "v5:4x4x4", 64),
    "v6e-8": Slice("v6e", "v6e:2x4", 8),
    "v6e-64": Slice("v6e", "v6e:8x8", 64),
    "v6e-256": Slice("v6e", "v6e:16x16", 256),
}


def get_slice(name: str) -> Slice:
    if name not in SLICES:
        raise ValueError(f"unknown TPU slice {name!r}; choose one of {', '.join(SLICES)}")
    return SLICES[name]


def slice_devices(name: str) -> list:
    """The devices of slice `name` as JAX on it would see them, from libtpu's topology
    description: compile for them, never run on them. Needs libtpu (`pip install .[tpu]`)."""
    tpu_slice = get_slice(name)
    # libtpu locks /tmp/libtpu_lockfile for the process that owns the chips; describing a
    # topology owns none, so two compiles (or a compile beside a run) may share it.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        from jax.experimental import topologies

        topology = topologies.get_topology_desc(
            platform="tpu",
            topology_name=tpu_slice.topology,
            chip_config_name=tpu_slice.chip_config,
            chips_per_host_bounds=(2, 2, 1),
            num_slices=1,
        )
    except Exception as error:  # no libtpu, or one that does not know this topology
        raise ValueError(
            f"cannot describe TPU slice {name} ({tpu_slice.topology}): {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}. Install libtpu: pip install -e '.[tpu]'"
        ) from error
    devices = list(topology.devices)
    if len(devices) != tpu_slice.chips:
        raise ValueError(f"libtpu describes {name} as {len(devices)} devices, expected {tpu_slice.chips} chips")
    return devices
