"""What the command-line tools share: flag parsing that names a mistyped config key.

    app.run(main, flags_parser=cli.parse_flags)
"""
import sys

from absl import app


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, but `--config.train.typo_key=1` (a key the locked config lacks) is a
    one-line error naming the override, where ml_collections raises a bare AttributeError."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as error:
        while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError)
            error = error.args[0]
        # ml_collections' message: "'key'" and maybe a line 'Did you mean "x" instead of "y"?'
        missing, _, hint = str(error.args[0] if error.args else error).partition("\n")
        missing = missing.strip("'\"")
        overrides = [arg.split("=")[0] for arg in argv[1:] if arg.startswith("--config.")]
        named = [arg for arg in overrides if missing in arg[len("--config."):].split(".")]
        message = (f"{' '.join(named) or 'a --config override'} names {missing!r}, which the "
                   f"config does not have. {hint}")
        sys.stderr.write(f"FATAL Flags parsing error: {message.strip()}\n")
        sys.exit(1)
