"""configs/pretrain.py:base under its older name (`:VARIANT` as there)."""

import functools

from electra_jax import presets

get_config = functools.partial(presets.named_config, "base")
