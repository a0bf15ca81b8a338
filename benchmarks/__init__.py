"""Benchmarks (not tests): ``python -m benchmarks [--quick] [--json]`` prints the figures."""
