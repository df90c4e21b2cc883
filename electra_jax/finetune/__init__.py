"""Fine-tuning ELECTRA: task heads, metrics and training loops (GLUE in `glue.py`)."""
