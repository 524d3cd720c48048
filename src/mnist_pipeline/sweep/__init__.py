"""Sweeps: search params.yaml with Optuna, each trial a DVC experiment (sweeps/NAME.yaml)."""
