"""The file paths a run's config.json names, stored so that the workdir can be used from
any directory, moved or copied.

A path inside the workdir (the embedded corpus's default_data/) is stored relative to the
workdir, so a moved or copied workdir reads its own copy; any other local path is stored
absolute; gs:// and other URLs as given.

    stored(config_dict, workdir)    # what config.json holds
    resolved(config_dict, workdir)  # what a program reading config.json uses: all absolute
"""

from __future__ import annotations

import os
import posixpath
from typing import Optional

# (section, key) of every config field that names files; data.*_files may be a
# comma-separated list of globs.
PATH_FIELDS = (
    ("data", "train_files"),
    ("data", "eval_files"),
    ("data", "tokenizer"),
    ("init", "discriminator"),
    ("init", "generator"),
    ("init", "workdir"),
)


def _is_url(path: str) -> bool:
    return "://" in path


def _normalized(path: str) -> str:
    """`..` and `.` folded, for local paths and URLs alike (posixpath would fold gs:// too)."""
    if _is_url(path):
        scheme, rest = path.split("://", 1)
        return f"{scheme}://{posixpath.normpath(rest)}"
    return os.path.normpath(path)


def _join(base: str, relative: str) -> str:
    return _normalized(posixpath.join(base, relative) if _is_url(base) else os.path.join(base, relative))


def _absolute(path: str) -> str:
    return path if _is_url(path) or os.path.isabs(path) else os.path.abspath(path)


def _map_entries(config: dict, fn) -> dict:
    """A copy of `config` with `fn` applied to every entry of every path field."""
    config = {section: dict(values) if isinstance(values, dict) else values for section, values in config.items()}
    for section, key in PATH_FIELDS:
        value = config.get(section, {}).get(key)
        if value:
            config[section][key] = ",".join(fn(entry.strip()) for entry in value.split(",") if entry.strip())
    return config


def absolute(config: dict) -> dict:
    """Every local path of `config` (a config's dict) made absolute from the current directory."""
    return _map_entries(config, _absolute)


def stored(config: dict, workdir: str, within: Optional[str] = None) -> dict:
    """`config` as config.json in `workdir` holds it: paths under `within` (default: the
    workdir) relative to `workdir`, others absolute."""
    workdir = _absolute(workdir)
    within = _absolute(within or workdir)

    def entry(path: str) -> str:
        path = _normalized(_absolute(path))
        if not path.startswith(within.rstrip("/") + "/"):
            return path
        if _is_url(path):
            return posixpath.relpath(path.split("://", 1)[1], workdir.split("://", 1)[1])
        return os.path.relpath(path, workdir)

    return _map_entries(config, entry)


def resolved(config: dict, workdir: str) -> dict:
    """`config` read from config.json in `workdir` with every path absolute (a relative one
    is the workdir's)."""
    workdir = _absolute(workdir)

    def entry(path: str) -> str:
        if _is_url(path) or os.path.isabs(path):
            return path
        return _join(workdir, path)

    return _map_entries(config, entry)
