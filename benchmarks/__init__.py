"""Speed and memory benchmarks of the adtr package (``make bench`` runs ``benchmarks/run.py``).

Every comparison is a ratio of two medians taken in the same run, with the variants
interleaved round by round, so that a busy machine slows both sides alike. Nothing here is
a timed test: ``tests/test_benchmarks.py`` only runs the code paths at minimal sizes.
"""
