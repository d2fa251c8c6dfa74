"""MSSR: continual fine-tuning of causal LMs with memory-inspired replay.

This package holds the algorithms (memory model, samplers, schedulers, strategies, task
streams, metrics, model loading) as plain Python/PyTorch. Everything that runs on Ray lives
in the sibling package ``pipelines``.
"""

__version__ = "0.1.0"
