"""SQuAD's official exact match and F1, computed the way the official scripts do.

The references are the scripts published with the datasets
(https://rajpurkar.github.io/SQuAD-explorer/: `evaluate-v1.1.py` and `evaluate-v2.0.py`,
the latter also vendored as google-research/electra `finetune/qa/squad_official_eval.py`):
- answers are normalized by lowercasing, removing ASCII punctuation, removing the
  articles a/an/the (whole words) and collapsing whitespace;
- EM and token-level F1 of a prediction are the maximum over the gold answers;
- v1.1 counts every gold answer; v2.0 drops gold answers that normalize to nothing and
  scores an unanswerable question (no gold answers) only against the empty prediction,
  with F1 = 1 when both sides are empty (v1.1 gives 0 there);
- v2.0 with no-answer scores: a question whose score exceeds the threshold (strictly) is
  predicted unanswerable; `best_*` is the official search over all thresholds.
Scores are percentages, as the scripts print them. A question without a prediction is an
error here (v1.1 would score it 0, v2.0 would leave it out of the total).
"""

from __future__ import annotations

import collections
import re
import string
from typing import Mapping, Optional, Sequence

from data_pipelines.squad import SquadExample, check_version

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, strip ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, version: str = "1.1") -> float:
    """F1 over the bags of normalized tokens."""
    prediction_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version == "2.0" and not (prediction_tokens and gold_tokens):
        return float(prediction_tokens == gold_tokens)  # no answer agrees only with no answer
    num_same = sum((collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(prediction_tokens), num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(example: SquadExample, version: str) -> list[str]:
    texts = [text for text, _ in example.answers]
    if version == "1.1":
        return texts
    return [t for t in texts if normalize_answer(t)] or [""]


def raw_scores(
    examples: Sequence[SquadExample], predictions: Mapping[str, str], version: str
) -> tuple[dict[str, float], dict[str, float]]:
    """Per question id: (EM, F1) of its prediction, maxed over the gold answers."""
    check_version(version)
    missing = [e.qid for e in examples if e.qid not in predictions]
    if missing:
        raise ValueError(
            f"no prediction for {len(missing)} of {len(examples)} questions "
            f"(e.g. {missing[:5]}); predict every question of the evaluated set"
        )
    exact, f1 = {}, {}
    for example in examples:
        golds, prediction = gold_answers(example, version), predictions[example.qid]
        exact[example.qid] = max(exact_match(prediction, g) for g in golds)
        f1[example.qid] = max(token_f1(prediction, g, version) for g in golds)
    return exact, f1


def apply_no_answer_threshold(
    scores: Mapping[str, float], na_scores: Mapping[str, float], has_answer: Mapping[str, bool], threshold: float
) -> dict[str, float]:
    """Questions whose no-answer score exceeds `threshold` predict "": right iff unanswerable."""
    return {qid: float(not has_answer[qid]) if na_scores[qid] > threshold else score for qid, score in scores.items()}


def best_threshold(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    na_scores: Mapping[str, float],
    has_answer: Mapping[str, bool],
) -> tuple[float, float]:
    """(best score %, its threshold) over all thresholds, as the official `find_best_thresh`:
    sweep the questions in increasing no-answer score, answering each in turn."""
    score = best = sum(1 for answerable in has_answer.values() if not answerable)
    threshold = 0.0
    for qid in sorted(na_scores, key=lambda k: na_scores[k]):
        if has_answer[qid]:
            score += scores[qid]
        elif predictions[qid]:
            score -= 1
        if score > best:
            best, threshold = score, na_scores[qid]
    return 100.0 * best / len(scores), threshold


def _percentages(exact: Mapping[str, float], f1: Mapping[str, float], qids: list[str]) -> dict:
    return {
        "exact": 100.0 * sum(exact[q] for q in qids) / len(qids),
        "f1": 100.0 * sum(f1[q] for q in qids) / len(qids),
        "total": len(qids),
    }


def evaluate(
    examples: Sequence[SquadExample],
    predictions: Mapping[str, str],
    version: str,
    na_scores: Optional[Mapping[str, float]] = None,
    na_threshold: float = 1.0,
) -> dict:
    """The official script's output for `predictions` (question id -> answer text).

    v1.1: {"exact_match", "f1"}. v2.0: {"exact", "f1", "total", "HasAns_*", "NoAns_*"}, and
    with `na_scores` (question id -> no-answer score; the official `--na-prob-file`) the
    threshold is applied and "best_exact(_thresh)", "best_f1(_thresh)" are added.
    """
    exact, f1 = raw_scores(examples, predictions, version)
    qids = [e.qid for e in examples]
    if version == "1.1":
        totals = _percentages(exact, f1, qids)
        return {"exact_match": totals["exact"], "f1": totals["f1"]}
    has_answer = {e.qid: bool(e.answers) for e in examples}
    if na_scores is not None:
        missing = [q for q in qids if q not in na_scores]
        if missing:
            raise ValueError(f"no no-answer score for {len(missing)} questions (e.g. {missing[:5]})")
        na_scores = {q: float(na_scores[q]) for q in qids}
        exact_thresholded = apply_no_answer_threshold(exact, na_scores, has_answer, na_threshold)
        f1_thresholded = apply_no_answer_threshold(f1, na_scores, has_answer, na_threshold)
    else:
        exact_thresholded, f1_thresholded = exact, f1
    result = _percentages(exact_thresholded, f1_thresholded, qids)
    for name, subset in (
        ("HasAns", [q for q in qids if has_answer[q]]),
        ("NoAns", [q for q in qids if not has_answer[q]]),
    ):
        if subset:
            result.update(
                {f"{name}_{k}": v for k, v in _percentages(exact_thresholded, f1_thresholded, subset).items()}
            )
    if na_scores is not None:
        result["best_exact"], result["best_exact_thresh"] = best_threshold(predictions, exact, na_scores, has_answer)
        result["best_f1"], result["best_f1_thresh"] = best_threshold(predictions, f1, na_scores, has_answer)
    return result
