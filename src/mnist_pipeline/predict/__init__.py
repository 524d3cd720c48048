"""Predictions on image files outside the pipeline: reading, training-like preprocessing, top-k."""
