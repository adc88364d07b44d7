"""Command-line options that several benchmark scripts share.

    parser.add_argument("--parallel-tasks", type=parallel_tasks, default="auto")
"""

import argparse


def parallel_tasks(text):
    """`--parallel-tasks`: "auto" (the learners' default, a task per core) or a whole number."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number or auto, got {text!r}") from None
