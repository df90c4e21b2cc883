"""Errors our checks raise reach a CLI user as one line and exit 1; bugs keep a traceback."""

import os
import subprocess
import sys

import pytest

from data_pipelines import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_an_expected_error_is_one_line_with_its_cause(capsys):
    def main(argv):
        try:
            raise OSError("disk full")
        except OSError as e:
            raise ValueError("could not write shards to out/; free space or use another --output_dir") from e

    with pytest.raises(SystemExit) as exit_info:
        errors.one_line_errors(main)(["prog"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: could not write shards to out/; free space or use another --output_dir",
        "  caused by OSError: disk full",
        "  (ELECTRA_JAX_TRACEBACK=1 shows the traceback)",
    ]


def test_a_bug_keeps_its_traceback_and_the_environment_shows_every_traceback(monkeypatch):
    def bug(argv):
        raise TypeError("unsupported operand")

    with pytest.raises(TypeError):
        errors.one_line_errors(bug)(["prog"])

    def refused(argv):
        raise FileExistsError("--out=x is not empty")

    monkeypatch.setenv(errors.TRACEBACK_ENV, "1")
    with pytest.raises(FileExistsError):
        errors.one_line_errors(refused)(["prog"])


@pytest.mark.integration
def test_the_export_cli_reports_a_missing_workdir_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != errors.TRACEBACK_ENV}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "electra_jax.export",
            f"--config.workdir={tmp_path / 'none'}",
            f"--config.out={tmp_path / 'out'}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"error: no config.json in {tmp_path / 'none'}; is it a pretraining workdir?" in proc.stderr.splitlines()


@pytest.mark.integration
@pytest.mark.parametrize(
    "module, required",
    [
        ("data_pipelines.prepare_data", "--config.output_dir"),
        ("data_pipelines.build_shards", "--config.inputs and --config.tokenizer_path and --config.output_dir"),
        ("electra_jax.inference", "--config.model and --config.task"),
    ],
)
def test_a_small_tool_names_its_missing_and_its_mistyped_settings(module, required):
    """Every small CLI takes its settings as one ml_collections config (errors.run_tool)."""

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=300
        )

    missing = run()
    assert missing.returncode == 1 and f"{required} must be set" in missing.stderr
    mistyped = run("--config.outptu_dir=x")
    assert mistyped.returncode == 1
    assert "--config.outptu_dir names 'outptu_dir', which the config does not have." in mistyped.stderr
    assert "Traceback" not in mistyped.stderr


def test_an_os_error_is_one_line_naming_the_file(capsys):
    # A disk full or a read-only workdir reached the user as a raw traceback.
    def main(argv):
        raise OSError(28, "No space left on device", "out/shards/train-00001.tfrecord")

    with pytest.raises(SystemExit) as exit_info:
        errors.one_line_errors(main)(["prog"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "error: [Errno 28] No space left on device: 'out/shards/train-00001.tfrecord'"
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    "config, message",
    [
        # get_config's own error was printed inside the config file's traceback
        (
            "configs/pretrain.py:tinyy",
            "flag --config=configs/pretrain.py:tinyy: Error whilst parsing config file: ValueError: model size "
            "'tinyy' in 'tinyy'; choose one of ['base', 'large', 'small', 'tiny']",
        ),
        # "Configuration is not available because of an earlier failure to load ... config_config"
        ("configs/pretrian.py", "--config=configs/pretrian.py: no such file (the shipped configs: configs/{"),
    ],
)
def test_a_bad_config_file_or_recipe_is_one_line(tmp_path, config, message):
    proc = subprocess.run(
        [sys.executable, "-m", "electra_jax.train", f"--config={config}", f"--workdir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert f"FATAL Flags parsing error: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr
