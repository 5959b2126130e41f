"""In-process measurements, each run in a child process: ``python -m bench.probes KIND SPEC_JSON OUT_PATH``.

A child process because ``LD_PRELOAD`` (OpenBLAS) only acts at process start,
and so the benchmark runner itself never imports mlx.
"""
