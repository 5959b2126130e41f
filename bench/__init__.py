"""Benchmarks of the platform, side by side with in-process MLX and the servers a user would run instead.

``python -m bench [section ...]`` (or ``make bench``) runs them; see ``bench/README.md``.
"""
