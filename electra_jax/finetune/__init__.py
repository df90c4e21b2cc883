"""Fine-tuning ELECTRA: the shared machinery in `common.py` (pretrained init, recipe, train
step / predict builders, loop), task heads, metrics and data in glue.py, classify.py,
tagging.py and squad.py."""
