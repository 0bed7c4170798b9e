"""What every part of apo-local leans on and nothing in it decides: the offline environment set before anything
heavy is imported (``_offline``), the one error type (``errors``), quiet engine start-up (``quiet``), logging for
library use (``library_logging``) and figure output (``figures``)."""
