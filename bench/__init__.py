"""Benchmarks for lif_cuda: the fused op against its reference and other SNN libraries.

    python -m bench --quick                 # the whole suite, small, to see that it works
    python -m bench                         # layer workload, CPU, all installed implementations
    python -m bench --workload onm          # Linear(n,n) + LIF, the Open Neuromorphic set-up
    python bench/bench_cpu.py               # fused vs reference vs Rockpool, CPU (issue 2)
    python bench/plot.py bench/results/*.json
    python bench/report.py bench/results/*.json

The package lif_cuda never imports bench; bench uses lif_cuda's public face only.
"""
