"""The ``apo-local`` commands (``cli``): their flags (``flags``), the table a run prints (``summary``), ``explain``
and ``bundle``. The commands of the experiments and the report live with them (``experiments/``, ``report/cli.py``)."""
