"""Benchmarks: pytest-benchmark suites for the hot paths (`just bench`) and the HTTP load script."""
