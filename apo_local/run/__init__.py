"""A run: what happens before round 1 and after the last round, around the search loop (``search/``).

``optimize`` (the way in: ``optimize()``, ``resume()``); ``config`` (loading a run configuration: YAML, flags,
presets, the method's knobs) and ``config_migrate``; ``estimate`` (the pre-run size); ``run_dir`` (the run
directory) and ``tracking`` (offline experiment tracking); after the rounds: ``final_pick``, ``baselines``,
``headline``, ``attribution`` and ``result`` (``RunResult``, written as ``results.json``).
"""
