"""Execution metrics: records and their inbox, ingestion, pattern fidelity, evals, comparisons
(seed 002 §5)."""
