"""Configs of every electra-jax program; installed as electra_jax.configs."""
