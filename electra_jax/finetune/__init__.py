"""Fine-tuning ELECTRA: what every task shares in `common.py` (the pretrained start, the
recipe, batching, the train step and predictor on the training core, `Setup` and
`run_seeds`), one module per task (glue.py, classify.py, tagging.py, squad.py: its data,
head, loss, metrics and outputs; its knobs in configs/<task>.py), and the CLI with its
registry of tasks (`__main__.TASKS`)."""
