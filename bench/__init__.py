"""Benchmarks (run by hand, not by the test suite): see benchmark.py."""
