"""Shared test set-up: 8 host CPU devices for the sharding tests, float32 matmuls, and a
persistent XLA compilation cache a module may share with its subprocesses."""

import os

# Must be set before jax initialises its backends; harmless for single-device tests.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """One persistent compilation cache for a module's runs (and the subprocesses it
    starts with JAX_COMPILATION_CACHE_DIR): each program compiles once per module."""
    cache_dir = str(tmp_path_factory.mktemp("xla_cache"))
    previous = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    compilation_cache.reset_cache()  # the cache is looked up once per process; look again
    yield cache_dir
    jax.config.update("jax_compilation_cache_dir", previous[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])
    compilation_cache.reset_cache()
