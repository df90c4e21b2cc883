"""Token classification (NER) on CoNLL-2003-format files with an ELECTRA discriminator.

    config = get_config()  # configs/tagging.py
    config.init = PRETRAIN_WORKDIR_OR_HF_DIR
    config.train_file, config.dev_file = "train.txt", "dev.txt"
    results = run(config, workdir)

Input: one word per line, whitespace-separated columns with the tag in `label_column`
(CoNLL-2003: `word POS chunk NER`, the last), a blank line between sentences;
`-DOCSTART-` lines separate documents and are not words. Tags are IOB1/IOB2/IOBES
(`B-PER`, `I-LOC`, `O`, ...).

Each word is split into sub-word pieces; only its FIRST piece carries the label (and the
prediction), the others are ignored by the loss (BERT's NER recipe). A sentence longer
than `max_seq_length` pieces is split into consecutive chunks of whole words, so every
word is predicted. Scored by entity-level precision / recall / F1 exactly as `seqeval`
(conlleval) counts entities, plus word accuracy. Each run exports a transformers
`ElectraForTokenClassification` (`WORKDIR/seed_<k>/`); `label_map.json` holds the tags.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import numpy as np

from data_pipelines import files
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.conll import Sentence, read_conll
from data_pipelines.pretraining import FEATURE_KEYS
from electra_jax import heads, loading
from electra_jax.finetune import common

DEFAULT_NUM_EPOCHS = 3.0
OUTSIDE = "O"
ENTITY_PREFIXES = "BIES"  # begin, inside, end, single (IOB1, IOB2 and IOBES tags)


# ---------------------------------------------------------------------------- data


def _split_tag(tag: str) -> tuple[str, str]:
    """(prefix, entity type) of a tag, as seqeval reads it: `B-PER` -> (B, PER), `O` -> (O, _)."""
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def check_tag(tag: str) -> None:
    if tag != OUTSIDE and not (len(tag) > 2 and tag[0] in ENTITY_PREFIXES and tag[1] == "-"):
        raise ValueError(
            f"tag {tag!r} is neither {OUTSIDE!r} nor <B|I|E|S>-<TYPE>; entity F1 needs IOB1/IOB2/IOBES tags"
        )


def label_list(config, train: list[Sentence]) -> list[str]:
    """The tag set: config.labels, else "O" and then the training tags sorted; at least one
    entity tag (with "O" alone entity F1 is undefined and the model learns nothing)."""
    if config.labels:
        labels = [label.strip() for label in config.labels.split(",")]
        where = f"--config.labels={config.labels!r}"
    else:
        seen = {tag for sentence in train for tag in sentence.tags}
        labels = sorted(seen, key=lambda tag: (tag != OUTSIDE, tag))
        where = config.train_file
    for tag in labels:
        check_tag(tag)
    if all(tag == OUTSIDE for tag in labels):
        raise ValueError(
            f"{where} has the tags {labels} and no entity tag (<B|I|E|S>-<TYPE>); give a training file with entities"
        )
    return labels


def word_pieces(tokenizer: tokenizer_lib.Tokenizer, word: str) -> list[int]:
    """The word's sub-word ids; a word the tokenizer drops entirely (control characters)
    becomes [UNK], so every word keeps a position that carries its label."""
    return tokenizer.encode(word) or [tokenizer.unk_id]


def _word_chunks(pieces: list[list[int]], budget: int, where: str) -> list[tuple[int, int]]:
    """[start, end) word ranges, greedily as many whole words per chunk as `budget` pieces hold."""
    chunks, start, used = [], 0, 0
    for index, word in enumerate(pieces):
        if len(word) > budget:
            raise ValueError(
                f"{where}: a word of {len(word)} sub-word pieces cannot fit "
                f"max_seq_length - 2 = {budget}; raise --config.max_seq_length"
            )
        if used + len(word) > budget:
            chunks.append((start, index))
            start, used = index, 0
        used += len(word)
    chunks.append((start, len(pieces)))
    return chunks


def encode_sentences(
    tokenizer: tokenizer_lib.Tokenizer,
    sentences: list[Sentence],
    label_ids: dict[str, int],
    max_seq_length: int,
    path: str,
) -> dict[str, np.ndarray]:
    """Model inputs [N, S]; `labels` [N, S] (the word's tag id at its first piece, else 0),
    `label_mask` [N, S] (1 at first pieces) and `sentence` [N] (which sentence a row
    continues; rows of a sentence follow each other in word order)."""
    rows = []
    for index, sentence in enumerate(sentences):
        for tag, line in zip(sentence.tags, sentence.lines):
            if tag not in label_ids:
                raise ValueError(
                    f"{path}:{line}: tag {tag!r} is not one of the labels "
                    f"{list(label_ids)} (taken from the training file); add it to "
                    "--config.labels or fix the tag"
                )
        pieces = [word_pieces(tokenizer, word) for word in sentence.words]
        for start, end in _word_chunks(pieces, max_seq_length - 2, f"{path}:{sentence.lines[0]}"):
            ids, labels, label_mask = [], [0], [0]  # [CLS]
            for word, tag in zip(pieces[start:end], sentence.tags[start:end]):
                ids += word
                labels += [label_ids[tag]] + [0] * (len(word) - 1)
                label_mask += [1] + [0] * (len(word) - 1)
            padding = [0] * (max_seq_length - len(labels))
            rows.append(
                {
                    **common.pack_features(tokenizer, ids, None, max_seq_length),
                    "labels": np.array(labels + padding, np.int32),
                    "label_mask": np.array(label_mask + padding, np.int32),
                    "sentence": np.array(index, np.int32),
                }
            )
    return common.stack_features(rows, max_seq_length)


def word_predictions(logits: np.ndarray, features: dict[str, np.ndarray], num_sentences: int) -> list[list[int]]:
    """Per sentence, the predicted tag id of each word (argmax at its first piece)."""
    predicted = np.argmax(logits, axis=-1)  # [N, S]
    per_sentence: list[list[int]] = [[] for _ in range(num_sentences)]
    for row, sentence in enumerate(features["sentence"]):
        per_sentence[sentence] += predicted[row][features["label_mask"][row] == 1].tolist()
    return per_sentence


# ---------------------------------------------------------------------------- metrics


def _ends_entity(prev_prefix: str, prefix: str, prev_type: str, entity_type: str) -> bool:
    """conlleval's rule: does an entity end just before this tag?"""
    return (
        prev_prefix in "ES"
        or (prev_prefix in "BI" and prefix in "BSO")
        or (prev_prefix not in "O." and prev_type != entity_type)
    )


def _starts_entity(prev_prefix: str, prefix: str, prev_type: str, entity_type: str) -> bool:
    """conlleval's rule: does an entity start at this tag?"""
    return (
        prefix in "BS" or (prev_prefix in "ESO" and prefix in "EI") or (prefix not in "O." and prev_type != entity_type)
    )


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """{(type, first word, last word)} of one sentence, read as conlleval / seqeval's default
    mode do (an `I-X` after `O` or after another type starts an entity)."""
    found, prev_prefix, prev_type, begin = set(), OUTSIDE, "", 0
    for index, tag in enumerate([*tags, OUTSIDE]):
        prefix, entity_type = _split_tag(tag)
        if _ends_entity(prev_prefix, prefix, prev_type, entity_type):
            found.add((prev_type, begin, index - 1))
        if _starts_entity(prev_prefix, prefix, prev_type, entity_type):
            begin = index
        prev_prefix, prev_type = prefix, entity_type
    return found


def _precision_recall_f1(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1}


def entity_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, Any]:
    """Micro entity precision / recall / F1 (x100) over all sentences, the same per entity
    type (`per_type`), and word accuracy."""
    if [len(s) for s in gold] != [len(s) for s in predicted]:
        raise ValueError("gold and predicted tag sequences differ in length")
    gold_entities = [entities(tags) for tags in gold]
    predicted_entities = [entities(tags) for tags in predicted]
    types = sorted({t for sentence in gold_entities + predicted_entities for t, _, _ in sentence})

    def counts(entity_type: Optional[str]) -> tuple[int, int, int]:
        def of(sentence):
            return {e for e in sentence if entity_type is None or e[0] == entity_type}

        return (
            sum(len(of(g) & of(p)) for g, p in zip(gold_entities, predicted_entities)),
            sum(len(of(p)) for p in predicted_entities),
            sum(len(of(g)) for g in gold_entities),
        )

    num_words = sum(len(s) for s in gold)
    num_right = sum(g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps))
    return {
        **_precision_recall_f1(*counts(None)),
        "accuracy": 100 * num_right / num_words if num_words else 0.0,
        "per_type": {t: _precision_recall_f1(*counts(t)) for t in types},
    }


# ---------------------------------------------------------------------------- fine-tuning


@dataclasses.dataclass(frozen=True)
class TaggingData:
    sentences: list[Sentence]
    features: dict[str, np.ndarray]
    path: str


def load_file(config, path: str, tokenizer, label_ids: dict[str, int]) -> TaggingData:
    sentences = read_conll(path, config.label_column)
    return TaggingData(sentences, encode_sentences(tokenizer, sentences, label_ids, config.max_seq_length, path), path)


def tag_sentences(predict, params, data: TaggingData, labels: list[str]) -> list[list[str]]:
    """The predicted tag of every word; `predict(params, features)` -> logits."""
    logits = predict(params, data.features)
    return [[labels[i] for i in sentence] for sentence in word_predictions(logits, data.features, len(data.sentences))]


def tagging_loss(logits, batch):
    """Cross-entropy at the first piece of every word only."""
    return common.cross_entropy(logits, batch["labels"], batch["label_mask"])


@common.on_process_zero
def write_conll_predictions(path: str, data: TaggingData, predicted: list[list[str]]) -> None:
    """`word gold predicted` lines, blank line between sentences (conlleval's input)."""
    with files.atomic_open(path) as f:
        for sentence, tags in zip(data.sentences, predicted):
            f.writelines(f"{w} {g} {p}\n" for w, g, p in zip(sentence.words, sentence.tags, tags))
            f.write("\n")


def run(config, workdir: str) -> dict[str, Any]:
    """Fine-tunes `config.seeds` runs; writes results.json, label_map.json, the exported
    models and (with a test file) test_predictions.txt of the median run into `workdir`."""
    common.require_files(config, ("train_file", "dev_file"), "CoNLL file")
    common.require_separate_dev_file(config)
    pretrained = common.open_run(config, workdir)
    tokenizer = pretrained.tokenizer
    labels = label_list(config, read_conll(config.train_file, config.label_column))
    label_ids = {label: i for i, label in enumerate(labels)}
    common.write_json(os.path.join(workdir, "label_map.json"), label_ids)
    train, dev = (load_file(config, config[key], tokenizer, label_ids) for key in ("train_file", "dev_file"))
    if config.max_train_examples:
        train_features = {k: v[: config.max_train_examples] for k, v in train.features.items()}
    else:
        train_features = train.features
    test = load_file(config, config.test_file, tokenizer, label_ids) if config.test_file else None
    gold_dev = [list(s.tags) for s in dev.sentences]

    def after_run(run_dir: str, params: dict, predict) -> dict:
        if config.save_models:
            export_tagger(pretrained, params, labels, run_dir)
        return {"test_tags": tag_sentences(predict, params, test, labels)} if test else {}

    setup = common.Setup(
        name="tagging",
        net=heads.TokenClassifier(common.finetuning_model_config(config, pretrained), len(labels)),
        loss=tagging_loss,
        train=train_features,
        batch_keys=(*FEATURE_KEYS, "labels", "label_mask"),
        default_num_epochs=DEFAULT_NUM_EPOCHS,
        evaluate=lambda predict, params: entity_metrics(gold_dev, tag_sentences(predict, params, dev, labels)),
        dev_score=lambda dev_metrics: dev_metrics["f1"],
        after_run=after_run,
        out_dir=workdir,
    )
    outcome, chosen = common.run_seeds(config, pretrained, setup)
    results = {"init": config.init, "config": config.to_dict(), "labels": labels, **outcome}
    if test:
        results["test"] = entity_metrics([list(s.tags) for s in test.sentences], chosen["test_tags"])
        write_conll_predictions(os.path.join(workdir, "test_predictions.txt"), test, chosen["test_tags"])
    common.write_json(os.path.join(workdir, "results.json"), results)
    return results


def export_tagger(pretrained: loading.Network, params: dict, labels: list[str], out_dir: str) -> None:
    """A transformers ElectraForTokenClassification dir (tokenizer included)."""
    common.export_model(
        pretrained,
        jax.device_get(params),
        out_dir,
        "token_classification",
        {
            "id2label": {str(i): label for i, label in enumerate(labels)},
            "label2id": {label: i for i, label in enumerate(labels)},
        },
    )


def report(config, workdir: str) -> str:
    """The CLI's program: `run`, its median dev metrics and test summary as JSON."""
    return common.json_report(run(config, workdir))
