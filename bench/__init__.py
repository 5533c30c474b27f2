"""Benchmarks of lif_cuda: `python -m bench <suite>` (see bench/README.md). The package lif_cuda
never imports bench; bench uses lif_cuda's public face only."""
