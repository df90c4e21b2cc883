"""ELECTRA pretraining, one file for every size (the recipes live in electra_jax/presets.py).

    --config=configs/pretrain.py:small            the paper's recipe, float32, any devices
    --config=configs/pretrain.py:small,v4-32      laid out for a TPU pod slice: v4-8, v4-32 or
                                                  v5e-256 (batch, mesh, bfloat16, remat; see
                                                  presets.POD_LAYOUTS for per-chip memory)
    --config=configs/pretrain.py:tiny             the README quick start (embedded corpus)
    --config=configs/pretrain.py:tiny,cpu_hours   at most two CPU core-hours on prepared shards
    --config=configs/pretrain.py:small,init       the size's recipe, the architecture of the
                                                  weights --config.init.* names (README
                                                  "Continue pretraining a released ELECTRA")

Sizes: tiny, small, base, large. Override any field on the command line, e.g.
--config.train.batch_size=64.
"""

from electra_jax.presets import get_config  # noqa: F401  (ml_collections calls get_config(arg))
