"""Benchmarking: runners per runtime, latency/accuracy measurement, budgets, reports."""
