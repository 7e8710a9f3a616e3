"""Evaluation: frozen features, k-NN, linear probe, supervised reference, the protocol."""

from .protocol import DEFAULT_BUDGETS, evaluate_features, probe, random_encoder_rows, raw_pixel_rows, supervised_rows

__all__ = ["DEFAULT_BUDGETS", "evaluate_features", "probe", "random_encoder_rows", "raw_pixel_rows", "supervised_rows"]
