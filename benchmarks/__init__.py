"""Side-by-side benchmarks of our circusd, Circus 0.19, supervisord 4.3 and a bare floor.

``python -m benchmarks.run --quick`` (or ``make bench``) runs the short set; ``--full`` all of
it. See ``run.py`` for the options and ``BENCHMARKS.md`` for the last full table.
"""
