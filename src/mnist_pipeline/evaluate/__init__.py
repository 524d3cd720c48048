"""Evaluation: metric formulas, the evaluation run and its outputs, figures."""
