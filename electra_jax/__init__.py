"""electra-jax: ELECTRA pretraining and fine-tuning in JAX/Flax."""
