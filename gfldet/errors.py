"""Exception base for errors caused by user input (configs, data, paths, arguments).

The CLI prints a ``GfldetError`` as one clear message, without a traceback; anything else is a bug
and keeps its traceback.
"""


class GfldetError(Exception):
    """Base class of gfldet's user-facing errors; the message says what was wrong, where, and what was expected."""
