#!/usr/bin/env bash
# Cloud TPU VM pods for electra-jax: create, set up every worker, launch the same training
# command on all workers, follow the logs, stop, delete. JAX's multi-controller runtime does
# the rest: each worker runs `python3 -m electra_jax.train`, which calls
# jax.distributed.initialize() on a Cloud TPU VM and reads its own slice of the shards.
#
#   tpu_scripts/tpu.sh [--dry-run] COMMAND [ARGS...]
#
# Commands:
#   bucket             create BUCKET in the zone's region (workdirs and shards live there)
#   create             create the TPU VM; with QUEUED=1 a queued resource, waiting until ACTIVE
#   setup              install electra-jax[tpu] on every worker, from REPO_URL at GIT_REF or
#                      from a local WHEEL (python -m pip wheel --no-deps -w dist .)
#   launch [ARGS...]   start `python3 -m electra_jax.train --workdir=WORKDIR ARGS...` on all
#                      workers in the background (log: ~/electra_jax_train.log on each)
#   logs [WORKER]      follow one worker's log (default 0; "all" interleaves every worker)
#   stop               SIGTERM the training on all workers: it saves a checkpoint and exits
#   status             describe the TPU VM (or queued resource)
#   delete             delete the TPU VM (or queued resource)
#
# --dry-run prints every gcloud command, one a line and shell-quoted, instead of running it.
#
# Variables (from the environment; defaults in brackets):
#   PROJECT            Google Cloud project [required]
#   ZONE               zone with capacity for ACCELERATOR_TYPE [us-central2-b, where v4 is]
#   TPU_NAME           TPU VM (and queued resource) name [electra-jax]
#   ACCELERATOR_TYPE   v4-8, v4-32, v5litepod-256, v5p-128, ... [v4-32]
#   RUNTIME_VERSION    TPU VM image [chosen from ACCELERATOR_TYPE: tpu-ubuntu2204-base for
#                      v2-v4, v2-alpha-tpuv5-lite for v5e, v2-alpha-tpuv5 for v5p,
#                      v2-alpha-tpuv6e for v6e]
#   BUCKET             gs://bucket for checkpoints, logs and shards [required by bucket, launch]
#   WORKDIR            the run's workdir [BUCKET/runs/TPU_NAME]
#   QUEUED             1: create/delete a queued resource instead of a TPU VM [0]
#   SPOT               1: spot capacity (cheaper, preemptible; runs resume from checkpoints) [0]
#   REPO_URL           git URL of electra-jax for setup [required unless WHEEL is set]
#   GIT_REF            branch, tag or commit for setup [main]
#   WHEEL              a local electra_jax-*.whl to install instead of the git checkout
set -euo pipefail

readonly SCRIPT_NAME="${0##*/}"
# Paths on the workers; their shell expands the ~, not this one.
# shellcheck disable=SC2088
readonly REMOTE_DIR='~/electra-jax' REMOTE_LOG='~/electra_jax_train.log' \
  REMOTE_PID='~/electra_jax_train.pid'

DRY_RUN=0

die() {
  echo "$SCRIPT_NAME: $*" >&2
  exit 2
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

# Arguments as a shell reads them back: bare words where safe, else in single quotes.
quote() {
  local arg words=() escaped_quote="'\\''"
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      words+=("$arg")
    else
      words+=("'${arg//\'/$escaped_quote}'")
    fi
  done
  echo "${words[*]}"
}

# Runs a command, or prints it (quoted, one line) under --dry-run.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    quote "$@"
  else
    "$@"
  fi
}

require() {
  local name
  for name in "$@"; do
    [[ -n ${!name:-} ]] || die "set $name (see '$SCRIPT_NAME help'), e.g. $name=$(example_value "$name")"
  done
}

example_value() {
  case $1 in
    PROJECT) echo my-gcp-project ;;
    BUCKET) echo gs://my-electra-bucket ;;
    REPO_URL) echo https://github.com/OWNER/electra-jax.git ;;
    *) echo VALUE ;;
  esac
}

default_runtime_version() {
  case $1 in
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) die "no default RUNTIME_VERSION for ACCELERATOR_TYPE=$1; set RUNTIME_VERSION" ;;
  esac
}

load_settings() {
  require PROJECT
  ZONE=${ZONE:-us-central2-b}
  TPU_NAME=${TPU_NAME:-electra-jax}
  ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
  RUNTIME_VERSION=${RUNTIME_VERSION:-$(default_runtime_version "$ACCELERATOR_TYPE")}
  QUEUED=${QUEUED:-0}
  SPOT=${SPOT:-0}
  GIT_REF=${GIT_REF:-main}
  BUCKET=${BUCKET:-}
  BUCKET=${BUCKET%/}
  [[ -z $BUCKET || $BUCKET == gs://* ]] || die "BUCKET=$BUCKET must start with gs://"
  WORKDIR=${WORKDIR:-${BUCKET:+$BUCKET/runs/$TPU_NAME}}
}

# ssh WORKER COMMAND: run COMMAND in a shell on one worker, or on every worker ("all").
tpu_ssh() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
    --worker="$1" --command="$2"
}

cmd_bucket() {
  require BUCKET
  run gcloud storage buckets create "$BUCKET" --project="$PROJECT" --location="${ZONE%-*}" \
    --uniform-bucket-level-access
}

cmd_create() {
  local capacity=()
  [[ $SPOT == 1 ]] && capacity=(--spot)
  if [[ $QUEUED == 1 ]]; then
    run gcloud compute tpus queued-resources create "$TPU_NAME" --project="$PROJECT" \
      --zone="$ZONE" --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
      --runtime-version="$RUNTIME_VERSION" "${capacity[@]}"
    wait_until_active
  else
    run gcloud compute tpus tpu-vm create "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
      --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${capacity[@]}"
  fi
}

queued_state() {
  run gcloud compute tpus queued-resources describe "$TPU_NAME" --project="$PROJECT" \
    --zone="$ZONE" --format='value(state.state)'
}

wait_until_active() {
  if [[ $DRY_RUN == 1 ]]; then
    queued_state  # polled every 30 s until ACTIVE
    return
  fi
  local state
  while state=$(queued_state) && [[ $state != ACTIVE ]]; do
    case $state in
      FAILED | SUSPENDED) die "queued resource $TPU_NAME is $state; see '$SCRIPT_NAME status'" ;;
    esac
    echo "queued resource $TPU_NAME: ${state:-unknown}; waiting" >&2
    sleep 30
  done
}

cmd_setup() {
  local install
  if [[ -n ${WHEEL:-} ]]; then
    [[ $DRY_RUN == 1 || -f $WHEEL ]] || die "WHEEL=$WHEEL does not exist"
    local wheel_name=${WHEEL##*/}
    tpu_ssh all "mkdir -p $REMOTE_DIR"
    run gcloud compute tpus tpu-vm scp "$WHEEL" "$TPU_NAME:$REMOTE_DIR/" --project="$PROJECT" \
      --zone="$ZONE" --worker=all
    # the wheel carries configs/ (as electra_jax/configs): --config=configs/... finds them
    install="cd $REMOTE_DIR && python3 -m pip install --quiet --upgrade pip && python3 -m pip install --quiet $(quote "./${wheel_name}[tpu]")"
  else
    require REPO_URL
    # init + fetch of one ref works for a branch, a tag or a commit, first time or again
    install="mkdir -p $REMOTE_DIR && cd $REMOTE_DIR && git init --quiet"
    install+=" && { git remote add origin $(quote "$REPO_URL") 2>/dev/null || git remote set-url origin $(quote "$REPO_URL"); }"
    install+=" && git fetch --quiet --depth=1 origin $(quote "$GIT_REF") && git checkout --quiet --detach FETCH_HEAD"
    install+=" && python3 -m pip install --quiet --upgrade pip && python3 -m pip install --quiet -e '.[tpu]'"
  fi
  tpu_ssh all "set -e; $install && python3 -c 'import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0].device_kind)'"
}

cmd_launch() {
  require BUCKET
  # nohup + redirected stdio: the ssh session returns while training goes on
  tpu_ssh all "cd $REMOTE_DIR && nohup python3 -m electra_jax.train $(quote "--workdir=$WORKDIR" "$@") > $REMOTE_LOG 2>&1 < /dev/null & echo \$! > $REMOTE_PID"
  echo "# follow: $SCRIPT_NAME logs   stop (checkpoint + exit): $SCRIPT_NAME stop" >&2
}

cmd_logs() {
  local worker=${1:-0}
  [[ $worker == all || $worker =~ ^[0-9]+$ ]] || die "logs takes a worker number or 'all', not '$worker'"
  tpu_ssh "$worker" "tail -n 200 -F $REMOTE_LOG"
}

cmd_stop() {
  tpu_ssh all "kill -TERM \"\$(cat $REMOTE_PID)\" && while kill -0 \"\$(cat $REMOTE_PID)\" 2>/dev/null; do sleep 5; done; tail -n 5 $REMOTE_LOG"
}

cmd_status() {
  if [[ $QUEUED == 1 ]]; then
    run gcloud compute tpus queued-resources describe "$TPU_NAME" --project="$PROJECT" --zone="$ZONE"
  else
    run gcloud compute tpus tpu-vm describe "$TPU_NAME" --project="$PROJECT" --zone="$ZONE"
  fi
}

cmd_delete() {
  if [[ $QUEUED == 1 ]]; then
    # --force deletes the TPU VM the queued resource created along with it
    run gcloud compute tpus queued-resources delete "$TPU_NAME" --project="$PROJECT" \
      --zone="$ZONE" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" --quiet
  fi
}

main() {
  if [[ ${1:-} == --dry-run ]]; then
    DRY_RUN=1
    shift
  fi
  local command=${1:-help}
  shift || true
  case $command in
    help | -h | --help) usage; return ;;
    bucket | create | setup | launch | logs | stop | status | delete) ;;
    *) die "unknown command '$command'; one of: bucket create setup launch logs stop status delete help" ;;
  esac
  load_settings
  "cmd_$command" "$@"
}

main "$@"
