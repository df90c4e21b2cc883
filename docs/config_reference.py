"""Writes docs/configuration.md: every config key of every program, from the configs themselves.

    python docs/config_reference.py > docs/configuration.md

The keys, their defaults and the one-line comment beside each key in the code that builds
the config. tests/test_docs.py fails when the committed page differs from what this prints,
and uses `program_config` below to check every `--config.KEY` a documented command passes.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import ml_collections  # noqa: E402

# module -> the function that returns its config (tools whose settings are built in code:
# errors.run_tool(<that config>, ...)); a module absent here takes --config=FILE.
TOOL_CONFIGS = {
    "electra_jax.export": "export_config",
    "electra_jax.fill_mask": "fill_mask_config",
    "electra_jax.inference": "inference_config",
    "data_pipelines.prepare_data": "prepare_data_config",
    "data_pipelines.build_shards": "build_shards_config",
    "data_pipelines.tokenizer": "tokenizer_config",
    "data_pipelines.chinese": "chinese_config",
}
# modules whose --config is a config file (`--config=configs/NAME.py[:ARG]`)
FILE_CONFIG_PROGRAMS = ("electra_jax.train", "electra_jax.finetune", "electra_jax.compile", "electra_jax.evaluate")
# evaluate's --config is optional (default: the run's config.json, a pretraining config)
DEFAULT_CONFIG_FILE = {"electra_jax.evaluate": "configs/pretrain.py:tiny"}
PRETRAIN_SIZES = ("tiny", "small", "base", "large")
FINETUNE_TASKS = ("glue", "classify", "tagging", "squad")
# Defaults that depend on the machine the page is generated on, shown as the expression.
MACHINE_DEPENDENT = {"num_processes": "the number of CPUs"}


def console_scripts() -> dict[str, str]:
    """setup.py's console scripts: name -> module (`electra-jax-train` -> `electra_jax.train`)."""
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        text = f.read()
    scripts = {}
    for name, target in re.findall(r'"([\w-]+)=([\w.]+):\w+"', text):
        scripts[name] = target.removesuffix(".__main__")
    return scripts


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`configs/pretrain.py:tiny,cpu_hours` -> that config, as the CLIs build it."""
    path, _, arg = spec.partition(":")
    name = "_config_" + re.sub(r"\W", "_", path)
    module_spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    if module_spec is None or not os.path.isfile(os.path.join(REPO, path)):
        raise FileNotFoundError(f"no config file {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def program_config(module: str, config_file: str | None) -> ml_collections.ConfigDict | None:
    """The config a program's `--config.KEY` flags apply to; None where it takes none."""
    if module in TOOL_CONFIGS:
        return getattr(importlib.import_module(module), TOOL_CONFIGS[module])()
    if module in FILE_CONFIG_PROGRAMS:
        config_file = config_file or DEFAULT_CONFIG_FILE.get(module)
        if not config_file:
            raise ValueError(f"{module} needs --config=configs/NAME.py")
        return load_config_file(config_file)
    return None


# ---------------------------------------------------------------------------- the page


def _comments(functions: list[tuple[Callable, str]]) -> dict[str, str]:
    """key path -> the comment beside (or just above) its assignment in the function that sets it.
    `functions`: (function, the key prefix its `c`/`m`/... variable stands for)."""
    found: dict[str, str] = {}
    for function, prefix in functions:
        aliases: dict[str, str] = {}
        pending: list[str] = []
        for line in inspect.getsource(function).splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                pending.append(stripped.lstrip("# ").strip())
                continue
            alias = re.match(r"(\w+)\.(\w+) = (\w+) = ", stripped)
            if alias:
                aliases[alias.group(3)] = f"{aliases.get(alias.group(1), prefix)}{alias.group(2)}."
            match = re.match(r"(\w+)((?:\.\w+)+) = (.*)", stripped)
            if match:
                var, path, rest = match.groups()
                comment = rest.split("  # ", 1)[1].strip() if "  # " in rest else " ".join(pending)
                key = f"{aliases.get(var, prefix)}{path[1:]}"
                if comment and key not in found:
                    found[key] = comment
            pending = []
    return found


def _flat(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _value(key: str, value: Any) -> str:
    if key.rsplit(".", 1)[-1] in MACHINE_DEPENDENT:
        return MACHINE_DEPENDENT[key.rsplit(".", 1)[-1]]
    if isinstance(value, tuple):
        value = list(value)
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(configs: dict[str, dict[str, Any]], comments: dict[str, str], keys: list[str] | None = None) -> list[str]:
    """key | default | what it sets; a default that differs between `configs` (sizes, tasks)
    is given for each of them."""
    names = list(configs)
    keys = keys if keys is not None else list(next(iter(configs.values())))
    lines = ["| key | default | what it sets |", "| --- | --- | --- |"]
    for key in keys:
        values = {name: _value(key, configs[name][key]) for name in names if key in configs[name]}
        if len(set(values.values())) == 1:
            default = next(iter(values.values()))
        else:
            default = "<br>".join(f"{value} {name}" for name, value in values.items())
        lines.append(f"| `{key}` | {_cell(default)} | {_cell(comments.get(key, ''))} |")
    return lines


def _pretraining_comments() -> dict[str, str]:
    from configs import pretrain
    from electra_jax import presets

    return _comments(
        [
            (pretrain.pretraining_config, ""),
            (pretrain.model_config, "model."),
            (presets.optim_config, "optim."),
            (presets.init_config, "init."),
            (presets.mesh_config, "mesh."),
            (presets.sharding_config, "sharding."),
        ]
    )


def _differences(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in other.items() if base.get(key) != value}


def pretraining_section() -> list[str]:
    from configs import pretrain

    sizes = {size: _flat(load_config_file(f"configs/pretrain.py:{size}")) for size in PRETRAIN_SIZES}
    lines = [
        "## Pretraining: `configs/pretrain.py:SIZE[,VARIANT]`",
        "",
        "Read by `python -m electra_jax.train`, `electra_jax.evaluate` (default: the run's own "
        "`config.json`) and `electra_jax.compile`. Where the sizes' defaults differ, each is given "
        "(`PRETRAINING_RECIPES`, `RECIPE_OVERRIDES` in [configs/pretrain.py](../configs/pretrain.py)).",
        "",
        *_table(sizes, _pretraining_comments()),
        "",
        "### Variants: `SIZE,VARIANT`",
        "",
        "What each named variant changes from its size (`RECIPE_VARIANTS`):",
        "",
    ]
    for size, variant in pretrain.RECIPE_VARIANTS:
        changed = _differences(sizes[size], _flat(load_config_file(f"configs/pretrain.py:{size},{variant}")))
        shown = ", ".join(f"`{key}={_value(key, value).strip('`')}`" for key, value in changed.items())
        lines.append(f"- `{size},{variant}`: {shown}")
    init = _differences(sizes["small"], _flat(load_config_file("configs/pretrain.py:small,init")))
    lines.append(
        "- `SIZE,init`: the architecture is left to the weights `init.*` names: "
        + ", ".join(f"`{key}`" for key in init)
        + " unset"
    )
    lines += [
        "",
        "### TPU pod layouts: `SIZE,SLICE`",
        "",
        "What each layout changes from its size (`POD_LAYOUTS`; compiled records in "
        "[benchmarks/results/pod_layouts/](../benchmarks/results/pod_layouts/)):",
        "",
    ]
    layouts = {
        f"{size},{pod}": _differences(sizes[size], _flat(load_config_file(f"configs/pretrain.py:{size},{pod}")))
        for size, pod in pretrain.POD_LAYOUTS
    }
    keys = sorted({key for changed in layouts.values() for key in changed})
    lines.append("| layout | " + " | ".join(f"`{key}`" for key in keys) + " |")
    lines.append("| --- | " + " | ".join("---" for _ in keys) + " |")
    for name, changed in layouts.items():
        lines.append(
            f"| `{name}` | "
            + " | ".join(_cell(_value(key, changed[key])) if key in changed else "" for key in keys)
            + " |"
        )
    return lines


def finetuning_section() -> list[str]:
    from electra_jax import presets
    from electra_jax.finetune import common

    tasks = {task: _flat(load_config_file(f"configs/{task}.py")) for task in FINETUNE_TASKS}
    shared = [key for key in _flat(common.base_config()) if all(key in config for config in tasks.values())]
    comments = _comments(
        [
            (common.base_config, ""),
            (common.add_classifier_head, ""),
            (presets.optim_config, "optim."),
            (presets.mesh_config, "mesh."),
            (presets.sharding_config, "sharding."),
        ]
    )
    lines = [
        "## Fine-tuning: `configs/glue.py`, `classify.py`, `tagging.py`, `squad.py`",
        "",
        "Read by `python -m electra_jax.finetune --config=configs/TASK.py`. The keys every task has "
        "(`electra_jax/finetune/common.py` `base_config`); where the tasks' defaults differ, each is given:",
        "",
        *_table(tasks, comments, shared),
    ]
    for task, config in tasks.items():
        module = importlib.import_module(f"configs.{task}")
        own = [key for key in config if key not in shared]
        task_comments = {**_comments([(module.get_config, "")]), **comments}
        lines += ["", f"### `configs/{task}.py`: its own keys", "", *_table({task: config}, task_comments, own)]
    return lines


def tools_section() -> list[str]:
    scripts = {module: name for name, module in console_scripts().items()}
    lines = [
        "## Tools",
        "",
        "Each starts from its defaults in code; every setting is `--config.KEY=VALUE`.",
    ]
    for module, function_name in TOOL_CONFIGS.items():
        function = getattr(importlib.import_module(module), function_name)
        functions = [(function, "")]
        if module in ("data_pipelines.prepare_data", "data_pipelines.tokenizer"):
            from data_pipelines import tokenizer

            functions.append((tokenizer.add_text_options, ""))
        script = f" (`{scripts[module]}`)" if module in scripts else ""
        lines += [
            "",
            f"### `python -m {module}`{script}",
            "",
            *_table({"": _flat(function())}, _comments(functions)),
        ]
    return lines


def page() -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python docs/config_reference.py > docs/configuration.md`; do not edit. -->",
        "Generated from the configs by `python docs/config_reference.py > docs/configuration.md`: "
        "`tests/test_docs.py` fails when this page and the configs disagree. Every key is set as "
        "`--config.KEY=VALUE`; a mistyped key is refused naming it.",
        "",
        *pretraining_section(),
        "",
        *finetuning_section(),
        "",
        *tools_section(),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(page())
