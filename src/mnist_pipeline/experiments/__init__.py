"""Experiments: presets, the params a new experiment starts from, the compact table of
experiments against their baseline, and the way back to the last commit."""
