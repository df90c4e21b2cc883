"""ELECTRA-Tiny pretraining (the recipe lives in electra_jax/presets.py).

Override any field on the command line, e.g. --config.train.batch_size=64.
"""
from electra_jax import presets


def get_config():
    config = presets.pretraining_config("tiny")
    config.lock()
    return config
