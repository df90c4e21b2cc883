"""SQuAD: official EM/F1 (hand cases and the official scripts' own functions), tokenizer
offsets vs transformers, doc-stride windows, decoding and the 2.0 no-answer threshold,
head parity with transformers' ElectraForQuestionAnswering, end-to-end runs on fixture
JSON, and refusals of bad input."""

import json
import os

import helpers
import jax
import numpy as np
import pytest
import squad_official

from benchmarks.shared_data import shared_path
from configs import squad as squad_configs
from data_pipelines import squad as squad_data
from data_pipelines import tokenizer as tokenizer_lib
from electra_jax import heads, hf, model
from electra_jax.finetune import squad, squad_metrics

BERT_VOCAB = shared_path("bert-base-uncased-vocab", "vocab.txt")


# ---------------------------------------------------------------------------- fixtures


def qa_entry(qid, question, context, answers, impossible=None):
    entry = {
        "id": qid,
        "question": question,
        "answers": [{"text": a, "answer_start": context.index(a)} for a in answers],
    }
    if impossible is not None:
        entry["is_impossible"] = impossible
    return entry


def random_dataset(seed, num_questions=60, with_unanswerable=False):
    """Contexts of random words; each question's gold answers are spans of its context, and
    some answers carry articles, punctuation and case so normalization matters."""
    rng = np.random.default_rng(seed)
    words = (
        "the a an cat dog Paris France river, bank. John's book An Apple THE end state-of-the-art 1,234 mat sat on"
    ).split()
    articles = []
    for a in range(4):
        paragraphs = []
        for p in range(3):
            context = " ".join(rng.choice(words, size=40))
            qas = []
            for q in range(num_questions // 12):
                qid = f"a{a}p{p}q{q}"
                impossible = with_unanswerable and rng.random() < 0.35
                answers = []
                if not impossible:
                    for _ in range(rng.integers(1, 4)):
                        start = int(rng.integers(0, 35))
                        answers.append(" ".join(context.split()[start : start + rng.integers(1, 5)]))
                qas.append(
                    qa_entry(qid, f"question {qid}?", context, answers, impossible if with_unanswerable else None)
                )
            paragraphs.append({"context": context, "qas": qas})
        articles.append({"title": f"article {a}", "paragraphs": paragraphs})
    return {"version": "2.0" if with_unanswerable else "1.1", "data": articles}


def random_predictions(dataset, seed):
    """Per question: a gold answer re-cased / re-punctuated, a partial overlap, a wrong span,
    an article-only or empty string."""
    rng = np.random.default_rng(seed)
    predictions = {}
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            words = paragraph["context"].split()
            for qa in paragraph["qas"]:
                kind = rng.integers(5)
                gold = qa["answers"][0]["text"] if qa["answers"] else ""
                if kind == 0:
                    predictions[qa["id"]] = f"The {gold.upper()}!"
                elif kind == 1:
                    start = int(rng.integers(0, 35))
                    predictions[qa["id"]] = " ".join(words[start : start + 3])
                elif kind == 2:
                    predictions[qa["id"]] = gold + " " + words[int(rng.integers(40))]
                elif kind == 3:
                    predictions[qa["id"]] = "the"
                else:
                    predictions[qa["id"]] = ""
    return predictions


def write_vocab(path, words):
    helpers.write_vocab(path, words, ".,?'")
    return tokenizer_lib.WordPieceTokenizer(str(path))


# ---------------------------------------------------------------------------- metrics


def test_normalization_and_scores_hand_computed():
    assert squad_metrics.normalize_answer("The  Quick, brown FOX!") == "quick brown fox"
    assert squad_metrics.normalize_answer("an apple a day, the end") == "apple day end"
    assert squad_metrics.normalize_answer("theatre anthem") == "theatre anthem"  # whole words only
    assert squad_metrics.normalize_answer("state-of-the-art") == "stateoftheart"  # "-" removed first
    assert squad_metrics.exact_match("An Apple.", "apple") == 1.0
    assert squad_metrics.exact_match("apples", "apple") == 0.0
    # pred {quick, brown, fox}, gold {brown, fox, jumped}: 2 shared -> P = R = 2/3
    assert squad_metrics.token_f1("the quick brown fox", "brown fox jumped") == pytest.approx(2 / 3)
    # repeated tokens count with multiplicity: pred {a1 x2}, gold {a1}: P = 1/2, R = 1 -> 2/3
    assert squad_metrics.token_f1("tom tom", "tom") == pytest.approx(2 / 3)
    # both empty after normalization: 2.0 agrees (1), 1.1 has no shared token (0)
    assert squad_metrics.token_f1("the", "a", "2.0") == 1.0
    assert squad_metrics.token_f1("the", "a", "1.1") == 0.0
    assert squad_metrics.token_f1("", "Paris", "2.0") == 0.0


def test_evaluate_hand_computed_max_over_gold():
    context = "Denver Broncos beat the Carolina Panthers in Santa Clara"
    dataset = {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            qa_entry("q1", "who won?", context, ["Denver Broncos", "Broncos"]),
                            qa_entry("q2", "who lost?", context, ["the Carolina Panthers"]),
                            qa_entry("q3", "where?", context, ["Santa Clara"]),
                        ],
                    }
                ],
            }
        ]
    }
    examples = squad_data.parse_examples(dataset, "hand")
    predictions = {"q1": "broncos", "q2": "Carolina", "q3": "Denver"}
    # q1: EM 1 via the second gold; q2: EM 0, F1: pred {carolina} vs gold {carolina, panthers}
    # -> P 1, R 1/2, F1 2/3; q3: 0 / 0.
    result = squad_metrics.evaluate(examples, predictions, "1.1")
    assert result == pytest.approx({"exact_match": 100 / 3, "f1": 100 * (1 + 2 / 3) / 3})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_v1_matches_the_official_script(seed):
    dataset = random_dataset(seed)
    predictions = random_predictions(dataset, seed + 10)
    examples = squad_data.parse_examples(dataset, "fixture")
    ours = squad_metrics.evaluate(examples, predictions, "1.1")
    assert ours == pytest.approx(squad_official.OfficialV1.evaluate(dataset["data"], predictions))
    assert 0 < ours["exact_match"] < ours["f1"] < 100  # the fixture exercises partial matches


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_v2_matches_the_official_script_with_and_without_na_scores(seed):
    dataset = random_dataset(seed, with_unanswerable=True)
    predictions = random_predictions(dataset, seed + 10)
    examples = squad_data.parse_examples(dataset, "fixture")
    assert any(e.is_impossible for e in examples) and any(not e.is_impossible for e in examples)
    rng = np.random.default_rng(seed)
    na_scores = {qid: float(rng.normal()) for qid in predictions}
    na_scores[next(iter(na_scores))] = 0.25  # a score exactly at a threshold below
    assert squad_metrics.evaluate(examples, predictions, "2.0") == pytest.approx(
        squad_official.OfficialV2.main(dataset["data"], predictions)
    )
    for threshold in (-1.0, 0.0, 0.25, 1.0):
        ours = squad_metrics.evaluate(examples, predictions, "2.0", na_scores, threshold)
        official = squad_official.OfficialV2.main(dataset["data"], predictions, na_scores, threshold)
        assert ours == pytest.approx(official), threshold
        assert set(ours) >= {"HasAns_exact", "NoAns_f1", "best_f1_thresh"}


def test_missing_prediction_is_an_error():
    dataset = random_dataset(0)
    examples = squad_data.parse_examples(dataset, "fixture")
    predictions = random_predictions(dataset, 1)
    del predictions[examples[3].qid]
    with pytest.raises(ValueError, match=f"no prediction for 1 of {len(examples)}.*{examples[3].qid}"):
        squad_metrics.evaluate(examples, predictions, "1.1")


# ---------------------------------------------------------------------------- tokenizer offsets

OFFSET_TEXTS = [
    "Super Bowl 50 was an American football game to determine the champion of the NFL.",
    "Héllo  wörld, ｆｕｌｌ café naïve — “quoted” 東京 x\u2028y e\u0301t\u00e9 [MASK] a[SEP]b",
    "The Broncos' 24–10 win (Levi's Stadium, Santa Clara) on February 7, 2016.",
    "  leading and trailing\tspaces \n",
]


@pytest.mark.skipif(not os.path.exists(BERT_VOCAB), reason="needs the shared bert-base-uncased vocab")
def test_wordpiece_offsets_match_transformers():
    import transformers

    ours = tokenizer_lib.WordPieceTokenizer(BERT_VOCAB)
    theirs = transformers.BertTokenizerFast(BERT_VOCAB, do_lower_case=True)
    for text in OFFSET_TEXTS:
        ids, offsets = ours.encode_with_offsets(text)
        expected = theirs(text, add_special_tokens=False, return_offsets_mapping=True)
        assert ids == ours.encode(text) == expected["input_ids"]
        assert offsets == [tuple(o) for o in expected["offset_mapping"]]


def test_sentencepiece_offsets_point_at_the_pieces(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n".join(OFFSET_TEXTS * 30 + [f"line {i} of the corpus, café." for i in range(200)]), encoding="utf-8"
    )
    spm = tokenizer_lib.train_sentencepiece(str(corpus), str(tmp_path / "spm.model"), vocab_size=80)
    for text in OFFSET_TEXTS:
        ids, offsets = spm.encode_with_offsets(text)
        assert ids == spm.encode(text)
        covered = "".join(text[start:end] for start, end in offsets)
        assert covered == "".join(text.split())  # every non-blank character, once, in order
        for token_id, (start, end) in zip(ids, offsets):
            piece = spm.id_to_piece(token_id).replace("\u2581", "")
            if token_id != spm.unk_id and text[start:end].isascii():
                assert text[start:end] == piece


# ---------------------------------------------------------------------------- windows


def test_window_spans_hand_computed_and_max_context():
    assert squad.window_spans(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert squad.window_spans(10, 4, 5) == [(0, 4), (4, 4), (8, 2)]  # stride capped at the length
    assert squad.window_spans(3, 8, 2) == [(0, 3)]
    spans = squad.window_spans(10, 4, 3)
    # token 3: window 0 gives min(3, 0) + 0.04, window 1 min(0, 3) + 0.04: a tie, the first wins;
    # token 6: windows 1 and 2 tie the same way; tokens 4, 5 score 1.04 in window 1 only.
    best = squad.max_context_windows(spans, 10)
    assert best.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="doc_stride=0"):
        squad.window_spans(10, 4, 0)


@pytest.fixture(scope="module")
def long_example_tokenizer(tmp_path_factory):
    words = [f"w{i}" for i in range(40)] + "who what is the answer".split()
    return write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt", words)


def test_windows_cover_the_context_and_answers_map_back(long_example_tokenizer):
    tokenizer = long_example_tokenizer
    rng = np.random.default_rng(0)
    context = " ".join(f"w{i}" for i in rng.integers(0, 40, size=90)) + "."
    qas = []
    for q, start in enumerate(range(0, 85, 7)):
        answer = " ".join(context.split()[start : start + 1 + q % 4])
        char_start = len(" ".join(context.split()[:start])) + (1 if start else 0)
        qas.append(
            {
                "id": f"q{q}",
                "question": "what is the answer?",
                "answers": [{"text": answer, "answer_start": char_start}],
            }
        )
    dataset = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}
    examples = squad_data.parse_examples(dataset, "long")
    windows = squad.featurize(
        examples, tokenizer, max_seq_length=24, max_query_length=8, doc_stride=5, with_labels=True
    )
    context_ids, context_spans = tokenizer.encode_with_offsets(context)
    for index, example in enumerate(examples):
        rows = np.flatnonzero(windows.example_index == index)
        assert len(rows) > 5  # the context really is split
        seen, max_context_count = set(), np.zeros(len(context_ids), int)
        for row in rows:
            ids = windows.features["input_ids"][row]
            types = windows.features["token_type_ids"][row]
            mask = windows.features["attention_mask"][row]
            in_context = windows.char_spans[row, :, 0] >= 0
            # context tokens are exactly segment 1 minus the final [SEP]
            assert in_context.sum() == (types * mask).sum() - 1
            for position in np.flatnonzero(in_context):
                token = context_spans.index(tuple(windows.char_spans[row, position]))
                assert context_ids[token] == ids[position]
                seen.add(token)
                max_context_count[token] += windows.max_context[row, position]
            start, end = (windows.features[k][row] for k in ("start_positions", "end_positions"))
            if start:
                span = windows.char_spans[row]
                assert context[span[start, 0] : span[end, 1]] == example.answers[0][0]
        assert seen == set(range(len(context_ids)))  # every context token is in some window
        assert (max_context_count == 1).all()  # ... and has exactly one max-context window
        assert any(windows.features["start_positions"][rows])  # some window holds the answer


def test_wordpiece_subword_answer_maps_to_exact_characters(tmp_path):
    tokenizer = write_vocab(tmp_path / "vocab.txt", ["who", "won", "den", "##ver", "broncos", "in"])
    context = "Denver Broncos won in Denver."
    dataset = {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {"id": "q", "question": "who won?", "answers": [{"text": "Broncos", "answer_start": 7}]}
                        ],
                    }
                ],
            }
        ]
    }
    windows = squad.featurize(squad_data.parse_examples(dataset, "x"), tokenizer, 16, 8, 4, True)
    start, end = windows.features["start_positions"][0], windows.features["end_positions"][0]
    assert context[windows.char_spans[0, start, 0] : windows.char_spans[0, end, 1]] == "Broncos"
    # "Denver" is two pieces (den, ##ver) whose spans join into the original cased word
    assert [tuple(s) for s in windows.char_spans[0, 5:7]] == [(0, 3), (3, 6)]


# ---------------------------------------------------------------------------- decoding


def one_window(context, tokenizer, question="who won?"):
    dataset = {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [{"id": "q", "question": question, "answers": [], "is_impossible": True}],
                    }
                ],
            }
        ]
    }
    examples = squad_data.parse_examples(dataset, "x")
    return examples, squad.featurize(examples, tokenizer, 32, 8, 8, with_labels=False)


def logits_for(windows, start_at, end_at, high=5.0):
    seq = windows.features["input_ids"].shape[1]
    start, end = np.zeros((len(windows.example_index), seq)), np.zeros((len(windows.example_index), seq))
    for (row, position), value in start_at.items():
        start[row, position] = value
    for (row, position), value in end_at.items():
        end[row, position] = value
    return {"start_logits": start, "end_logits": end}


def test_decode_best_valid_span_and_max_answer_length(tmp_path):
    tokenizer = write_vocab(tmp_path / "v.txt", ["who", "won", "denver", "broncos", "beat", "carolina"])
    examples, windows = one_window("Denver Broncos beat Carolina", tokenizer)
    offset = 5  # [CLS] who won ? [SEP]
    # best start is "Carolina" but its best end precedes it; "Denver".."Broncos" is the best valid
    outputs = logits_for(
        windows,
        {(0, offset + 3): 9.0, (0, offset): 4.0, (0, 0): 50.0},
        {(0, offset + 1): 8.0, (0, offset + 2): 1.0, (0, 1): 50.0},
    )
    decoded = squad.decode(examples, windows, outputs, "1.1", n_best_size=5, max_answer_length=3)
    assert decoded.predictions == {"q": "Denver Broncos"}  # [CLS] and the question never answer
    assert decoded.nbest["q"][0]["score"] == pytest.approx(12.0)
    assert sum(e["probability"] for e in decoded.nbest["q"]) == pytest.approx(1.0)
    # with at most one token, the best is a one-token span: start 9 + end 0 (Carolina) vs 4 + 0
    short = squad.decode(examples, windows, outputs, "1.1", n_best_size=5, max_answer_length=1)
    assert short.predictions == {"q": "Carolina"}


def test_decode_only_answers_from_a_tokens_max_context_window(long_example_tokenizer):
    context = " ".join(f"w{i}" for i in range(30))
    examples, _ = one_window(context, long_example_tokenizer)
    windows = squad.featurize(examples, long_example_tokenizer, 16, 8, 4, with_labels=False)
    assert len(windows.example_index) > 2
    # token w6 sits in windows 0 and 1 (10 tokens each, 4 apart) and is max-context in one
    rows = [r for r in range(len(windows.example_index)) if (windows.char_spans[r, :, 0] == context.index("w6 ")).any()]
    position = {r: int(np.flatnonzero(windows.char_spans[r, :, 0] == context.index("w6 "))[0]) for r in rows}
    not_max = [r for r in rows if not windows.max_context[r, position[r]]]
    is_max = [r for r in rows if windows.max_context[r, position[r]]]
    assert not_max and len(is_max) == 1
    outputs = logits_for(
        windows,
        {(not_max[0], position[not_max[0]]): 30.0, (is_max[0], position[is_max[0]]): 1.0},
        {(not_max[0], position[not_max[0]]): 30.0, (is_max[0], position[is_max[0]]): 1.0},
    )
    decoded = squad.decode(examples, windows, outputs, "1.1", n_best_size=3, max_answer_length=1)
    assert decoded.predictions["q"] == "w6"
    assert decoded.nbest["q"][0]["score"] == pytest.approx(2.0)  # from the max-context window


def test_v2_no_answer_threshold(tmp_path):
    tokenizer = write_vocab(tmp_path / "v.txt", ["who", "won", "denver", "broncos"])
    examples, windows = one_window("Denver Broncos", tokenizer)
    outputs = logits_for(windows, {(0, 5): 3.0, (0, 0): 2.0}, {(0, 6): 1.0, (0, 0): 1.5})
    # HF's null score difference: (2.0 + 1.5) - (3.0 + 1.0) = -0.5; "" iff -0.5 > threshold
    for threshold, expected in ((-1.0, ""), (-0.5, "Denver Broncos"), (0.0, "Denver Broncos")):
        decoded = squad.decode(examples, windows, outputs, "2.0", 5, 10, threshold)
        assert decoded.na_scores == {"q": pytest.approx(-0.5)}
        assert decoded.predictions == {"q": expected}
        assert decoded.best_spans == {"q": "Denver Broncos"}
    # the answerability head: its logit is the score, min over windows
    outputs["no_answer_logits"] = np.array([-2.0])
    decoded = squad.decode(examples, windows, outputs, "2.0", 5, 10, threshold=-2.75)
    assert decoded.na_scores == {"q": -2.0} and decoded.predictions == {"q": ""}
    assert squad.decode(examples, windows, outputs, "2.0", 5, 10, -1.0).predictions == {"q": "Denver Broncos"}
    # scoring the best spans with the threshold equals scoring the thresholded predictions
    metrics = squad.score(examples, decoded, "2.0", -2.75)
    assert metrics["exact"] == squad_metrics.evaluate(examples, decoded.predictions, "2.0")["exact"] == 100.0


# ---------------------------------------------------------------------------- model and loss

FACTS = [
    ("Paris is the capital of France.", "which city is the capital of France?", "Paris"),
    ("The cat sat on the mat.", "where did the cat sit?", "the mat"),
    ("The book was written by John Smith.", "who wrote the book?", "John Smith"),
    ("The river flows into the sea.", "where does the river flow?", "the sea"),
]


@pytest.fixture(scope="module")
def qa_model(tmp_path_factory):
    """(vocab.txt dir, config, params) of a tiny random QuestionAnswerer with the
    answerability head, over the words of FACTS; initialised once for the whole module."""
    out = tmp_path_factory.mktemp("qa_model")
    words = {w.strip(".?").lower() for fact in FACTS for text in fact for w in text.split()}
    tokenizer = write_vocab(out / "vocab.txt", words)
    cfg = model.ElectraConfig(vocab_size=tokenizer.vocab_size, **helpers.TINY)
    params = model.init_params(heads.QuestionAnswerer(cfg, answerable_head=True), jax.random.PRNGKey(1))
    return str(out), cfg, jax.device_get(params)


@pytest.fixture(scope="module")
def qa_init(qa_model):
    """A transformers ElectraForQuestionAnswering dir with its vocab.txt: fine-tuning starts
    from its encoder with a fresh head."""
    out, cfg, params = qa_model
    hf.save_pretrained(cfg, span_params(params), out, kind="question_answering")
    return out


def span_params(params):
    return {"electra": params["electra"], "qa_outputs": params["qa_outputs"]}


def random_batch(vocab_size, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, size=(4, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    types[1, 7:] = 0
    return ids, mask, types


def test_span_head_matches_transformers(qa_model, tmp_path):
    import torch
    import transformers

    _, cfg, params = qa_model
    hf.save_pretrained(cfg, span_params(params), str(tmp_path), kind="question_answering")
    ids, mask, types = random_batch(cfg.vocab_size, 0)
    ours = jax.jit(heads.QuestionAnswerer(cfg).apply)({"params": span_params(params)}, ids, mask, types)
    torch_model = transformers.ElectraForQuestionAnswering.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        theirs = torch_model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
        )
    np.testing.assert_allclose(ours["start_logits"], theirs.start_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(ours["end_logits"], theirs.end_logits.numpy(), atol=1e-4)
    assert np.abs(ours["start_logits"]).max() > 0.1  # not trivially zero
    _, loaded = hf.load_pretrained(str(tmp_path))
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, span_params(params))


def test_loss_matches_numpy_and_answerability_head_reads_start_probabilities(qa_model):
    _, cfg, params = qa_model
    apply = jax.jit(heads.QuestionAnswerer(cfg, answerable_head=True).apply)
    ids, mask, types = random_batch(cfg.vocab_size, 1)
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": types,
        "start_positions": np.array([0, 6, 6, 9]),
        "end_positions": np.array([0, 6, 8, 11]),
        "is_impossible": np.array([1.0, 0.0, 0.0, 0.0], np.float32),
    }
    outputs = jax.device_get(apply({"params": params}, ids, mask, types))
    assert outputs["no_answer_logits"].shape == (4,)

    def cross_entropy(logits, labels):  # over [CLS] + the real segment-1 tokens only
        allowed = (mask * types).astype(bool)
        allowed[:, 0] = True
        logits = np.where(allowed, logits.astype(np.float64), -np.inf)
        top = logits.max(1)
        log_z = np.log(np.exp(logits - top[:, None]).sum(1)) + top
        return log_z - logits[np.arange(len(labels)), labels]

    no_answer = outputs["no_answer_logits"].astype(np.float64)
    bce = np.logaddexp(0, no_answer) - batch["is_impossible"] * no_answer
    expected = np.mean(
        (
            cross_entropy(outputs["start_logits"], batch["start_positions"])
            + cross_entropy(outputs["end_logits"], batch["end_positions"])
        )
        / 2
        + 0.5 * bce
    )
    assert float(squad.squad_loss(outputs, batch, 0.5)) == pytest.approx(expected, rel=1e-5)
    # the head reads the start distribution: scaling only qa_outputs moves its logit
    shifted = {
        **params,
        "qa_outputs": {"kernel": params["qa_outputs"]["kernel"] * 3, "bias": params["qa_outputs"]["bias"]},
    }
    moved = apply({"params": shifted}, ids, mask, types)["no_answer_logits"]
    assert not np.allclose(moved, outputs["no_answer_logits"])


# ---------------------------------------------------------------------------- end to end


def fixture_dataset(num_articles, with_unanswerable):
    context = " ".join(fact for fact, _, _ in FACTS)
    articles = []
    for a in range(num_articles):
        qas = [
            qa_entry(f"a{a}q{q}", question, context, [answer], False if with_unanswerable else None)
            for q, (_, question, answer) in enumerate(FACTS)
        ]
        if with_unanswerable:
            qas.append(qa_entry(f"a{a}none", "who wrote the river?", context, [], True))
        articles.append({"title": f"article {a}", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "2.0" if with_unanswerable else "1.1", "data": articles}


def tiny_run_config(init, data_file, version, **overrides):
    config = squad_configs.get_config()
    config.update(
        dict(
            init=init,
            version=version,
            train_file=data_file,
            eval_file=data_file,
            train_articles="0:3",
            eval_articles="3:",
            max_seq_length=24,
            max_query_length=10,
            doc_stride=6,
            batch_size=8,
            eval_batch_size=8,
            num_epochs=2.0,
            optim=dict(learning_rate=3e-3, layerwise_lr_decay=1.0),
            log_every=2,
        )
    )
    config.update(overrides)
    return config


# 1.1 differs from 2.0 only by the head (compiled separately) and the metrics (tested above)
@pytest.mark.parametrize("version", [pytest.param("1.1", marks=pytest.mark.slow), "2.0"])
def test_end_to_end_tiny_run_writes_official_files(qa_init, tmp_path, version):
    data_file = str(tmp_path / f"fixture-v{version}.json")
    with open(data_file, "w", encoding="utf-8") as f:
        json.dump(fixture_dataset(5, with_unanswerable=version == "2.0"), f)
    workdir = str(tmp_path / "work")
    results = squad.run(tiny_run_config(qa_init, data_file, version), workdir)
    run_dir = os.path.join(workdir, "seed_0")
    with open(os.path.join(run_dir, "predictions.json"), encoding="utf-8") as f:
        predictions = json.load(f)
    held_out = fixture_dataset(5, with_unanswerable=version == "2.0")["data"][3:]
    assert set(predictions) == {qa["id"] for a in held_out for p in a["paragraphs"] for qa in p["qas"]}
    # the training examples are the windows: more of them than questions
    assert results["hyperparameters"]["num_train_examples"] > results["hyperparameters"]["num_train_questions"]
    steps = [entry["step"] for entry in results["runs"][0]["log"]]
    assert steps[-1] == results["hyperparameters"]["num_train_steps"]
    dev = results["runs"][0]["dev"]
    if version == "1.1":  # results.json reports what the official script says of the file
        assert dev == pytest.approx(squad_official.OfficialV1.evaluate(held_out, predictions))
    else:
        with open(os.path.join(run_dir, "null_odds.json"), encoding="utf-8") as f:
            null_odds = json.load(f)
        # best spans + null odds + threshold (what we report) == the thresholded file alone
        official = squad_official.OfficialV2.main(held_out, predictions)
        assert {k: dev[k] for k in official} == pytest.approx(official)
        assert set(null_odds) == set(predictions) and results["na_threshold"] == -2.75
    assert hf.detect_kind(json.load(open(os.path.join(run_dir, "config.json"))), []) == "question_answering"


@pytest.mark.integration
@pytest.mark.slow
def test_cli_learns_the_fixture(qa_init, tmp_path):
    """The CLI, long enough to memorise the fixture's four facts: EM 100 on held-out articles
    asking the same questions of the same context."""
    import subprocess
    import sys

    data_file = str(tmp_path / "fixture.json")
    with open(data_file, "w", encoding="utf-8") as f:
        json.dump(fixture_dataset(6, with_unanswerable=False), f)
    workdir = str(tmp_path / "work")
    command = [
        sys.executable,
        "-m",
        "electra_jax.finetune",
        "--config=configs/squad.py",
        f"--config.init={qa_init}",
        f"--config.train_file={data_file}",
        f"--config.eval_file={data_file}",
        "--config.train_articles=0:4",
        "--config.eval_articles=4:",
        "--config.max_seq_length=24",
        "--config.max_query_length=10",
        "--config.doc_stride=6",
        "--config.batch_size=8",
        "--config.num_epochs=40",
        "--config.optim.learning_rate=3e-3",
        "--config.optim.layerwise_lr_decay=1.0",
        f"--workdir={workdir}",
    ]
    subprocess.run(command, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        assert json.load(f)["median"] == {"exact_match": 100.0, "f1": 100.0}


# ---------------------------------------------------------------------------- bad input


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        f.write(value if isinstance(value, str) else json.dumps(value))
    return str(path)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="is empty"):
        squad_data.read_json(write_json(tmp_path / "empty.json", ""))
    with pytest.raises(ValueError, match="not valid JSON"):
        squad_data.read_json(write_json(tmp_path / "broken.json", '{"data": ['))
    with pytest.raises(ValueError, match="no top-level 'data' list"):
        squad_data.read_json(write_json(tmp_path / "list.json", [1, 2]))
    with pytest.raises(ValueError, match="no articles"):
        squad_data.read_json(write_json(tmp_path / "none.json", {"data": []}))
    with pytest.raises(FileNotFoundError, match="missing.json not found"):
        squad_data.read_json(str(tmp_path / "missing.json"))


def test_bad_entries_are_clear_errors():
    context = "Paris is the capital of France."

    def dataset_with(qa):
        return {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [qa]}]}]}

    good = {"id": "q1", "question": "which city?", "answers": [{"text": "Paris", "answer_start": 0}]}
    assert squad_data.parse_examples(dataset_with(good), "f")[0].answers == (("Paris", 0),)
    for field in ("id", "question", "answers"):
        qa = {k: v for k, v in good.items() if k != field}
        with pytest.raises(ValueError, match=f"missing field '{field}'"):
            squad_data.parse_examples(dataset_with(qa), "f")
    with pytest.raises(ValueError, match=r"id=q1 answer 0: missing field 'answer_start'"):
        squad_data.parse_examples(dataset_with({**good, "answers": [{"text": "Paris"}]}), "f")
    with pytest.raises(
        ValueError,
        match=r"answer_start=9 points at 'the c' but the answer text is 'Paris'"
        r".*first occurs at 0",
    ):
        squad_data.parse_examples(dataset_with({**good, "answers": [{"text": "Paris", "answer_start": 9}]}), "f")
    with pytest.raises(ValueError, match="does not occur in the context"):
        squad_data.parse_examples(dataset_with({**good, "answers": [{"text": "Rome", "answer_start": 0}]}), "f")
    with pytest.raises(ValueError, match="no answers and not is_impossible"):
        squad_data.parse_examples(dataset_with({**good, "answers": []}), "f")
    with pytest.raises(ValueError, match="is_impossible=true but it has answers"):
        squad_data.parse_examples(dataset_with({**good, "is_impossible": True}), "f")
    with pytest.raises(ValueError, match="duplicate question id"):
        two = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [good, good]}]}]}
        squad_data.parse_examples(two, "f")
    with pytest.raises(ValueError, match="paragraph 0: missing field 'context'"):
        squad_data.parse_examples({"data": [{"paragraphs": [{"qas": [good]}]}]}, "f")
    with pytest.raises(ValueError, match="field 'answer_start' is str"):
        squad_data.parse_examples(dataset_with({**good, "answers": [{"text": "Paris", "answer_start": "0"}]}), "f")


def test_bad_configs_are_clear_errors(qa_init, tmp_path):
    data_file = write_json(tmp_path / "v2.json", fixture_dataset(5, with_unanswerable=True))
    with pytest.raises(ValueError, match="unanswerable questions .* but version=1.1; set --config.version=2.0"):
        squad.load_examples(tiny_run_config(qa_init, data_file, "1.1"), "train")
    with pytest.raises(ValueError, match="also training questions"):
        squad.run(tiny_run_config(qa_init, data_file, "2.0", eval_articles="2:"), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="article slice 'x'"):
        squad.load_examples(tiny_run_config(qa_init, data_file, "2.0", train_articles="x"), "train")
    with pytest.raises(ValueError, match="selects none of the 5 articles"):
        squad.load_examples(tiny_run_config(qa_init, data_file, "2.0", train_articles="7:"), "train")
    with pytest.raises(ValueError, match="SQuAD version '3.0'"):
        squad.load_examples(tiny_run_config(qa_init, data_file, "3.0"), "train")
    with pytest.raises(ValueError, match="max_answer_length=0; it must be at least 1"):
        squad.run(tiny_run_config(qa_init, data_file, "2.0", max_answer_length=0), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="leaves no room for context"):
        squad.run(tiny_run_config(qa_init, data_file, "2.0", max_seq_length=8), str(tmp_path / "w"))


def test_tfds_rows_regroup_into_the_official_structure():
    context_a, context_b = "Paris is in France.", "Rome is in Italy."
    rows = [
        {
            "id": b"q1",
            "title": b"Cities",
            "context": context_a.encode(),
            "question": b"where is Paris?",
            "answers": {"text": np.array([b"France", b"in France"]), "answer_start": np.array([12, 9])},
            "is_impossible": False,
        },
        {
            "id": b"q2",
            "title": b"Cities",
            "context": context_a.encode(),
            "question": b"what is in France?",
            "answers": {"text": np.array([], object), "answer_start": np.array([], np.int32)},
            "is_impossible": True,
        },
        {
            "id": b"q3",
            "title": b"Cities",
            "context": context_b.encode(),
            "question": b"where is Rome?",
            "answers": {"text": np.array([b"Italy"]), "answer_start": np.array([11])},
            "is_impossible": False,
        },
    ]
    dataset = squad_data.dataset_from_rows(rows, "2.0")
    assert [len(p["qas"]) for p in dataset["data"][0]["paragraphs"]] == [2, 1]
    examples = squad_data.parse_examples(dataset, "tfds")
    assert [(e.qid, e.answers, e.is_impossible) for e in examples] == [
        ("q1", (("France", 12), ("in France", 9)), False),
        ("q2", (), True),
        ("q3", (("Italy", 11),), False),
    ]
