"""How every command-line tool takes its settings and reports an error it expects.

Settings: an ml_collections config, overridden as `--config.KEY=VALUE` (locked, so a
mistyped key is an error naming it). A small tool's config is its defaults in code
(`run_tool`); the training and fine-tuning CLIs read a config file (electra_jax/cli.py).

Errors: one line naming the problem and its fix (and a line for each cause), exit status 1,
no traceback. Unexpected exceptions (a bug: TypeError, KeyError, an XLA error, ...) keep
their traceback, and ELECTRA_JAX_TRACEBACK=1 shows it for every error.

    errors.run_tool(export_config(), main, required=("workdir", "out"))
    app.run(errors.one_line_errors(main))  # a CLI with a config file
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Callable, NoReturn, Sequence

from absl import app
from absl import logging as absl_logging
from ml_collections import config_flags

# The exceptions our checks raise with a message meant for the user, and the operating
# system's (disk full, read-only, permission denied: its message names the file).
EXPECTED_ERRORS = (ValueError, OSError, FloatingPointError)
TRACEBACK_ENV = "ELECTRA_JAX_TRACEBACK"


def format_error(error: BaseException) -> str:
    lines = [f"error: {error}"]
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    while cause is not None:
        lines.append(f"  caused by {type(cause).__name__}: {cause}")
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    lines.append(f"  ({TRACEBACK_ENV}=1 shows the traceback)")
    return "\n".join(lines) + "\n"


class _MessagesOnly(logging.Filter):
    """Orbax logs a failed background save with a traceback per thread before the error
    reaches the CLI, which reports it in one line: those records keep their message only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "orbax" in record.pathname:
            record.exc_info = record.exc_text = None
        return True


_MESSAGES_ONLY = _MessagesOnly()  # one instance: adding it again is a no-op


def _show_tracebacks() -> bool:
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def one_line_errors(main: Callable) -> Callable:
    """`main` with EXPECTED_ERRORS printed by `format_error` (exit 1) instead of raised."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        if not _show_tracebacks():
            absl_logging.get_absl_logger().addFilter(_MESSAGES_ONLY)
        try:
            return main(*args, **kwargs)
        except EXPECTED_ERRORS as error:
            if _show_tracebacks():
                raise
            sys.stderr.write(format_error(error))
            if getattr(error, "skip_exit_handlers", False):  # e.g. a barrier that would wait for a lost process
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)
            sys.exit(1)

    return wrapped


def without_traceback(message: str) -> str:
    """A flag error's message with a traceback inside it (ml_collections quotes the config
    file's) cut down to its heading and the exception's last line."""
    head, marker, trace = message.partition("Traceback (most recent call last):")
    if not marker:
        return message.strip()
    last = [line.strip() for line in trace.strip().splitlines() if line.strip()][-1]
    return f"{' '.join(head.split())} {last}"


def exit_on_bad_flag(message: str) -> NoReturn:
    sys.stderr.write(f"FATAL Flags parsing error: {message}\nPass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def exit_on_unknown_override(error: BaseException, argv: Sequence[str]) -> NoReturn:
    """Reports ml_collections' bare AttributeError / KeyError for `--config.typo=1` as one
    line naming the override, and exits 1."""
    while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError)
        error = error.args[0]
    # ml_collections' message: "'key'" and maybe a line 'Did you mean "x" instead of "y"?'
    missing, _, hint = str(error.args[0] if error.args else error).partition("\n")
    missing = missing.strip("'\"")
    overrides = [arg.split("=")[0] for arg in argv[1:] if arg.startswith("--config.")]
    named = [arg for arg in overrides if missing in arg[len("--config.") :].split(".")]
    message = f"{' '.join(named) or 'a --config override'} names {missing!r}, which the config does not have. {hint}"
    sys.stderr.write(f"FATAL Flags parsing error: {message.strip()}\n")
    sys.exit(1)


def run_tool(
    config, main: Callable[[Any, list[str]], Any], required: Sequence[str] = (), takes_arguments: bool = False
) -> None:
    """The CLI of a tool whose settings are `config` (its defaults): `--config.KEY=VALUE`
    overrides, the `required` keys checked (non-empty) before `main(config, arguments)` runs,
    errors reported as one line. `arguments` are the positional ones (refused unless
    `takes_arguments`)."""
    try:  # ml_collections applies sys.argv's overrides while defining the flag
        holder = config_flags.DEFINE_config_dict("config", config, lock_config=True)
    except (AttributeError, KeyError) as error:
        exit_on_unknown_override(error, sys.argv)

    def checked_main(argv):
        arguments = list(argv[1:])
        if arguments and not takes_arguments:
            raise app.UsageError(f"unexpected arguments: {arguments}")
        missing = [f"--config.{key}" for key in required if holder.value[key] in ("", None)]
        if missing:
            raise app.UsageError(f"{' and '.join(missing)} must be set")
        return main(holder.value, arguments)

    app.run(one_line_errors(checked_main))
