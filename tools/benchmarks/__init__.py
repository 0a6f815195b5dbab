"""Benchmarks, each measuring a reference in the same run (python -m tools.benchmarks.NAME)."""
