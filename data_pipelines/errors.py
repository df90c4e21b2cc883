"""How every command-line tool reports an error it expects: one line naming the problem
and its fix (and a line for each cause), exit status 1, no traceback. Unexpected
exceptions (a bug: TypeError, KeyError, an XLA error, ...) keep their traceback, and
ELECTRA_JAX_TRACEBACK=1 shows it for every error.

    app.run(errors.one_line_errors(main))
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

# The exceptions our checks raise with a message meant for the user.
EXPECTED_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, FloatingPointError)
TRACEBACK_ENV = "ELECTRA_JAX_TRACEBACK"


def format_error(error: BaseException) -> str:
    lines = [f"error: {error}"]
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    while cause is not None:
        lines.append(f"  caused by {type(cause).__name__}: {cause}")
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    lines.append(f"  ({TRACEBACK_ENV}=1 shows the traceback)")
    return "\n".join(lines) + "\n"


def one_line_errors(main: Callable) -> Callable:
    """`main` with EXPECTED_ERRORS printed by `format_error` (exit 1) instead of raised."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except EXPECTED_ERRORS as error:
            if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
                raise
            sys.stderr.write(format_error(error))
            sys.exit(1)

    return wrapped
