"""What a run configuration is: its schema (``schema``: every section, key, default and meaning) and the run-size
presets (``presets``). Loading one from YAML and flags, with the method's knobs checked, is ``run/config.py``."""
