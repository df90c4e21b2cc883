"""Learning studies: recipes over seeds and arms, GLUE rows, learning curves, the
context-free detector check. Run as modules: `python -m benchmarks.studies.<name>`."""
