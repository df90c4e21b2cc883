"""ELECTRA pretraining step in PyTorch + transformers: the speed baseline for our JAX step.

    python benchmarks/hf_baseline.py --size small --batch 32 --seq 128 --variant eager --device cpu --steps 5

One step does what `electra_jax.pretrain.train_step` does: mask 15% of the tokens
(max(1, min(P, round(n * 0.15))) per sequence, P = int((0.15 + 0.005) * seq), 85% [MASK],
15% unchanged), generator MLM forward, Gumbel-max sampling from the generator's softmax
(no gradient), discriminator forward on the corrupted sequence, loss = mlm + 50 * rtd,
backward through both networks, grad-norm clipping at 1.0, AdamW (eps 1e-6, weight decay
0.01 on matrices only). Generator (`ElectraForMaskedLM`) and discriminator
(`ElectraForPreTraining`) share one embedding module; both are randomly initialised from
an `ElectraConfig` (nothing is downloaded).

Variants (`--variant`):
  eager / compiled                     plain HF usage: `generator(..., labels=...)` with -100
                                       at unmasked positions, so the LM head runs over all
                                       seq positions ([B, S, V] logits), as a typical user does;
  eager-gathered / compiled-gathered   hidden states gathered at the P masked positions
                                       before the LM head ([B, P, V] logits), as our JAX step.
"compiled" wraps the loss computation (masking, both forwards, sampling, losses) in
`torch.compile`; AOTAutograd compiles its backward too. bf16 autocast on CUDA by default.

Standalone on purpose: only torch, transformers and numpy (the GPU machine has no
tensorflow and maybe not our package).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import statistics
import time
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

# Special ids as in our sentencepiece vocabulary; they are never masked.
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
SPECIAL_IDS = (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID)

MASK_PROB = 0.15
MASK_TOKEN_FRAC = 0.85  # of the chosen positions; the rest keep their token (no random tokens)
DISC_WEIGHT = 50.0
ADAM_EPS = 1e-6
WEIGHT_DECAY = 0.01
CLIP_NORM = 1.0

VARIANTS = ("eager", "compiled", "eager-gathered", "compiled-gathered")


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """Discriminator shape; the generator has the same depth and embedding size,
    hidden = gen_fraction * hidden, FFN = 4 * gen hidden, heads = max(1, gen hidden // 64)."""

    hidden: int
    embedding: int
    layers: int
    heads: int
    ffn: int
    gen_fraction: float
    vocab: int = 30522
    learning_rate: float = 5e-4  # the paper's value for this size


SIZES = {
    "tiny": ModelSize(hidden=128, embedding=128, layers=2, heads=2, ffn=512, gen_fraction=0.25, vocab=8192),
    "small": ModelSize(hidden=256, embedding=128, layers=12, heads=4, ffn=1024, gen_fraction=0.25),
    "base": ModelSize(hidden=768, embedding=768, layers=12, heads=12, ffn=3072, gen_fraction=1 / 3, learning_rate=2e-4),
    "large": ModelSize(
        hidden=1024, embedding=1024, layers=24, heads=16, ffn=4096, gen_fraction=0.25, learning_rate=2e-4
    ),
}


def max_predictions_per_seq(seq_length: int, mask_prob: float = MASK_PROB) -> int:
    """The original's static cap on masked positions: int((mask_prob + 0.005) * seq) (19 at 128)."""
    return int((mask_prob + 0.005) * seq_length)


def electra_configs(size: str, max_positions: int = 512) -> tuple[ElectraConfig, ElectraConfig]:
    """(generator config, discriminator config) for one of SIZES."""
    if size not in SIZES:
        raise ValueError(f"size={size!r} is not one of {sorted(SIZES)}; pass --size small, for example")
    shape = SIZES[size]
    common = dict(
        vocab_size=shape.vocab,
        embedding_size=shape.embedding,
        num_hidden_layers=shape.layers,
        max_position_embeddings=max_positions,
        pad_token_id=PAD_ID,
        hidden_act="gelu",
    )
    gen_hidden = int(round(shape.hidden * shape.gen_fraction))
    generator = ElectraConfig(
        hidden_size=gen_hidden, intermediate_size=4 * gen_hidden, num_attention_heads=max(1, gen_hidden // 64), **common
    )
    discriminator = ElectraConfig(
        hidden_size=shape.hidden, intermediate_size=shape.ffn, num_attention_heads=shape.heads, **common
    )
    return generator, discriminator


def build_models(
    size: str, device: str, seed: int = 0, max_positions: int = 512
) -> tuple[ElectraForMaskedLM, ElectraForPreTraining]:
    """Randomly initialised generator and discriminator sharing one embedding module.

    The generator's LM head stays tied to the (shared) word embedding matrix, so the
    word embeddings get gradient from the MLM head, the generator body and the discriminator.
    """
    gen_config, disc_config = electra_configs(size, max_positions)
    torch.manual_seed(seed)
    generator = ElectraForMaskedLM(gen_config)
    discriminator = ElectraForPreTraining(disc_config)
    discriminator.electra.embeddings = generator.electra.embeddings
    return generator.to(device).train(), discriminator.to(device).train()


def unique_parameters(*modules: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters of all modules, each shared tensor once (the optimizer must see it once)."""
    by_id = {}
    for module in modules:
        for param in module.parameters():
            by_id.setdefault(id(param), param)
    return list(by_id.values())


def make_optimizer(params: list[torch.nn.Parameter], learning_rate: float) -> torch.optim.AdamW:
    """AdamW as ELECTRA: eps 1e-6, weight decay 0.01 except LayerNorm weights and biases."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    on_cuda = params[0].is_cuda
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
        eps=ADAM_EPS,
        fused=on_cuda or None,
    )


def synthetic_batch(batch_size: int, seq_length: int, vocab_size: int, seed: int = 0) -> dict:
    """Pad-free sequences [CLS] random regular tokens [SEP], two segments (as packed shards)."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(len(SPECIAL_IDS), vocab_size, size=(batch_size, seq_length))
    input_ids[:, 0], input_ids[:, -1] = CLS_ID, SEP_ID
    token_type_ids = np.zeros_like(input_ids)
    token_type_ids[:, seq_length // 2 :] = 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.ones(batch_size, seq_length, dtype=torch.long),
        "token_type_ids": torch.from_numpy(token_type_ids),
    }


def scatter_where(
    sequence: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """sequence[b, positions[b, p]] = values[b, p] where weights > 0; returns a new tensor.

    Padding slots write to an extra column that is cut off, so they never race with a real
    write at the same position (the order of duplicate-index scatters is undefined)."""
    batch_size, seq_length = sequence.shape
    targets = torch.where(weights > 0, positions, seq_length)  # [B, P]
    widened = torch.cat([sequence, sequence.new_zeros(batch_size, 1)], dim=1)  # [B, S + 1]
    return widened.scatter(1, targets, values.to(sequence.dtype))[:, :seq_length].contiguous()


def mask_tokens(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, max_predictions: int, mask_prob: float = MASK_PROB
) -> dict:
    """Choose masked positions the way `electra_jax.objective.mask_tokens` does.

    Per sequence, max(1, min(max_predictions, round(n_tokens * mask_prob))) positions
    (n_tokens counts [CLS]/[SEP]; never more than the candidates) drawn uniformly without
    replacement among attended, non-special tokens; 85% become [MASK], 15% stay.
    input_ids, attention_mask: [B, S]. Returns masked_input_ids [B, S], positions [B, P],
    original_ids [B, P], weights [B, P] (1.0 real slot, 0.0 padding slot at position 0).
    """
    special = torch.isin(input_ids, torch.tensor(SPECIAL_IDS, device=input_ids.device))
    candidates = (attention_mask > 0) & ~special  # [B, S]
    n_tokens = attention_mask.sum(-1).float()
    # torch.round rounds half to even, like tf.round in the original and jnp.round in ours.
    num_to_predict = torch.clamp(torch.round(n_tokens * mask_prob).long(), 1, max_predictions)
    num_to_predict = torch.minimum(num_to_predict, candidates.sum(-1))  # [B]
    # A uniformly random order of the candidates: sort random keys, non-candidates last.
    keys = torch.where(candidates, torch.rand(input_ids.shape, device=input_ids.device), 2.0)
    order = torch.argsort(keys, dim=-1)[:, :max_predictions]  # [B, P]
    slots = torch.arange(max_predictions, device=input_ids.device)
    weights = (slots[None, :] < num_to_predict[:, None]).float()  # [B, P]
    positions = torch.where(weights > 0, order, 0)
    original_ids = torch.gather(input_ids, 1, positions)
    use_mask_token = torch.rand(positions.shape, device=input_ids.device) < MASK_TOKEN_FRAC
    replacement = torch.where(use_mask_token, MASK_ID, original_ids)
    return {
        "masked_input_ids": scatter_where(input_ids, positions, weights, replacement),
        "positions": positions,
        "original_ids": original_ids,
        "weights": weights,
    }


def sample_gumbel_max(logits: torch.Tensor) -> torch.Tensor:
    """[..., V] logits -> [...] ids drawn from softmax(logits), no gradient (Gumbel-max trick)."""
    logits = logits.detach().float()
    uniform = torch.rand_like(logits).clamp_(torch.finfo(torch.float32).tiny, 1.0)
    return torch.argmax(logits - torch.log(-torch.log(uniform)), dim=-1)


def generator_mlm_full(generator: ElectraForMaskedLM, batch: dict, masked: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain HF usage: labels -100 except at masked positions, LM head over every position.

    Returns (mlm loss, [B, P, V] logits at the masked positions for sampling)."""
    labels = scatter_where(
        torch.full_like(batch["input_ids"], -100), masked["positions"], masked["weights"], masked["original_ids"]
    )  # [B, S]
    output = generator(
        input_ids=masked["masked_input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        labels=labels,
    )
    index = masked["positions"][..., None].expand(-1, -1, output.logits.shape[-1])
    return output.loss, torch.gather(output.logits, 1, index)  # logits [B, P, V]


def generator_mlm_gathered(
    generator: ElectraForMaskedLM, batch: dict, masked: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimized: gather the P masked hidden states before the LM head (as our JAX step).

    Returns (mlm loss, [B, P, V] logits at the masked positions)."""
    hidden = generator.electra(
        input_ids=masked["masked_input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
    ).last_hidden_state  # [B, S, H]
    index = masked["positions"][..., None].expand(-1, -1, hidden.shape[-1])
    masked_hidden = torch.gather(hidden, 1, index)  # [B, P, H]
    logits = generator.generator_lm_head(generator.generator_predictions(masked_hidden))  # [B, P, V]
    nll = F.cross_entropy(logits.float().flatten(0, 1), masked["original_ids"].flatten(), reduction="none")
    weights = masked["weights"].flatten()
    return (nll * weights).sum() / weights.sum().clamp(min=1.0), logits


def discriminator_loss(
    disc_logits: torch.Tensor, is_replaced: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Sigmoid cross-entropy averaged over real tokens ([B, S] each).

    Our own masked mean instead of HF's `labels=` path: HF selects real tokens by boolean
    indexing, a data-dependent shape that breaks torch.compile graphs."""
    token_weights = attention_mask.float()
    rtd_terms = F.binary_cross_entropy_with_logits(disc_logits.float(), is_replaced.float(), reduction="none")
    return (rtd_terms * token_weights).sum() / token_weights.sum().clamp(min=1.0)


def electra_loss(
    generator: ElectraForMaskedLM,
    discriminator: ElectraForPreTraining,
    batch: dict,
    max_predictions: int,
    gather_masked: bool,
) -> dict:
    """Total loss mlm + 50 * rtd for one batch, with its parts (detached) for logging."""
    masked = mask_tokens(batch["input_ids"], batch["attention_mask"], max_predictions)
    mlm_fn = generator_mlm_gathered if gather_masked else generator_mlm_full
    mlm_loss, masked_logits = mlm_fn(generator, batch, masked)
    sampled_ids = sample_gumbel_max(masked_logits)  # [B, P]
    corrupted_ids = scatter_where(batch["input_ids"], masked["positions"], masked["weights"], sampled_ids)
    # A sampled token equal to the original counts as original.
    is_replaced = (corrupted_ids != batch["input_ids"]).float()  # [B, S]
    disc_logits = discriminator(
        input_ids=corrupted_ids, attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
    ).logits  # [B, S]
    disc_loss = discriminator_loss(disc_logits, is_replaced, batch["attention_mask"])
    total = mlm_loss + DISC_WEIGHT * disc_loss
    return {"loss": total, "mlm_loss": mlm_loss.detach(), "disc_loss": disc_loss.detach()}


def _autocast(device: str, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype == "bfloat16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    raise ValueError(f"dtype={dtype!r} is not supported; use 'bfloat16' (autocast) or 'float32'")


def make_train_step(
    generator: ElectraForMaskedLM,
    discriminator: ElectraForPreTraining,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    *,
    max_predictions: int,
    variant: str,
    device: str,
    dtype: str,
) -> Callable[[dict], dict]:
    """step(batch) -> {"loss", "mlm_loss", "disc_loss", "grad_norm"} (tensors, not synced)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not one of {VARIANTS}")
    gather_masked = variant.endswith("-gathered")

    def loss_fn(batch):
        with _autocast(device, dtype):
            return electra_loss(generator, discriminator, batch, max_predictions, gather_masked)

    if variant.startswith("compiled"):
        loss_fn = torch.compile(loss_fn)

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        losses = loss_fn(batch)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
        optimizer.step()
        return {**{k: v.detach() for k, v in losses.items()}, "grad_norm": grad_norm}

    return step


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclasses.dataclass
class HFBenchmark:
    """A ready-to-time transformers step: `step(batch)` on one fixed synthetic batch."""

    step: Callable[[dict], dict]
    batch: dict
    device: str
    dtype: str
    num_params: int


def make_hf_benchmark(
    size: str,
    batch_size: int,
    seq_length: int,
    *,
    variant: str = "eager",
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    seed: int = 0,
) -> HFBenchmark:
    """Models, optimizer, step and batch, untimed (the harness interleaves several of these).

    device defaults to cuda when available; dtype to bfloat16 (autocast) on CUDA, float32
    elsewhere."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("bfloat16" if torch.device(device).type == "cuda" else "float32")
    generator, discriminator = build_models(size, device, seed, max_positions=max(512, seq_length))
    params = unique_parameters(generator, discriminator)
    optimizer = make_optimizer(params, SIZES[size].learning_rate)
    step = make_train_step(
        generator,
        discriminator,
        optimizer,
        params,
        max_predictions=max_predictions_per_seq(seq_length),
        variant=variant,
        device=device,
        dtype=dtype,
    )
    batch = {k: v.to(device) for k, v in synthetic_batch(batch_size, seq_length, SIZES[size].vocab, seed).items()}
    torch.manual_seed(seed)
    return HFBenchmark(step, batch, device, dtype, sum(p.numel() for p in params))


def run_hf_baseline(
    size: str,
    batch_size: int,
    seq_length: int,
    *,
    steps: int = 10,
    warmup: int = 3,
    variant: str = "eager",
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    seed: int = 0,
) -> dict:
    """Time the transformers ELECTRA pretraining step on one synthetic batch.

    Step time is the median over `steps` timed steps after `warmup` untimed ones (which
    include torch.compile's compilation, reported as warmup_s).
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps={steps} must be >= 1 and warmup={warmup} >= 0")
    bench = make_hf_benchmark(size, batch_size, seq_length, variant=variant, device=device, dtype=dtype, seed=seed)
    device = bench.device
    is_cuda = torch.device(device).type == "cuda"
    if is_cuda:
        torch.cuda.reset_peak_memory_stats(device)

    start = time.perf_counter()
    for _ in range(warmup):
        bench.step(bench.batch)
    synchronize(device)
    warmup_s = time.perf_counter() - start
    step_times = []
    for _ in range(steps):
        start = time.perf_counter()
        metrics = bench.step(bench.batch)
        synchronize(device)
        step_times.append(time.perf_counter() - start)

    step_s = statistics.median(step_times)
    return {
        "impl": f"transformers-{variant}",
        "size": size,
        "batch": batch_size,
        "seq_len": seq_length,
        "variant": variant,
        "device": device,
        "dtype": bench.dtype,
        "steps": steps,
        "warmup": warmup,
        "step_s": step_s,
        "warmup_s": warmup_s,
        "sequences_per_s": batch_size / step_s,
        "tokens_per_s": batch_size * seq_length / step_s,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if is_cuda else None,
        "num_params": bench.num_params,
        "loss": float(metrics["loss"]),
        "mlm_loss": float(metrics["mlm_loss"]),
        "disc_loss": float(metrics["disc_loss"]),
        "device_name": torch.cuda.get_device_name(device) if is_cuda else platform.processor(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--variant", default="eager", choices=VARIANTS)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("bfloat16", "float32"),
        help="default: bfloat16 autocast on CUDA, float32 on CPU",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    args = parser.parse_args(argv)
    result = run_hf_baseline(
        args.size,
        args.batch,
        args.seq,
        steps=args.steps,
        warmup=args.warmup,
        variant=args.variant,
        device=args.device,
        dtype=args.dtype,
    )
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
