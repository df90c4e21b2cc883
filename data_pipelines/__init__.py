"""Data pipelines for electra-jax: tokenizers, pretraining shards, tf.data readers, GLUE."""
