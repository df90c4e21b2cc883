"""Where the public data for benchmarks and evaluations lies (the English corpus, GLUE, SQuAD,
the BERT vocabulary, Chinese text; sources and licenses in its README.md):
$ELECTRA_JAX_SHARED_DATA, else `../shared/data` beside the checkout. It is read in place,
never copied into the repository.
"""

import os

ENV_VAR = "ELECTRA_JAX_SHARED_DATA"
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_data_dir() -> str:
    return os.environ.get(ENV_VAR) or os.path.join(os.path.dirname(_CHECKOUT), "shared", "data")


def shared_path(*parts: str) -> str:
    """A path inside the shared data folder (it may not exist; callers check or skip)."""
    return os.path.join(shared_data_dir(), *parts)
