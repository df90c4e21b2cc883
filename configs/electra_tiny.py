"""ELECTRA-Tiny pretraining (the recipe lives in electra_jax/presets.py).

    --config=configs/electra_tiny.py            the README quick start (embedded corpus, minutes)
    --config=configs/electra_tiny.py:cpu_hours  about one CPU core-hour on prepared English shards
                                             (BENCHMARKS.md "GLUE after one CPU core-hour")

Override any field on the command line, e.g. --config.train.batch_size=64.
"""
from electra_jax import presets


def get_config(variant=None):
    config = presets.pretraining_config("tiny", variant)
    config.lock()
    return config
