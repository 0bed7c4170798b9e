"""Tasks: examples + prompt template + label space + metric, built in or read from a task YAML."""

from apo_local.tasks.examples import Example, load_examples
from apo_local.tasks.metrics import Metric, get_metric, normalize_answer, parse_label, parse_number
from apo_local.tasks.task import Task, builtin_task_names, load_task
from apo_local.tasks.template import PromptTemplate

__all__ = [
    "Example",
    "Metric",
    "PromptTemplate",
    "Task",
    "builtin_task_names",
    "get_metric",
    "load_examples",
    "load_task",
    "normalize_answer",
    "parse_label",
    "parse_number",
]
