"""Benchmarks against peers run in the same session (see benchmarks/README.md)."""
