"""Orbax checkpoints of a pretraining run: async, atomic, keep-last-K, exact resume.

Layout of a workdir:
  config.json                     the resolved config of the run (checked on resume; paths
                                  inside the workdir relative to it, others absolute)
  checkpoints/<step>/state/       TrainState (orbax; a step directory appears only once complete)
  checkpoints/<step>/meta/        JSON: step, the input pipeline's position
  data_state/<step>/              every process's input-iterator state for that step
  replaced-<time>/                a previous run moved aside by --fresh (same layout)
  damaged/<step>-<time>/          a checkpoint that could not be read back, set aside on resume
  lock.json                       while a trainer runs: its pid, host and start (`workdir_lock`)

Each process writes its data-iterator state before the orbax save of the same step starts,
so a complete orbax step always has its iterator state beside it (a crash in between
leaves an orphan iterator state, never a checkpoint without one).
"""

from __future__ import annotations

import contextlib
import fnmatch
import gc
import json
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath  # workdirs may be gs:// (or any filesystem epath knows), not only local
from jax.experimental import multihost_utils

from data_pipelines import files
from data_pipelines.pretraining import InputsChangedError
from electra_jax import run_paths


def absolute_workdir(workdir: str) -> str:
    """Local paths made absolute; gs:// and other URIs unchanged."""
    return workdir if "://" in workdir else os.path.abspath(workdir)


class Checkpointer:
    """Saves every `save_every` steps (asynchronously), keeps the last `keep`."""

    def __init__(self, workdir: str, *, save_every: int, keep: int, async_save: bool = True, read_only: bool = False):
        self.workdir = absolute_workdir(workdir)
        self.save_every = save_every
        self._saving_step: Optional[int] = None  # the step of the save in flight, for its error
        self.read_only = read_only
        # Readers (evaluate, export, fine-tuning) may open a workdir that a live run is
        # writing: they must neither create it nor clean up that run's in-flight save.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=0 if read_only else save_every,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
        )
        self.manager = ocp.CheckpointManager(
            os.path.join(self.workdir, "checkpoints"), options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def _data_state_dir(self, step: int) -> str:
        return os.path.join(self.workdir, "data_state", str(step))

    def save(self, step: int, state: Any, data_iterator: Any = None, force: bool = False) -> bool:
        """Start saving `state` at `step` (returns at once; the write finishes in the
        background). `force` saves off the regular interval (end of run, preemption)."""
        if not (force or self.manager.should_save(step)):
            return False
        if step in self.manager.all_steps():  # never overwrite a checkpoint in place
            return False
        with self._reporting_failed_saves():  # the previous async save's failure surfaces here too
            if data_iterator is not None:
                data_iterator.save(self._data_state_dir(step))
            self._saving_step = step
            saved = self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    meta=ocp.args.JsonSave(
                        {"step": int(step), "has_data_state": data_iterator is not None, "saved_at": time.time()}
                    ),
                ),
                force=force,
            )
        self._prune_data_states()
        return saved

    @contextlib.contextmanager
    def _reporting_failed_saves(self) -> Iterator[None]:
        """A failed write (disk full, read-only, permission; orbax reports some as ValueError
        from its background thread) as one OSError naming the step, the workdir and the fix."""
        try:
            yield
        except (OSError, ValueError) as error:
            complete = self.manager.all_steps()
            resumes = f"from step {max(complete)}" if complete else "from the start"
            cause = _first_line(error, limit=800)  # a full disk's "No space left" ends a long line
            raise CheckpointSaveError(
                f"could not save the checkpoint of step {self._saving_step} in {self.workdir} ({cause}); "
                f"free space there (or fix its permissions), then run the same command again: it resumes {resumes}"
            ) from None

    def _prune_data_states(self) -> None:
        if jax.process_index() != 0:
            return
        root = epath.Path(self.workdir) / "data_state"
        if not root.is_dir():
            return
        keep = set(self.manager.all_steps())
        latest_kept = max(keep, default=-1)
        for state_dir in root.iterdir():
            # states newer than every kept step belong to saves still in flight
            name = state_dir.name
            if name.isdigit() and int(name) not in keep and int(name) < latest_kept:
                state_dir.rmtree(missing_ok=True)

    def _existing_step(self, step: int) -> int:
        if step not in self.manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.workdir}/checkpoints; available: {self.all_steps()}"
            )
        return step

    def restore(self, step: Optional[int], abstract_state: Any, data_iterator: Any = None) -> Any:
        """The state at `step` (the newest intact one if None, see `_restore_intact`),
        placed as `abstract_state`'s shardings; `data_iterator`, if given, is moved to
        where it was when that step was saved."""

        def read(step: int) -> Any:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
            )
            if data_iterator is not None:
                if not restored["meta"].get("has_data_state"):
                    raise FileNotFoundError(
                        f"checkpoint {step} in {self.workdir} was saved without an "
                        "input-iterator state; the run cannot resume exactly"
                    )
                data_iterator.restore(self._data_state_dir(step))
            return restored["state"]

        step, state = self._restore_intact(step, read)
        logging.info("restored step %d from %s", step, self.workdir)
        return state

    def restore_params(self, step: Optional[int], abstract_params: Any) -> tuple[int, Any]:
        """(step, the `params` of the TrainState saved at `step`, the newest intact one if
        None) placed as `abstract_params`' shardings; the optimizer moments are never read."""
        restore_args = jax.tree_util.tree_map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), abstract_params)

        def read(step: int) -> Any:
            args = ocp.args.PyTreeRestore(
                item={"params": abstract_params}, restore_args={"params": restore_args}, partial_restore=True
            )
            return self.manager.restore(step, args=ocp.args.Composite(state=args))["state"]["params"]

        step, params = self._restore_intact(step, read)
        logging.info("restored the params of step %d from %s", step, self.workdir)
        return step, params

    def _restore_intact(self, step: Optional[int], read: Callable[[int], Any]) -> tuple[int, Any]:
        """(step, read(step)). With `step` None, the newest step that reads back whole: a
        damaged newer step (a truncated or emptied file, a deleted state or metadata) is
        skipped with a warning naming it and the cause. A trainer moves it to
        WORKDIR/damaged/, where its next saves cannot meet it; nothing is deleted. Each
        process decides for itself: on a pod every host must see the same damage (one
        shared filesystem), or the hosts restore different steps."""
        if step is not None:
            step = self._existing_step(step)
            try:
                return step, _read_quietly(read, step)
            except InputsChangedError:  # the current inputs differ: no checkpoint is damaged
                raise
            except Exception as error:  # orbax raises bare Exception, ValueError, KeyError, ...
                raise DamagedCheckpointError(
                    f"checkpoint {step} in {self.workdir} cannot be read ({_first_line(error)}); "
                    f"the steps there are {self.all_steps()}: choose another, or none for the newest intact one"
                ) from error
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.workdir}/checkpoints")
        damaged: list[tuple[int, str]] = []
        for candidate in steps:
            try:
                value = _read_quietly(read, candidate)
            except InputsChangedError:
                raise
            except Exception as error:  # see above
                damaged.append((candidate, _first_line(error)))
                logging.warning(
                    "checkpoint %d in %s cannot be read (%s); trying the one before",
                    candidate,
                    self.workdir,
                    damaged[-1][1],
                )
                continue
            if damaged and not self.read_only:
                self._set_aside([s for s, _ in damaged])
            return candidate, value
        details = "; ".join(f"step {s}: {why}" for s, why in damaged)
        raise DamagedCheckpointError(
            f"no checkpoint in {self.workdir}/checkpoints can be read ({details}). Restore them from a "
            "copy, or pass --fresh to move them aside and start over"
        )

    def _set_aside(self, steps: Sequence[int]) -> None:
        """Moves damaged steps (and their iterator states) to WORKDIR/damaged/<step>-<time>/."""
        if jax.process_index() == 0:
            for step in steps:
                aside = epath.Path(self.workdir) / "damaged" / time.strftime(f"{step}-%Y%m%d-%H%M%S")
                aside.mkdir(parents=True)
                (epath.Path(self.workdir) / "checkpoints" / str(step)).rename(aside / "checkpoint")
                data_state = epath.Path(self._data_state_dir(step))
                if data_state.exists():
                    data_state.rename(aside / "data_state")
                logging.warning("moved the damaged checkpoint %d to %s (nothing deleted)", step, aside)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("checkpoints._set_aside")
        self.manager.reload()

    def wait(self) -> None:
        with self._reporting_failed_saves():
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.manager.close()


class CheckpointSaveError(OSError):
    """A checkpoint that could not be written; the earlier ones are intact."""


class DamagedCheckpointError(ValueError):
    """A checkpoint that exists but cannot be read back whole."""


def _read_quietly(read: Callable[[int], Any], step: int) -> Any:
    """read(step), where a failed orbax read leaves tensorstore coroutines and callbacks
    behind: each would print a traceback ("Event loop is closed") over the one message
    that matters, so they are collected here and logged at debug level."""
    hooks = sys.unraisablehook, threading.excepthook
    sys.unraisablehook = threading.excepthook = lambda args: logging.debug("after a failed read: %r", args.exc_value)
    try:
        return read(step)
    finally:
        gc.collect()
        sys.unraisablehook, threading.excepthook = hooks


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(error).__name__}: {line[:limit]}{'...' if len(line) > limit else ''}"


def check_run_config(
    workdir: str,
    config_json: str,
    fresh: bool,
    may_change: Sequence[str] = (),
    hints: Sequence[tuple[str, str]] = (),
    inputs: Optional[Mapping[str, Any]] = None,
    write: bool = True,
) -> list[str]:
    """Refuse to resume a workdir whose saved config differs from this run's in a field a
    resume cannot honour; returns the fields that changed (all in `may_change`). The
    config is written only after the check passes.

    `may_change` holds "section.key" patterns (fnmatch: "mesh.*") a resume may change;
    `hints` (pattern, text) pairs add `text` to the refusal when a refused key matches.
    With `fresh`, a previous run's checkpoints and logs are moved aside (never deleted or
    overwritten), whatever its config; refused when that would move one of `inputs`
    ({config key: path or glob}, e.g. an init source inside this workdir). With `write`
    False the caller writes config.json itself (`write_run_config`), once the run has
    passed its own checks: a refused resume leaves the saved config as it was.
    """
    path = epath.Path(workdir) / "config.json"
    changed: list[str] = []
    current = run_paths.absolute(json.loads(config_json))
    if path.exists():
        saved = read_saved_config(path, workdir)
        differences = config_differences(saved, current)
        refused = refused_changes(differences, may_change)
        resuming = has_checkpoints(workdir)
        if resuming and fresh:
            files.check_spares_inputs(
                [os.fspath(path) for pattern in RUN_OUTPUTS for path in epath.Path(workdir).glob(pattern)],
                inputs or {},
                fix="--fresh moves the previous run aside: copy that input out of the workdir first, or use "
                "another --workdir",
            )
            if jax.process_index() == 0:
                _move_run_aside(workdir)
        elif refused and resuming:
            raise ValueError(
                f"{workdir} holds a run with a different config ({describe_changes(refused)}); a resume may change "
                f"only {', '.join(may_change) or 'nothing'}. Use another --workdir, or pass --fresh "
                "to move its checkpoints aside and start over"
                + "".join(text for pattern, text in hints if any(matches(key, [pattern]) for key in refused))
            )
        elif resuming:
            changed = sorted(differences)
            for key in changed:
                logging.info("resume with %s changed: saved %r, now %r", key, *differences[key])
    if write:
        write_run_config(workdir, config_json)
    return changed


def write_run_config(workdir: str, config_json: str) -> None:
    """WORKDIR/config.json (process 0), its paths stored relative to the workdir where inside it."""
    if jax.process_index() == 0:
        current = run_paths.absolute(json.loads(config_json))
        files.write_json(epath.Path(workdir) / "config.json", run_paths.stored(current, workdir), sort_keys=True)


def has_checkpoints(workdir: str) -> bool:
    """Whether `workdir` holds a run's checkpoints (a start there resumes)."""
    checkpoints_dir = epath.Path(workdir) / "checkpoints"
    return checkpoints_dir.is_dir() and any(checkpoints_dir.iterdir())


def config_differences(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """ "section.key" -> (saved, current) for every field that differs (sections are dicts)."""
    differences = {}
    for section in sorted(set(saved) | set(current)):
        old, new = saved.get(section), current.get(section)
        if isinstance(old, dict) or isinstance(new, dict):
            old, new = old or {}, new or {}
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    differences[f"{section}.{key}"] = (old.get(key), new.get(key))
        elif old != new:
            differences[section] = (old, new)
    return differences


def refused_changes(differences: dict[str, tuple[Any, Any]], may_change: Sequence[str]) -> dict[str, tuple[Any, Any]]:
    """The `config_differences` a resume may not make (none of the `may_change` patterns)."""
    return {key: values for key, values in differences.items() if not matches(key, may_change)}


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{key}: saved {old!r} vs {new!r}" for key, (old, new) in changes.items())


def matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


LOCK_FILE = "lock.json"


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """One trainer per workdir: process 0 holds WORKDIR/lock.json ({pid, host, started})
    while the block runs and removes it after. A second trainer is refused with the
    holder's pid, host and start. A lock left by a killed trainer on this host (its pid no
    longer runs) is taken over with a warning; one from another host cannot be checked
    and is refused with the fix. Local workdirs take the lock atomically (O_EXCL); on
    gs:// the check and the write are two requests, so two trainers started within the
    same second may both pass."""
    if jax.process_index() != 0:
        yield
        return
    path = epath.Path(workdir) / LOCK_FILE
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if not _create_exclusive(path, holder):
        _take_over_if_stale(path, holder)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _create_exclusive(path: epath.Path, holder: dict) -> bool:
    """Writes the lock file unless one exists; False if it did."""
    data = json.dumps(holder).encode("utf-8")
    if "://" in os.fspath(path):
        if path.exists():
            return False
        path.write_bytes(data)
        return True
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def _take_over_if_stale(path: epath.Path, holder: dict) -> None:
    try:
        other = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, FileNotFoundError):
        other = {}  # a lock written half (a kill mid-write) or just removed: retry once
    if other and not (other.get("host") == holder["host"] and not _pid_runs(other.get("pid"))):
        raise FileExistsError(
            f"{path.parent} is in use by another trainer: pid {other.get('pid')} on host "
            f"{other.get('host')}, started {other.get('started')} ({path}). Wait for it or stop "
            "it, or use another --workdir; if that trainer is gone (another host cannot be "
            "checked from here), delete the lock file"
        )
    if other:
        logging.warning("taking over %s: its trainer (pid %s on this host) no longer runs", path, other.get("pid"))
    path.unlink(missing_ok=True)
    if not _create_exclusive(path, holder):
        raise FileExistsError(f"{path.parent}: another trainer took {path} at the same moment; use another --workdir")


def _pid_runs(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


# Everything a run (and evaluate.py on it) writes at the top of its workdir; default_data
# is reusable input and stays.
RUN_OUTPUTS = ("config.json", "checkpoints", "data_state", "metrics.jsonl", "tensorboard", "eval_step_*.json")


def _move_run_aside(workdir: str) -> str:
    """Moves the previous run's outputs into WORKDIR/replaced-<time>/, itself a complete
    workdir (evaluate.py and export.py still read it); nothing is deleted or overwritten."""
    aside = epath.Path(files.move_aside(workdir, RUN_OUTPUTS))
    if (aside / "config.json").exists():  # its default_data stayed behind: ../default_data
        saved = read_saved_config(aside / "config.json", workdir)
        moved = run_paths.stored(saved, os.fspath(aside), within=workdir)
        files.write_json(aside / "config.json", moved, sort_keys=True)
    logging.warning("--fresh: moved the previous run's checkpoints and logs to %s", aside)
    return os.fspath(aside)


def read_saved_config(path: epath.Path, workdir: str) -> dict:
    """A pretraining run's config.json as a dict, its paths resolved (`run_paths`); the
    config.json of a fine-tuning run (or of another program) is refused by name."""
    saved = json.loads(epath.Path(path).read_text(encoding="utf-8"))
    if "program" in saved or not isinstance(saved.get("model"), dict):
        kind = f"a fine-tuning run (program={saved['program']!r})" if "program" in saved else "no pretraining run"
        raise ValueError(
            f"{path} is the config of {kind}: train, evaluate and export take a pretraining workdir (a "
            "fine-tuned model is exported as a transformers directory in WORKDIR/[<task>/]seed_<k>/)"
        )
    return run_paths.resolved(saved, workdir)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a pretraining run saved in WORKDIR/config.json."""
    path = epath.Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"no config.json in {workdir}; is it a pretraining workdir?")
    config = ml_collections.ConfigDict(read_saved_config(path, workdir))
    # JSON turned these tuples into lists; the pretrainer hashes them.
    rules = config.sharding.logical_axis_rules
    config.sharding.logical_axis_rules = tuple(
        (name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules
    )
    config.objective.special_token_ids = tuple(config.objective.special_token_ids)
    return config
