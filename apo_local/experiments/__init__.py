"""Experiments over many runs, each run a normal run directory: ``seeds`` (one config on several seeds, the spread
of the selected prompt's test score), ``compare`` (methods × seeds on one task and budget, paired against a
baseline; ``compare_stats`` its statistics, ``compare_tables`` its tables, ``compare_cli`` its command) and
``sweep`` (a grid of tasks × models × methods × seeds, in this process or on Ray)."""
