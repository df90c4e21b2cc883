"""ELECTRA-Small pretraining (the recipe lives in electra_jax/presets.py).

    --config=configs/electra_small.py           the paper's recipe, float32, any devices
    --config=configs/electra_small.py:v4-32     laid out for a TPU pod slice: v4-8, v4-32 or
                                             v5e-256 (batch, mesh, bfloat16, remat; see
                                             presets.POD_LAYOUTS for per-chip memory)

Override any field on the command line, e.g. --config.train.batch_size=64.
"""
from electra_jax import presets


def get_config(pod=None):
    config = presets.pod_config("small", pod) if pod else presets.pretraining_config("small")
    config.lock()
    return config
