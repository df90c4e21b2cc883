"""The training core that pretraining and fine-tuning share: the train state's shardings,
the batch check, a jitted step with the state donated, and the loop (logging, evaluation,
checkpoints, preemption). Each program supplies its step (its loss inside) and its metrics:

    state_sharding = trainer.state_sharding(tx, abstract_params, params_sharding, mesh)
    step = trainer.jit_step(train_step, state_sharding, batch_sharding, mesh, rules)
    state = trainer.run_loop(state, trainer.Loop(step, next_batch, ...), start_step, end_step)

A loop saves every `save_every` steps and at its end (never a non-finite state), and on
SIGTERM (or the multi-host preemption notice) saves and returns early: `state.step` then
tells the caller it stopped short. Its randomness is the step's, so a resume replays exactly.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from absl import logging

from electra_jax import checkpoints, optim, sharding


def state_sharding(
    tx: optax.GradientTransformation, abstract_params: Any, params_sharding: Any, mesh: jax.sharding.Mesh
) -> optim.TrainState:
    """Where each part of the train state lives: the step replicated, the params as
    `params_sharding`, the optimizer's moments as the params they follow."""
    return optim.TrainState(
        step=sharding.replicated(mesh),
        params=params_sharding,
        opt_state=sharding.opt_state_shardings(tx, jax.eval_shape(tx.init, abstract_params), params_sharding, mesh),
    )


def check_batch_divides(key: str, batch_size: int, mesh: jax.sharding.Mesh, microbatches: int = 1) -> None:
    """A batch (of each of `microbatches`) must split evenly over the mesh's data x fsdp shards."""
    if batch_size % microbatches:
        raise ValueError(f"{key}={batch_size} does not divide by {microbatches} microbatches (grad_accum_steps)")
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if (batch_size // microbatches) % shards:
        per = f" per microbatch ({batch_size // microbatches})" if microbatches > 1 else ""
        raise ValueError(
            f"{key}={batch_size}{per} does not divide over the mesh's {shards} data x fsdp shards "
            f"({mesh.size} devices); set --config.{key} to a multiple of {shards * microbatches}, "
            "or --config.mesh.data"
        )


def jit_step(
    step: Callable,
    state_sharding: Any,
    batch_sharding: Any,
    mesh: jax.sharding.Mesh,
    rules: tuple,
    extra_in_shardings: Sequence[Any] = (),
):
    """`step(state, batch, *extra) -> (state, metrics)` jitted on the mesh, the input state
    donated (its buffers become the new state's), the metrics replicated."""
    jitted = jax.jit(
        step,
        in_shardings=(state_sharding, batch_sharding, *extra_in_shardings),
        out_shardings=(state_sharding, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
    return sharding.under_mesh(mesh, rules, jitted)


def metrics_to_host(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


# ---------------------------------------------------------------------------- stopping


class Preempted(Exception):
    """A run saved its checkpoint and stopped early on a preemption signal; the same
    command run again resumes it."""


class Preemption:
    """SIGTERM (cloud preemption, scancel, docker stop) or a first Ctrl-C asks for a save
    and a clean exit; a second Ctrl-C stops at once, without saving.

    Only in a single-process run: with several processes, JAX's preemption sync manager
    (started by jax.distributed) owns SIGTERM and `reached_preemption` stops every process
    at one agreed step; a process stopping on its own would leave the others blocked in
    the next step's collectives.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self._installed = jax.process_count() == 1
        if self._installed:
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        logging.warning(
            "%s received: saving a checkpoint and stopping%s",
            signal.Signals(signum).name,
            " (Ctrl-C again stops at once, without saving)" if signum == signal.SIGINT else "",
        )
        self.requested = True

    def restore(self):
        if self._installed:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)


@jax.jit
def _params_finite(params) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(params)]))


def non_finite_error(step: int, what: str, loop: "Loop") -> FloatingPointError:
    last = loop.checkpointer.latest_step()
    kept = f"the last checkpoint, step {last}, is kept" if last is not None else "no checkpoint was saved"
    return FloatingPointError(
        f"{what} at step {step}; stopped without saving it ({kept}). Lower --config.optim.learning_rate "
        "or lengthen the warmup, check the data, then resume"
    )


def check_finite(state: optim.TrainState, step: int, loop: "Loop") -> None:
    """Never save a NaN or infinite state: a resume from it could only repeat it."""
    if not bool(_params_finite(state.params)):
        raise non_finite_error(step, "non-finite parameters", loop)


# ---------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class Loop:
    """What a program hands the loop: its step, its batches, and what to do at log and
    evaluation steps."""

    step: Callable  # (state, batch) -> (state, metrics on device)
    next_batch: Callable[[], Any]  # the next global batch
    checkpointer: checkpoints.Checkpointer
    # (step, host scalars of the step's metrics, seconds per step since the last log) ->
    # what the progress bar shows
    log: Callable[[int, dict[str, float], float], dict[str, str]]
    log_every: int
    evaluate: Optional[Callable[[int, optim.TrainState], None]] = None  # (step, state)
    eval_every: int = 0  # 0: no evaluation during the loop (the caller's, after it)
    data_iterator: Any = None  # saved with each checkpoint (a resumable tf.data iterator)
    desc: str = "training"


def run_loop(state: optim.TrainState, loop: Loop, start_step: int, end_step: int) -> optim.TrainState:
    """Steps `start_step` .. `end_step` - 1; returns the last state (short of `end_step`
    after a preemption, which saved it)."""
    ckpt = loop.checkpointer
    preemption = Preemption()
    progress = tqdm.tqdm(
        total=end_step,
        initial=start_step,
        disable=jax.process_index() != 0,
        desc=loop.desc,
        unit="step",
        dynamic_ncols=True,
    )
    # Metrics of a log step are fetched one step later, so the host never waits on them.
    pending, window_start, window_steps = None, time.perf_counter(), 0
    step = start_step
    try:
        for step in range(start_step, end_step):
            state, metrics = loop.step(state, loop.next_batch())
            window_steps += 1
            progress.update(1)
            if pending is not None:
                _log(loop, progress, *pending)
                pending = None
            done = step + 1
            if done % loop.log_every == 0 or done == end_step:
                pending = (done, metrics, (time.perf_counter() - window_start) / window_steps)
                window_start, window_steps = time.perf_counter(), 0
            if loop.eval_every and (done % loop.eval_every == 0 or done == end_step):
                loop.evaluate(done, state)
            if preemption.requested or ckpt.manager.reached_preemption(done):
                check_finite(state, done, loop)
                ckpt.save(done, state, loop.data_iterator, force=True)
                logging.warning("stopped at step %d after a preemption signal", done)
                break
            if done % ckpt.save_every == 0 or done == end_step:
                check_finite(state, done, loop)
                ckpt.save(done, state, loop.data_iterator, force=done == end_step)
        if pending is not None:
            _log(loop, progress, *pending)
    except jax.errors.JaxRuntimeError as error:
        if jax.process_count() == 1:
            raise
        raise peer_lost_error(step, loop) from error
    finally:
        progress.close()
        preemption.restore()
    return state


class PeerLostError(ConnectionError):
    """A collective failed because another process of a multi-process run stopped. Its
    processes exit without jax.distributed's shutdown barrier, which would wait for the
    lost process's heartbeat (over a minute) and then abort with a C++ stack trace."""

    skip_exit_handlers = True  # errors.one_line_errors exits at once after the message


def peer_lost_error(step: int, loop: Loop) -> PeerLostError:
    last = loop.checkpointer.latest_step()
    kept = f"its checkpoint of step {last} is intact" if last is not None else "it saved no checkpoint yet"
    return PeerLostError(
        f"process {jax.process_index()} of {jax.process_count()}: a collective with the other processes failed at "
        f"step {step + 1}, most likely because another process of this run stopped (killed, out of memory, or its "
        f"host lost: see its log); {kept}. Start all {jax.process_count()} processes again with the same command "
        "to resume"
    )


def _log(loop: Loop, progress, step: int, metrics: dict, seconds_per_step: float) -> None:
    scalars = metrics_to_host(metrics)
    if not np.isfinite(scalars["loss"]):
        raise non_finite_error(step, f"loss {scalars['loss']}", loop)
    progress.set_postfix(loop.log(step, scalars, seconds_per_step))
