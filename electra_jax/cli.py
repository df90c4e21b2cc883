"""What the command-line tools share: flag parsing that names a mistyped config key and
finds `configs/NAME.py` after a plain `pip install .`, and the multi-process start.

    app.run(main, flags_parser=cli.parse_flags)
    def main(argv): cli.maybe_initialize_distributed(); ...  # before anything touches a device
"""

import importlib.resources
import os
import sys
from typing import Optional

from absl import logging
from ml_collections import config_flags

from data_pipelines import errors

CONFIGS_DIR = "configs/"


def resolve_config_path(value: str) -> str:
    """`configs/NAME.py[:ARG]`: the file in the working directory where there is one (a
    checkout, or your own copy), else the one installed with the package
    (electra_jax/configs/NAME.py). Any other path is taken as given."""
    path, colon, arg = value.partition(":")
    if not path.startswith(CONFIGS_DIR) or os.path.exists(path):
        return value
    installed = importlib.resources.files("electra_jax.configs") / path[len(CONFIGS_DIR) :]
    if not installed.is_file():
        return value  # ml_collections reports the missing file under the name given
    return f"{os.fspath(installed)}{colon}{arg}"


def _resolve_config_flags(argv: list[str]) -> list[str]:
    return [
        f"--config={resolve_config_path(arg[len('--config=') :])}" if arg.startswith("--config=") else arg
        for arg in argv
    ]


def _check_config_files(argv: list[str]) -> None:
    """A `--config` file that does not exist, named (ml_collections says only that "an
    earlier failure" made the configuration unavailable)."""
    for arg in argv:
        if arg.startswith("--config="):
            path = arg[len("--config=") :].partition(":")[0]
            if not os.path.isfile(path):
                entries = importlib.resources.files("electra_jax.configs").iterdir()
                shipped = ",".join(sorted(e.name for e in entries if e.name.endswith(".py") and e.name[0] != "_"))
                errors.exit_on_bad_flag(f"--config={path}: no such file (the shipped configs: configs/{{{shipped}}})")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with `--config=configs/...` resolved (`resolve_config_path`), a
    missing config file named, an error raised by the config file's get_config (e.g. an
    unknown recipe name) in one line instead of inside its traceback, and
    `--config.train.typo_key=1` (a key the locked config lacks) a one-line error naming the
    override, where ml_collections raises a bare AttributeError."""
    from absl import flags

    resolved = _resolve_config_flags(argv)
    _check_config_files(resolved)
    try:
        return flags.FLAGS(resolved)
    except (AttributeError, KeyError) as error:
        errors.exit_on_unknown_override(error, argv)
    except flags.Error as error:
        errors.exit_on_bad_flag(errors.without_traceback(str(error)))


def define_run_flags(config_help: str, workdir_help: str):
    """--config (required), --workdir (required) and --fresh: what a training CLI takes
    (pretraining and fine-tuning alike: the same command run again resumes)."""
    from absl import flags

    config_flag = define_config_file(None, config_help)
    workdir_flag = flags.DEFINE_string("workdir", None, workdir_help)
    fresh_flag = flags.DEFINE_bool(
        "fresh",
        False,
        "Start over in a workdir that holds a run (without it, the same command resumes that run): the run is "
        "moved to WORKDIR/replaced-<time>/, never deleted.",
    )
    flags.mark_flags_as_required(["config", "workdir"])
    return config_flag, workdir_flag, fresh_flag


def define_config_file(default: Optional[str], help_text: str):
    """`--config` (locked). With a default file, ml_collections applies the `--config.x`
    overrides of sys.argv while defining the flag, so a mistyped key fails here, not in
    `parse_flags`: both report it the same way."""
    if default is not None:
        default = resolve_config_path(default)
    try:
        return config_flags.DEFINE_config_file("config", default, help_text, lock_config=True)
    except (AttributeError, KeyError) as error:
        errors.exit_on_unknown_override(error, sys.argv)


def define_config_dict(config, help_text: str):
    """`--config` holding `config` (locked), overridden by sys.argv's `--config.KEY=VALUE`;
    a mistyped key is reported as `define_config_file` reports it."""
    try:
        return config_flags.DEFINE_config_dict("config", config, help_text, lock_config=True)
    except (AttributeError, KeyError) as error:
        errors.exit_on_unknown_override(error, sys.argv)


def run_config_of(argv: list[str]):
    """The config.json of the pretraining workdir `--workdir` names, where the command has no
    `--config=FILE` and that workdir holds a readable one; else None (the program then
    reports what is wrong with it)."""
    from electra_jax import checkpoints

    if any(arg.startswith("--config=") or arg == "--config" for arg in argv):
        return None
    values = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--workdir=")]
    values += [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--workdir"]
    try:
        return checkpoints.load_run_config(values[-1]) if values else None
    except (ValueError, OSError):
        return None


def _on_cloud_tpu_vm() -> bool:
    # Set by `import jax` (cloud_tpu_init) on TPU VMs with libtpu; JAX's own cluster
    # detection keys on the same flag. Single-host TPU VMs initialize as 1 process.
    from jax._src import cloud_tpu_init

    return bool(cloud_tpu_init.running_in_cloud_tpu_vm)


def maybe_initialize_distributed() -> None:
    """jax.distributed for multi-process runs; a no-op for one process.

    Cloud TPU VMs, SLURM (one task per host or per GPU) and Open MPI are detected by JAX
    itself. Anywhere else set JAX_COORDINATOR_ADDRESS=host:port (process 0's address),
    JAX_NUM_PROCESSES and JAX_PROCESS_ID in every process's environment.
    """
    import jax

    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS") and "SLURM_NTASKS" not in env:
        missing = [name for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not env.get(name)]
        if missing:
            raise ValueError(
                f"JAX_COORDINATOR_ADDRESS={env['JAX_COORDINATOR_ADDRESS']} is set but "
                f"{' and '.join(missing)} not; set both in every process (process "
                "ids 0 .. JAX_NUM_PROCESSES-1, the coordinator is process 0)"
            )
        jax.distributed.initialize(
            env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    elif int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1 or _on_cloud_tpu_vm():
        jax.distributed.initialize()
    else:
        return
    logging.info(
        "process %d of %d, %d local devices of %d",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def check_same_workdir(workdir: str) -> None:
    """Every process of a multi-process run must be given the same --workdir: each writes
    its shards of every checkpoint there, so it must be one directory all hosts share (a
    network filesystem or gs://). Different ones would hang the first save; refused here."""
    import zlib

    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return
    path = workdir if "://" in workdir else os.path.abspath(workdir)
    digests = multihost_utils.process_allgather(np.array([zlib.crc32(path.encode("utf-8"))], np.uint32))
    if len(set(np.asarray(digests).ravel().tolist())) > 1:
        raise ValueError(
            f"process {jax.process_index()} was given --workdir={path}, another process another one; give every "
            "process the same --workdir, on a filesystem all hosts share (e.g. gs://): each writes its part of "
            "every checkpoint there"
        )
