"""Helpers for tests and benchmarks: synthetic data sets in the upstream raw layouts."""
