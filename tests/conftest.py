"""Shared test set-up: 8 host CPU devices for the sharding tests, float32 matmuls."""

import os

# Must be set before jax initialises its backends; harmless for single-device tests.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
