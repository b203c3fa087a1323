"""Evaluating SAC against baselines: metrics (:mod:`metrics`) and the QA harness (:mod:`qa`)."""

from .metrics import exact_match, f1, raw_exact_match, rouge1_f, score

__all__ = ["exact_match", "f1", "raw_exact_match", "rouge1_f", "score"]
