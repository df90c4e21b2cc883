"""Deployment: a jitted predictor for any fine-tuned head, and int8 weight quantization.

    net, params, tokenizer = load_finetuned("out/mrpc/seed_0")   # any exported task model
    predict = make_predictor(net, params)                         # jitted batch -> logits
    predict_int8 = make_predictor(net, params, int8=True)         # the same, int8 weights

int8 variant: every Dense kernel (all matmuls of the encoder and the heads) is stored as
int8 with one float32 scale per output channel (symmetric: scale = max|w| / 127 over the
input axis, q = round(w / scale)); the matmul runs on the int8 weights converted to the
activation dtype and multiplies the output channel by its scale (x @ (q * s) == (x @ q) * s),
so only int8 weights live in memory. Embedding tables, LayerNorms and biases stay float32
(lookups and vectors, not matmuls).

CLI: float vs int8 accuracy and CPU latency of a fine-tuned GLUE model on a dev split:
    python -m electra_jax.inference --config.model=OUT/sst2/seed_0 --config.task=sst2 --config.data_dir=GLUE_DIR
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipelines.pretraining import FEATURE_KEYS
from electra_jax import heads, loading, model, presets

INT8_MAX = 127
QUANTIZED_KERNEL, KERNEL_SCALE = "kernel_int8", "kernel_scale"
# transformers architecture of an exported directory -> our module for it
_TASK_MODULES = {
    "ElectraForSequenceClassification": lambda cfg, n: heads.SequenceClassifier(cfg, n),
    "ElectraForTokenClassification": lambda cfg, n: heads.TokenClassifier(cfg, n),
    "ElectraForQuestionAnswering": lambda cfg, n: heads.QuestionAnswerer(cfg),
}


# ---------------------------------------------------------------------------- quantization


def quantize_kernel(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float32 scale per output channel) of a [..., in, out] kernel (a scanned
    stack keeps its leading layer axis: one scale per layer and channel)."""
    kernel = np.asarray(kernel, np.float32)
    max_abs = np.max(np.abs(kernel), axis=-2)  # [..., out]
    scale = np.where(max_abs > 0, max_abs / INT8_MAX, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(kernel / scale[..., None, :]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return quantized, scale


def quantize_params(params: Any) -> Any:
    """`params` with every Dense `kernel` replaced by `kernel_int8` + `kernel_scale`."""
    if not isinstance(params, dict):
        return params
    out = {name: quantize_params(value) for name, value in params.items() if name != "kernel"}
    if "kernel" in params:
        out[QUANTIZED_KERNEL], out[KERNEL_SCALE] = quantize_kernel(params["kernel"])
    return out


def dequantize_params(quantized: Any) -> Any:
    """The float32 tree the int8 one stands for (q * scale): what `int8=True` computes with."""
    if not isinstance(quantized, dict):
        return quantized
    out = {
        name: dequantize_params(value)
        for name, value in quantized.items()
        if name not in (QUANTIZED_KERNEL, KERNEL_SCALE)
    }
    if QUANTIZED_KERNEL in quantized:
        out["kernel"] = quantized[QUANTIZED_KERNEL].astype(np.float32) * quantized[KERNEL_SCALE][..., None, :]
    return out


def _int8_dense(next_fun, args, kwargs, context):
    """flax method interceptor: a Dense whose params hold int8 weights multiplies with them."""
    dense = context.module
    if not (
        isinstance(dense, nn.Dense)
        and context.method_name == "__call__"
        and dense.has_variable("params", QUANTIZED_KERNEL)
    ):
        return next_fun(*args, **kwargs)
    inputs = args[0]
    dtype = dense.dtype or jnp.promote_types(inputs.dtype, dense.param_dtype)
    weights = dense.get_variable("params", QUANTIZED_KERNEL).astype(dtype)  # [in, out]
    scale = dense.get_variable("params", KERNEL_SCALE).astype(dtype)  # [out]
    outputs = jnp.dot(inputs.astype(dtype), weights, precision=dense.precision) * scale
    if dense.use_bias:
        outputs = outputs + dense.get_variable("params", "bias").astype(dtype)
    return outputs


def quantized_size_bytes(params: Any) -> int:
    return sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(params))


# ---------------------------------------------------------------------------- predictors


@functools.lru_cache(maxsize=16)
def _jitted_apply(net: nn.Module):
    """jitted (params, batch) -> outputs, one per (hashable) module; int8 Dense layers are
    recognised by their params, so float and int8 trees share it (one compile each)."""

    @jax.jit
    def predict(params, batch):
        with nn.intercept_methods(_int8_dense):
            return model.apply_network(net, params, batch, deterministic=True)

    return predict


def make_predictor(net: nn.Module, params: Any, int8: bool = False) -> Callable[[dict], Any]:
    """jitted `batch -> outputs` of `net` (any task head; dropout off). `batch` holds
    input_ids, attention_mask, token_type_ids ([B, S] int). With `int8`, the Dense kernels
    are quantized once here and the matmuls run on the int8 weights."""
    if int8:
        params = quantize_params(jax.device_get(params))
    predict = _jitted_apply(net)
    return lambda batch: predict(params, batch)


def load_finetuned(model_dir: str):
    """(net, params, tokenizer) of an exported fine-tuned transformers directory
    (sequence classification, token classification or question answering)."""
    pretrained = loading.load_network(model_dir, network="encoder")
    hf_config = pretrained.hf_config or {}
    architectures = [a for a in hf_config.get("architectures", []) if a in _TASK_MODULES]
    if not architectures or not pretrained.head_params:
        raise ValueError(
            f"{model_dir} is not a fine-tuned model (architectures="
            f"{hf_config.get('architectures')}); export one with the fine-tuning "
            f"CLIs ({sorted(_TASK_MODULES)})"
        )
    num_labels = len(hf_config.get("id2label", {})) or 2
    net = _TASK_MODULES[architectures[0]](pretrained.model_config, num_labels)
    return net, {"electra": pretrained.encoder_params, **pretrained.head_params}, pretrained.tokenizer


def compare_int8(
    net: nn.Module, params: Any, features: dict[str, np.ndarray], labels: np.ndarray, batch_size: int
) -> dict[str, Any]:
    """Accuracy of float32 vs int8 predictions (argmax of the logits), their agreement, the
    largest logit difference, weight bytes, and seconds per batch on this machine."""
    from electra_jax.finetune import common

    result: dict[str, Any] = {"num_examples": int(len(labels))}
    logits = {}
    for name, int8 in (("float32", False), ("int8", True)):
        predict = make_predictor(net, params, int8)
        batch = {key: features[key][:batch_size] for key in FEATURE_KEYS}
        jax.block_until_ready(predict(batch))  # compile outside the timing
        start = time.perf_counter()
        logits[name] = common.predict_outputs(lambda _, b: predict(b), None, features, batch_size)
        seconds = time.perf_counter() - start
        predictions = np.argmax(logits[name], axis=-1)
        result[name] = {
            "accuracy": 100 * float(np.mean(predictions == labels)),
            "seconds_per_batch": seconds / -(-len(labels) // batch_size),
        }
    result["float32"]["weight_bytes"] = quantized_size_bytes(params)
    result["int8"]["weight_bytes"] = quantized_size_bytes(quantize_params(jax.device_get(params)))
    result["accuracy_delta"] = result["int8"]["accuracy"] - result["float32"]["accuracy"]
    result["prediction_agreement"] = 100 * float(
        np.mean(np.argmax(logits["float32"], -1) == np.argmax(logits["int8"], -1))
    )
    result["max_abs_logit_difference"] = float(np.max(np.abs(logits["float32"] - logits["int8"])))
    return result


def inference_config():
    import ml_collections

    c = ml_collections.ConfigDict()
    c.model = ""  # fine-tuned transformers directory (a GLUE export)
    c.task = ""  # its GLUE task (sst2, mrpc, ...)
    c.data_dir = ""  # GLUE TSV folder
    c.split = "dev"  # the split to score
    c.max_seq_length = 128  # tokens per example
    c.batch_size = 32  # examples per prediction batch
    return c


# The CLI's numbers: (least, most), None = unbounded (presets.check_ranges).
RANGES = {"batch_size": (1, None)}


def check_split_has_labels(task: str, split: str) -> None:
    """Refuses a split without labels: the comparison's accuracies would be against
    placeholder labels (0), not a measurement."""
    from data_pipelines import glue as glue_data

    glue_data.num_labels(task)  # an unknown task is named first
    layouts = glue_data.TASKS[task].layouts
    labelled = [name for name, layout in layouts.items() if layout.label is not None]
    if split in layouts and split not in labelled:
        raise ValueError(
            f"--config.split={split} of {task} has no labels to measure float32 and int8 accuracy "
            f"against; use a split with labels: {' or '.join(labelled)}"
        )


def main(config, arguments):
    del arguments
    from electra_jax.finetune import glue

    presets.check_ranges(config, RANGES, "")
    check_split_has_labels(config.task, config.split)
    trained_on = loading.read_hf_config(config.model).get("finetuning_task")
    if trained_on and trained_on != config.task:  # another task's head scores as nonsense, not as an error
        raise ValueError(
            f"{config.model} was fine-tuned on {trained_on!r} (its config.json), not on "
            f"--config.task={config.task!r}; score it with --config.task={trained_on}"
        )
    net, params, tokenizer = load_finetuned(config.model)
    # what glue.load_split reads of a GLUE config, for a split that is not trained on
    split_config = ml_collections.ConfigDict(
        dict(data_dir=config.data_dir, tfds_data_dir="", source="tsv", max_seq_length=config.max_seq_length)
    )
    features = glue.load_split(split_config, config.task, config.split, tokenizer)
    result = compare_int8(net, params, features, features["labels"], config.batch_size)
    print(json.dumps({"model": config.model, "task": config.task, "split": config.split, **result}, indent=2))


def run():
    from data_pipelines import errors

    errors.run_tool(inference_config(), main, required=("model", "task"))


if __name__ == "__main__":
    run()
