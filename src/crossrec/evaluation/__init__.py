"""Evaluation: vectorised ranking metrics and the full-ranking / sampled evaluator."""
