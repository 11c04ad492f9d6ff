"""hpcenv: safe, fast, reproducible Python environments on HPC clusters."""

__version__ = "0.1.0"
