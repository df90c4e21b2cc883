"""Docs that cannot rot: every shell command in README.md, BENCHMARKS.md and docs/ names a
program that exists and passes only `--config.KEY`s its config has; every link and every
repository path in them resolves; docs/configuration.md is what its generator prints.

The commands are checked, not run (fast). The slow tests at the end run the README's quick
start and the fine-tuning guide's GLUE command end to end, shortened.
"""

from __future__ import annotations

import difflib
import functools
import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_FILES = sorted(["README.md", "BENCHMARKS.md"] + [os.path.relpath(p, REPO) for p in glob.glob(f"{REPO}/docs/*.md")])
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
# Paths in backticks that must exist: they start with a top-level folder of the repository.
REPO_PATH = re.compile(r"^(?:electra_jax|configs|data_pipelines|benchmarks|tests|tpu_scripts|docs|\.ci)/[\w./-]*$")


@functools.cache
def reference():
    spec = importlib.util.spec_from_file_location("config_reference", os.path.join(REPO, "docs", "config_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(doc: str) -> str:
    with open(os.path.join(REPO, doc), encoding="utf-8") as f:
        return f.read()


def code_blocks(text: str):
    """(first line number, language, body) of each fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```(\w*)", lines[i])
        if fence:
            start, body = i + 2, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            yield start, fence.group(1).lower(), body
        i += 1


def prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced blocks."""
    out, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("```"):
            inside = not inside
        elif not inside:
            out.append((number, line))
    return out


def shell_commands(doc: str):
    """(line, [tokens]) of every command in the doc's shell blocks (continuations joined,
    comments dropped, `a && b` split) and of every inline `python -m ...` span."""
    text = read(doc)
    for start, language, body in code_blocks(text):
        if language not in SHELL_LANGUAGES:
            continue
        logical, first = "", start
        for offset, line in enumerate(body):
            if language == "console":
                line = re.sub(r"^\$ ", "", line)
            if not logical:
                first = start + offset
            logical += line
            if logical.endswith("\\"):
                logical = logical[:-1] + " "
                continue
            yield from ((first, tokens) for tokens in split_commands(logical))
            logical = ""
    scripts = tuple(reference().console_scripts())
    for number, line in prose(text):
        for span in re.findall(r"`([^`]+)`", line):
            if span.startswith(("python -m ", "python benchmarks/") + scripts):
                yield from ((number, tokens) for tokens in split_commands(span))


def split_commands(line: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: not a command we can read
        return []
    commands, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in commands + [current] if c]


def program_of(tokens: list[str]) -> tuple[str, str, list[str]] | None:
    """(kind, name, its arguments) of the electra-jax program a command runs, or None."""
    scripts = reference().console_scripts()
    for i, token in enumerate(tokens):
        if token in ("python", "python3") and i + 2 < len(tokens) + 1 and tokens[i + 1 : i + 2] == ["-m"]:
            return "module", tokens[i + 2], tokens[i + 3 :]
        if token in ("python", "python3") and i + 1 < len(tokens) and tokens[i + 1].endswith(".py"):
            return "file", tokens[i + 1], tokens[i + 2 :]
        if token in scripts:
            return "module", scripts[token], tokens[i + 1 :]
        if token.endswith("tpu_scripts/tpu.sh") and tokens[i + 1 : i + 2] == ["launch"]:
            return "module", "electra_jax.train", tokens[i + 2 :]  # launch passes its flags to train
    return None


def config_keys(config, prefix: str = "") -> set[str]:
    keys = set()
    for key in config.keys():
        keys.add(prefix + key)
        if hasattr(config[key], "keys"):
            keys |= config_keys(config[key], f"{prefix}{key}.")
    return keys


@functools.cache
def keys_of(module: str, config_file: str | None) -> frozenset[str] | None:
    config = reference().program_config(module, config_file)
    return None if config is None else frozenset(config_keys(config))


def defined_flags(path: str) -> set[str]:
    """The command-line flags a program's source defines: absl's DEFINE_*("name"), argparse's
    add_argument("--name"), and those of the cli helpers it calls."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    names = set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source))
    names |= set(re.findall(r"add_argument\(\s*\"--([\w-]+)\"", source))
    if "define_run_flags" in source:
        names |= {"config", "workdir", "fresh"}
    if "define_config_file" in source or "run_tool" in source:
        names.add("config")
    return names | {"help", "helpfull"}


def unknown_flags(path: str, arguments: list[str]) -> list[str]:
    """`--name` arguments (before a bare `--`, which hands the rest to another program) that
    the program at `path` does not define."""
    flags = defined_flags(path)
    unknown = []
    for argument in arguments:
        if argument == "--":
            break
        match = re.match(r"--(?:no)?([\w-]+)(?:=|$)", argument)
        if match and match.group(1) not in flags and argument[2:].split("=")[0] not in flags:
            unknown.append(f"{os.path.relpath(path, REPO)}: no flag {argument.split('=')[0]}")
    return unknown


def check_command(tokens: list[str]) -> list[str]:
    """What is wrong with one command: a program that does not exist, a flag or a config key it lacks."""
    found = program_of(tokens)
    if found is None:
        return []
    kind, name, arguments = found
    if kind == "file":
        path = os.path.join(REPO, name)
        if "/" not in name:
            return []
        return unknown_flags(path, arguments) if os.path.isfile(path) else [f"no file {name}"]
    if not name.startswith(("electra_jax", "data_pipelines", "benchmarks", "configs")) or re.search(r"[A-Z]", name):
        return []  # another project's module (pip, venv, ...), or a placeholder (benchmarks.studies.NAME)
    spec = importlib.util.find_spec(name)
    if spec is None:
        return [f"no module {name}"]
    main = os.path.join(os.path.dirname(spec.origin), "__main__.py") if spec.submodule_search_locations else spec.origin
    flag_problems = unknown_flags(main, arguments)
    if flag_problems:
        return flag_problems
    config_file = next((a.split("=", 1)[1] for a in arguments if a.startswith("--config=")), None)
    overrides = [a for a in arguments if a.startswith("--config.")]
    if config_file and re.search(r"[A-Z]{3,}", config_file) or not overrides:
        return []  # a placeholder (configs/TASK.py), or no key to check
    if config_file is None and name in ("electra_jax.train", "electra_jax.compile"):
        config_file = "configs/pretrain.py:tiny"  # every size has the same keys
    elif config_file is None and any("$" in a for a in arguments):
        return []  # --config comes from a shell variable
    try:
        keys = keys_of(name, config_file)
    except (FileNotFoundError, ValueError) as error:
        return [f"{name}: {error}"]
    problems = []
    for argument in arguments:
        match = re.match(r"--config\.([\w.]+)", argument)
        if not match or keys is None:
            continue
        key = match.group(1)
        if key not in keys:
            close = difflib.get_close_matches(key, sorted(keys), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{name}: --config.{key} is not a key of {config_file or name}'s config{hint}")
    return problems


def test_the_docs_exist_and_the_readme_is_short():
    assert os.path.isdir(os.path.join(REPO, "docs"))
    assert len(read("README.md").splitlines()) <= 250
    # CI (.ci/run) runs exactly this line of the README
    assert 'pip install -e ".[test]" && ruff check . && ruff format --check . && python -m pytest' in read("README.md")


def test_every_documented_command_runs_a_program_with_its_config_keys():
    problems, checked = [], 0
    for doc in DOC_FILES:
        for line, tokens in shell_commands(doc):
            found = check_command(tokens)
            checked += program_of(tokens) is not None
            problems += [f"{doc}:{line}: {problem}" for problem in found]
    assert checked > 40, f"only {checked} commands found: is the extraction broken?"
    assert not problems, "\n".join(problems)


def test_every_inline_config_key_is_a_key_of_some_program():
    """`--config.KEY` mentioned in prose: a key of pretraining's, a task's or a tool's config."""
    ref = reference()
    known = set()
    for spec in ["configs/pretrain.py:tiny"] + [f"configs/{task}.py" for task in ref.FINETUNE_TASKS]:
        known |= config_keys(ref.load_config_file(spec))
    for module in ref.TOOL_CONFIGS:
        known |= keys_of(module, None)
    problems = []
    for doc in DOC_FILES:
        for number, line in prose(read(doc)):
            for key in re.findall(r"`--config\.([a-z_][\w.]*)", line):
                if key.rstrip(".") not in known:  # `--config.model.*`: a section
                    problems.append(f"{doc}:{number}: --config.{key} is not a key of any program's config")
    assert not problems, "\n".join(problems)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower()).replace("_", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(doc: str) -> set[str]:
    return {slug(line.lstrip("#")) for _, line in prose(read(doc)) if re.match(r"^#{1,6} ", line)}


def test_every_link_and_repository_path_resolves():
    problems = []
    for doc in DOC_FILES:
        here = os.path.dirname(doc)
        for number, line in prose(read(doc)):
            for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
                if re.match(r"^[a-z]+://|^mailto:", target):
                    continue
                path, _, anchor = target.partition("#")
                resolved = os.path.normpath(os.path.join(here, path)) if path else doc
                if not os.path.exists(os.path.join(REPO, resolved)):
                    problems.append(f"{doc}:{number}: link to {target}: no {resolved}")
                elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
                    problems.append(f"{doc}:{number}: link to {target}: no heading #{anchor} in {resolved}")
            for span in re.findall(r"`([^`\s]+)`", line):
                path = re.split(r"::|:(?=[\w,-]+$)", span)[0].rstrip("/")
                if REPO_PATH.match(path) and not os.path.exists(os.path.join(REPO, path)):
                    problems.append(f"{doc}:{number}: `{span}`: no {path} in the repository")
    assert not problems, "\n".join(problems)


def test_the_configuration_page_is_generated_from_the_configs():
    committed = read("docs/configuration.md")
    generated = reference().page()
    if committed != generated:
        lines = difflib.unified_diff(committed.splitlines(True), generated.splitlines(True), "committed", "generated")
        diff = "".join(list(lines)[:40])
        pytest.fail(f"docs/configuration.md is stale: python docs/config_reference.py > docs/configuration.md\n{diff}")


def test_the_checker_catches_a_wrong_key_and_a_missing_program():
    wrong = split_commands(
        "python -m electra_jax.train --config=configs/pretrain.py:tiny --config.optim.learnin_rate=1"
    )
    assert check_command(wrong[0]) == [
        "electra_jax.train: --config.optim.learnin_rate is not a key of configs/pretrain.py:tiny's config "
        "(did you mean optim.learning_rate?)"
    ]
    assert check_command(["electra-jax-export", "--config.workdir=a", "--config.out=b"]) == []
    assert check_command(["python", "-m", "electra_jax.no_such_tool"]) == ["no module electra_jax.no_such_tool"]
    assert check_command(["python", "-m", "electra_jax.evaluate", "--workdir=w", "--steps=3"]) == [
        "electra_jax/evaluate.py: no flag --steps"
    ]
    assert check_command(["python", "benchmarks/pretrain_step.py", "--sizes=small", "--bogus"]) == [
        "benchmarks/pretrain_step.py: no flag --bogus"
    ]


# ---------------------------------------------------------------------------- end to end (slow)


def documented(doc: str, pattern: str) -> list[str]:
    """The first command of `doc` that contains `pattern`, as tokens."""
    for _, tokens in shell_commands(doc):
        if pattern in " ".join(tokens):
            return tokens
    raise AssertionError(f"no command with {pattern!r} in {doc}")


def with_settings(tokens: list[str], **settings: str) -> list[str]:
    """The command with each `--NAME=` replaced (or added); NAME's dots as written."""
    out = list(tokens)
    for name, value in settings.items():
        flag = "--" + name.replace("__", ".")
        out = [t for t in out if not t.startswith(flag + "=")] + [f"{flag}={value}"]
    return out


def run_documented(tokens: list[str], timeout: int) -> subprocess.CompletedProcess:
    module = tokens[tokens.index("-m") + 1]
    arguments = tokens[tokens.index("-m") + 2 :]
    finished = subprocess.run(
        [sys.executable, "-m", module, *arguments], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory):
    """The README's quick start, as written but for 40 steps and the workdir."""
    tokens = documented("README.md", "electra_jax.train --config=configs/pretrain.py:tiny")
    tokens = tokens[tokens.index("python") :]  # after `pip install -e . &&`
    workdir = str(tmp_path_factory.mktemp("quick_start") / "run")
    short = dict(config__train__num_steps="40", config__train__eval_every="40", config__train__eval_steps="2")
    command = with_settings(tokens, workdir=workdir, **short)
    return workdir, run_documented(command, timeout=1800)


@pytest.mark.integration
@pytest.mark.slow
def test_the_readme_quick_start_runs(quick_start):
    _, finished = quick_start
    assert '"step": 40' in finished.stdout and "mlm_accuracy" in finished.stdout and "disc_auc" in finished.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_the_fine_tuning_guide_glue_command_runs(quick_start, tmp_path):
    from tests.helpers import shared_data_or_skip

    glue = shared_data_or_skip("glue")
    tokens = documented("docs/finetuning.md", "electra_jax.finetune --config=configs/glue.py")
    command = with_settings(
        tokens,
        workdir=str(tmp_path / "glue"),
        config__init=quick_start[0],
        config__data_dir=glue,
        config__task="stsb",
        config__seeds="1",
        config__max_train_examples="32",
        config__num_epochs="1",
        config__max_seq_length="32",
        config__save_models="False",
        config__tensorboard="False",
    )
    finished = run_documented(command, timeout=900)
    assert "stsb" in finished.stdout
