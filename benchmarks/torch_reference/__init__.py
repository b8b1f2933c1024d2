"""PyTorch versions of the schemes at our sizes, for the throughput comparison (benchmarks/compare.py)."""
