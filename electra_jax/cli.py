"""What the command-line tools share: flag parsing that names a mistyped config key.

    app.run(main, flags_parser=cli.parse_flags)
"""
import importlib
import json
import sys
from typing import Callable, NoReturn, Optional

from absl import app, flags
from ml_collections import config_flags


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, but `--config.train.typo_key=1` (a key the locked config lacks) is a
    one-line error naming the override, where ml_collections raises a bare AttributeError."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as error:
        _exit_on_unknown_override(error, argv)


def define_config_file(default: Optional[str], help_text: str):
    """`--config` (locked). With a default file, ml_collections applies the `--config.x`
    overrides of sys.argv while defining the flag, so a mistyped key fails here, not in
    `parse_flags`: both report it the same way."""
    try:
        return config_flags.DEFINE_config_file("config", default, help_text, lock_config=True)
    except (AttributeError, KeyError) as error:
        _exit_on_unknown_override(error, sys.argv)


def _exit_on_unknown_override(error: BaseException, argv: list[str]) -> NoReturn:
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


def finetune_main(task: str, workdir_help: str, summarize: Callable[[dict], dict]) -> Callable[[], None]:
    """The `run()` of a fine-tuning CLI: `--config=configs/<task>.py` (locked, mistyped
    overrides named), a required `--workdir`, then `electra_jax.finetune.<task>.run` and
    `summarize(results)` printed as JSON. Call it at import time: it defines the flags."""
    config_file = f"configs/{task}.py"
    config = define_config_file(config_file, config_file)
    workdir = flags.DEFINE_string("workdir", None, workdir_help)
    flags.mark_flags_as_required(["workdir"])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        # imported after flag parsing: importing jax is slow
        module = importlib.import_module(f"electra_jax.finetune.{task}")
        print(json.dumps(summarize(module.run(config.value, workdir.value)), indent=2))

    return lambda: app.run(main, flags_parser=parse_flags)
