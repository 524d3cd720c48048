"""Benchmarks behind `make bench` (speed and memory targets; never timed in tests)."""
