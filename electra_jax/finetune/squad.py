"""SQuAD 1.1 / 2.0 fine-tuning of an ELECTRA discriminator: span head, doc-stride windows,
n-best decoding, the official EM/F1.

    config = get_config()  # configs/squad.py
    config.version = "2.0"; config.init = PRETRAIN_WORKDIR_OR_HF_DIR
    config.data_dir = SQUAD_DIR  # train-v2.0.json, dev-v2.0.json (or TFDS squad/v2.0)
    results = run(config, workdir)

How it relates to the original (google-research/electra `finetune/qa/`) and to HF:
- Inputs are `[CLS] question [SEP] context-window [SEP]`; the question keeps its first
  `max_query_length` tokens and long contexts are cut into windows whose starts are
  `doc_stride` tokens apart (the original's and BERT's meaning of doc_stride; HF's
  `run_qa.py` instead uses it as the overlap). A token is only an answer start in the
  window where it has the most context (BERT's `_check_is_max_context`).
- The span head is HF's `ElectraForQuestionAnswering` layout (`qa_outputs`: one dense
  layer giving start and end logits), i.e. the original with `joint_prediction=False`
  (the original's default predicts the end conditioned on a beam of starts, a head HF
  has no counterpart for). As in the original, the start/end softmax runs over the
  context tokens and [CLS] only; a window without the answer (and every window of an
  unanswerable question) is labelled start = end = [CLS].
- SQuAD 2.0: by default the original's answerability classifier
  (`heads.AnswerabilityHead`, `answerable_uses_start_logits=True`, trained on the
  question's `is_impossible` with weight 0.5); a question's no-answer score is its
  minimum logit over windows and "" is predicted when it exceeds `na_threshold`
  (default -2.75, the original's `qa_na_threshold`). With `answerable_head=False` the
  score is HF's/BERT's null score difference instead, min over windows of
  (start[CLS] + end[CLS]) minus the best span's score (default threshold 0.0, HF's
  `null_score_diff_threshold`). HF's ElectraForQuestionAnswering has no answerability
  head, so the exported transformers model carries the span head only.
- Answers are read back through the tokenizer's character offsets
  (`Tokenizer.encode_with_offsets`): a predicted span is the exact original text
  between its first token's start and last token's end, rather than the original's
  whitespace-token alignment heuristic (`get_final_text`).
Written per run: `WORKDIR/seed_<k>/predictions.json` (question id -> answer text, the
official format; "" = no answer), for 2.0 also `null_odds.json` (id -> no-answer score,
the official script's `--na-prob-file`), and the transformers model;
`WORKDIR/results.json` holds the official metrics of every run and their median.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from etils import epath

from data_pipelines import files
from data_pipelines import squad as squad_data
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.pretraining import FEATURE_KEYS
from electra_jax import heads
from electra_jax.finetune import common, squad_metrics

# google-research/electra configure_finetuning.py: the QA recipe (also the paper's Table 7).
DEFAULT_NUM_EPOCHS = 2.0
# The no-answer threshold per kind of no-answer score (see the module docstring).
DEFAULT_NA_THRESHOLD = {"answerable_head": -2.75, "null_score_diff": 0.0}
TRAIN_KEYS = (*FEATURE_KEYS, "start_positions", "end_positions", "is_impossible")


def check_config(config) -> None:
    squad_data.check_version(config.version)
    for key in ("max_query_length", "doc_stride", "n_best_size", "max_answer_length"):
        if config[key] < 1:
            raise ValueError(f"{key}={config[key]}; it must be at least 1 (set --config.{key})")


def uses_answerable_head(config) -> bool:
    return config.version == "2.0" and config.answerable_head


def na_threshold(config) -> float:
    if config.na_threshold is not None:
        return config.na_threshold
    return DEFAULT_NA_THRESHOLD["answerable_head" if uses_answerable_head(config) else "null_score_diff"]


# ---------------------------------------------------------------------------- windows


def window_spans(num_tokens: int, window_length: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of the windows over `num_tokens` context tokens: each starts
    min(length, doc_stride) tokens after the previous, the last one ends at the last token."""
    if num_tokens < 1 or window_length < 1 or doc_stride < 1:
        raise ValueError(
            f"window_spans(num_tokens={num_tokens}, window_length={window_length}, "
            f"doc_stride={doc_stride}) needs all three >= 1"
        )
    spans, start = [], 0
    while True:
        length = min(num_tokens - start, window_length)
        spans.append((start, length))
        if start + length == num_tokens:
            return spans
        start += min(length, doc_stride)


def max_context_windows(spans: Sequence[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """[num_tokens]: the window giving each token the most context, min(left, right) +
    0.01 * window length; the first such window on ties (BERT's `_check_is_max_context`)."""
    best_window = np.full(num_tokens, -1)
    best_score = np.full(num_tokens, -np.inf)
    for window, (start, length) in enumerate(spans):
        positions = np.arange(start, start + length)
        score = np.minimum(positions - start, start + length - 1 - positions) + 0.01 * length
        better = score > best_score[positions]
        best_window[positions[better]] = window
        best_score[positions[better]] = score[better]
    return best_window


def answer_token_span(char_spans: np.ndarray, answer_start: int, answer_end: int, qid: str) -> tuple[int, int]:
    """(first, last) context token overlapping the characters [answer_start, answer_end)."""
    overlapping = np.flatnonzero(
        (char_spans[:, 0] < answer_end) & (char_spans[:, 1] > answer_start) & (char_spans[:, 1] > char_spans[:, 0])
    )
    if not len(overlapping):
        raise ValueError(
            f"question id={qid}: the answer at characters [{answer_start}, "
            f"{answer_end}) covers no token of the context; check its answer_start"
        )
    return int(overlapping[0]), int(overlapping[-1])


@dataclasses.dataclass(frozen=True)
class Windows:
    """Model inputs of every window, and what decoding needs to map outputs back to text."""

    features: dict[str, np.ndarray]  # input_ids, attention_mask, token_type_ids [N, S]; with
    # labels also start_positions, end_positions (0 = [CLS]) and is_impossible [N]
    example_index: np.ndarray  # [N] the window's question, an index into the examples
    char_spans: np.ndarray  # [N, S, 2] (start, end) of each token in the context; -1 outside it
    max_context: np.ndarray  # [N, S] bool: the token's most-context window is this one


def featurize(
    examples: Sequence[squad_data.SquadExample],
    tokenizer: tokenizer_lib.Tokenizer,
    max_seq_length: int,
    max_query_length: int,
    doc_stride: int,
    with_labels: bool,
) -> Windows:
    """Doc-stride windows of every question (labels from its first gold answer)."""
    rows: dict[str, list] = {key: [] for key in (*TRAIN_KEYS, "example_index", "char_spans", "max_context")}
    context_cache: dict[str, tuple[list[int], np.ndarray]] = {}  # questions share paragraphs
    num_long_questions = 0
    for index, example in enumerate(examples):
        question_ids = tokenizer.encode(example.question)
        num_long_questions += len(question_ids) > max_query_length
        question_ids = question_ids[:max_query_length]
        if example.context not in context_cache:
            ids, spans = tokenizer.encode_with_offsets(example.context)
            context_cache[example.context] = (ids, np.asarray(spans, np.int32).reshape(-1, 2))
        context_ids, context_spans = context_cache[example.context]
        window_length = max_seq_length - len(question_ids) - 3
        if window_length < 1:
            raise ValueError(
                f"max_seq_length={max_seq_length} leaves no room for context after a "
                f"{len(question_ids)}-token question; raise max_seq_length or lower "
                "max_query_length"
            )
        if not context_ids:
            raise ValueError(f"question id={example.qid}: the context tokenizes to nothing")
        spans = window_spans(len(context_ids), window_length, doc_stride)
        best_window = max_context_windows(spans, len(context_ids))
        if with_labels and not example.is_impossible:
            text, char_start = example.answers[0]
            answer = answer_token_span(context_spans, char_start, char_start + len(text), example.qid)
        offset = len(question_ids) + 2  # [CLS] question [SEP]
        for window, (start, length) in enumerate(spans):
            input_ids = [
                tokenizer.cls_id,
                *question_ids,
                tokenizer.sep_id,
                *context_ids[start : start + length],
                tokenizer.sep_id,
            ]
            padding = max_seq_length - len(input_ids)
            rows["input_ids"].append(input_ids + [tokenizer.pad_id] * padding)
            rows["attention_mask"].append([1] * len(input_ids) + [0] * padding)
            rows["token_type_ids"].append([0] * offset + [1] * (length + 1) + [0] * padding)
            char_spans = np.full((max_seq_length, 2), -1, np.int32)
            char_spans[offset : offset + length] = context_spans[start : start + length]
            max_context = np.zeros(max_seq_length, bool)
            max_context[offset : offset + length] = best_window[start : start + length] == window
            rows["char_spans"].append(char_spans)
            rows["max_context"].append(max_context)
            rows["example_index"].append(index)
            if with_labels:
                inside = not example.is_impossible and start <= answer[0] and answer[1] < start + length
                rows["start_positions"].append(answer[0] - start + offset if inside else 0)
                rows["end_positions"].append(answer[1] - start + offset if inside else 0)
                rows["is_impossible"].append(float(example.is_impossible))
    if num_long_questions:  # contexts are never cut (windows cover them), questions are
        logging.warning(
            "%d of %d questions are longer than max_query_length=%d tokens and were cut; raise "
            "--config.max_query_length to keep them",
            num_long_questions,
            len(examples),
            max_query_length,
        )
    keys = TRAIN_KEYS if with_labels else FEATURE_KEYS
    features = {key: np.asarray(rows[key], np.float32 if key == "is_impossible" else np.int32) for key in keys}
    return Windows(
        features,
        np.asarray(rows["example_index"], np.int64),
        np.stack(rows["char_spans"]),
        np.stack(rows["max_context"]),
    )


# ---------------------------------------------------------------------------- loss


def squad_loss(outputs: dict, batch: dict, answerable_weight: float) -> jax.Array:
    """Mean over windows of (start CE + end CE) / 2, the softmaxes over the context and
    [CLS] only, plus `answerable_weight` x the answerability sigmoid CE when the head is on."""
    candidates = heads.span_candidates(batch["attention_mask"], batch["token_type_ids"])

    def position_loss(logits, positions):
        logits = jnp.where(candidates, logits.astype(jnp.float32), -1e9)
        return optax.softmax_cross_entropy_with_integer_labels(logits, positions)

    loss = (
        position_loss(outputs["start_logits"], batch["start_positions"])
        + position_loss(outputs["end_logits"], batch["end_positions"])
    ) / 2
    if "no_answer_logits" in outputs:
        loss += answerable_weight * optax.sigmoid_binary_cross_entropy(
            outputs["no_answer_logits"].astype(jnp.float32), batch["is_impossible"]
        )
    return jnp.mean(loss)


# ---------------------------------------------------------------------------- decoding


@dataclasses.dataclass(frozen=True)
class Decoded:
    predictions: dict[str, str]  # question id -> answer text, "" = no answer (the official format)
    best_spans: dict[str, str]  # question id -> best non-empty span (= predictions for 1.1)
    na_scores: Optional[dict[str, float]]  # 2.0: question id -> no-answer score
    nbest: dict[str, list[dict]]  # question id -> [{text, score, probability}] best first
    num_without_span: int  # questions no window offered a valid span for (predicted "")


def _window_candidates(
    start_logits, end_logits, char_spans, max_context, context: str, n_best_size: int, max_answer_length: int
) -> list[tuple[float, str]]:
    """(start + end logit, text) of the valid spans among the top starts x top ends."""
    in_context = char_spans[:, 0] >= 0
    positions = np.flatnonzero(in_context)
    starts = positions[np.argsort(-start_logits[positions], kind="stable")[:n_best_size]]
    ends = positions[np.argsort(-end_logits[positions], kind="stable")[:n_best_size]]
    candidates = []
    for start in starts:
        if not max_context[start]:
            continue
        for end in ends:
            if end < start or end - start + 1 > max_answer_length:
                continue
            text = context[char_spans[start, 0] : char_spans[end, 1]]
            candidates.append((float(start_logits[start] + end_logits[end]), text))
    return candidates


def _nbest(candidates: list[tuple[float, str]], n_best_size: int) -> list[dict]:
    """The `n_best_size` best-scoring distinct texts, with softmax probabilities over them."""
    kept, seen = [], set()
    for score, text in sorted(candidates, key=lambda c: -c[0]):
        if text not in seen and len(kept) < n_best_size:
            seen.add(text)
            kept.append((score, text))
    scores = np.array([s for s, _ in kept])
    probabilities = np.exp(scores - (scores.max() if kept else 0.0))
    probabilities /= probabilities.sum()
    return [{"text": t, "score": s, "probability": float(p)} for (s, t), p in zip(kept, probabilities)]


def decode(
    examples: Sequence[squad_data.SquadExample],
    windows: Windows,
    outputs: dict[str, np.ndarray],
    version: str,
    n_best_size: int,
    max_answer_length: int,
    threshold: float = 0.0,
) -> Decoded:
    """Answers from the model outputs ([N, S] start/end logits, [N] no_answer_logits) of
    `windows`: the best-scoring valid span over all windows of a question; for 2.0 its
    no-answer score (see the module docstring) and "" where that exceeds `threshold`."""
    windows_of = [[] for _ in examples]
    for window, index in enumerate(windows.example_index):
        windows_of[index].append(window)
    predictions, best_spans, na_scores, nbest = {}, {}, {}, {}
    num_without_span = 0
    for example, example_windows in zip(examples, windows_of):
        candidates, null_scores = [], []
        for w in example_windows:
            candidates += _window_candidates(
                outputs["start_logits"][w],
                outputs["end_logits"][w],
                windows.char_spans[w],
                windows.max_context[w],
                example.context,
                n_best_size,
                max_answer_length,
            )
            null_scores.append(
                float(outputs["no_answer_logits"][w])
                if "no_answer_logits" in outputs
                else float(outputs["start_logits"][w, 0] + outputs["end_logits"][w, 0])
            )
        nbest[example.qid] = _nbest(candidates, n_best_size)
        best = next((entry for entry in nbest[example.qid] if entry["text"].strip()), None)
        num_without_span += best is None
        best_spans[example.qid] = predictions[example.qid] = best["text"] if best else ""
        if version == "2.0":
            score_null = min(null_scores)
            if "no_answer_logits" not in outputs and best is not None:
                score_null -= best["score"]  # HF's null score difference
            na_scores[example.qid] = score_null
            if score_null > threshold:
                predictions[example.qid] = ""
    return Decoded(predictions, best_spans, na_scores if version == "2.0" else None, nbest, num_without_span)


def score(
    examples: Sequence[squad_data.SquadExample], decoded: Decoded, version: str, threshold: float
) -> dict[str, float]:
    """The official metrics (squad_metrics.evaluate) of `decoded`, as the official script
    scores the best spans with the no-answer scores and `threshold`."""
    return squad_metrics.evaluate(examples, decoded.best_spans, version, decoded.na_scores, threshold)


# ---------------------------------------------------------------------------- data


def load_examples(config, split: str) -> list[squad_data.SquadExample]:
    """The questions of `split` ("train" or "dev") that `config` selects, validated."""
    data_file = config.train_file if split == "train" else config.eval_file
    dataset = squad_data.load_squad(
        config.version,
        split,
        data_file=data_file,
        data_dir=config.data_dir,
        tfds_data_dir=config.tfds_data_dir or None,
        source=config.source,
    )
    article_slice = config.train_articles if split == "train" else config.eval_articles
    dataset = squad_data.select_articles(dataset, article_slice)
    name = data_file or squad_data.json_file_name(config.version, split)
    examples = squad_data.parse_examples(dataset, name)
    if config.version == "1.1":
        impossible = [e.qid for e in examples if e.is_impossible]
        if impossible:
            raise ValueError(
                f"{name} has {len(impossible)} unanswerable questions (e.g. "
                f"{impossible[0]}) but version=1.1; set --config.version=2.0"
            )
    if split == "train" and config.max_train_examples:
        examples = examples[: config.max_train_examples]
    return examples


def check_disjoint(train: Sequence[squad_data.SquadExample], dev: Sequence[squad_data.SquadExample]) -> None:
    """Refuses to evaluate on questions the model was trained on."""
    shared = {e.qid for e in train} & {e.qid for e in dev}
    if shared:
        raise ValueError(
            f"{len(shared)} evaluation questions are also training questions (e.g. "
            f"{sorted(shared)[:3]}); split the file with --config.train_articles and "
            "--config.eval_articles"
        )


def featurize_config(config, examples, tokenizer, with_labels: bool) -> Windows:
    return featurize(
        examples, tokenizer, config.max_seq_length, config.max_query_length, config.doc_stride, with_labels
    )


# ---------------------------------------------------------------------------- the run


def run(config, workdir: str) -> dict[str, Any]:
    """Fine-tunes `config.seeds` runs and scores each on the evaluation set; writes
    predictions, models and results.json into `workdir` (see the module docstring)."""
    check_config(config)
    pretrained = common.open_run(config, workdir)
    tokenizer = pretrained.tokenizer
    train_examples, dev_examples = load_examples(config, "train"), load_examples(config, "dev")
    check_disjoint(train_examples, dev_examples)
    train = featurize_config(config, train_examples, tokenizer, with_labels=True)
    dev = featurize_config(config, dev_examples, tokenizer, with_labels=False)
    logging.info(
        "SQuAD %s: %d train questions -> %d windows, %d eval questions -> %d windows",
        config.version,
        len(train_examples),
        common.num_rows(train.features),
        len(dev_examples),
        common.num_rows(dev.features),
    )
    threshold = na_threshold(config)
    latest: dict[str, Decoded] = {}  # the last evaluation's answers, written after each run

    def evaluate(predict, params):
        latest["decoded"] = decode(
            dev_examples,
            dev,
            predict(params, dev.features),
            config.version,
            config.n_best_size,
            config.max_answer_length,
            threshold,
        )
        return score(dev_examples, latest["decoded"], config.version, threshold)

    def after_run(run_dir, params, predict):
        write_predictions(latest["decoded"], run_dir)
        if config.save_models:
            span_params = {"electra": params["electra"], "qa_outputs": params["qa_outputs"]}
            common.export_model(
                pretrained, span_params, run_dir, "question_answering", {"finetuning_task": f"squad_v{config.version}"}
            )
        return {"num_without_span": latest["decoded"].num_without_span}

    setup = common.Setup(
        name=f"squad v{config.version}",
        net=heads.QuestionAnswerer(
            common.finetuning_model_config(config, pretrained), answerable_head=uses_answerable_head(config)
        ),
        loss=functools.partial(squad_loss, answerable_weight=config.answerable_weight),
        train=train.features,
        batch_keys=TRAIN_KEYS,
        default_num_epochs=DEFAULT_NUM_EPOCHS,
        evaluate=evaluate,
        dev_score=lambda dev_metrics: dev_metrics["f1"],
        after_run=after_run,
        out_dir=workdir,
    )
    outcome, _ = common.run_seeds(config, pretrained, setup)
    outcome["hyperparameters"].update(num_train_questions=len(train_examples), num_eval_questions=len(dev_examples))
    results = {
        "init": config.init,
        "config": config.to_dict(),
        "version": config.version,
        "na_threshold": threshold if config.version == "2.0" else None,
        **outcome,
    }
    common.write_json(os.path.join(workdir, "results.json"), results)
    return results


@common.on_process_zero
def write_predictions(decoded: Decoded, out_dir: str) -> None:
    """predictions.json (official format) and, for 2.0, null_odds.json."""
    epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
    files.write_json(os.path.join(out_dir, "predictions.json"), decoded.predictions)
    if decoded.na_scores is not None:
        files.write_json(os.path.join(out_dir, "null_odds.json"), decoded.na_scores)


def report(config, workdir: str) -> str:
    """The CLI's program: `run`, its median EM/F1 and the resolved recipe as JSON."""
    return common.json_report(run(config, workdir), ("version", "median", "hyperparameters"))
