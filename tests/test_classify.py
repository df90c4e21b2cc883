"""Classification on user CSV / TSV / JSONL: truncation policies, metrics vs sklearn, the
loop end to end with export and label map, and clear errors on bad files."""

import csv
import json
import os

import helpers
import numpy as np
import pytest
import sklearn.metrics

from configs import classify as classify_configs
from data_pipelines import labelled_text
from data_pipelines import tokenizer as tokenizer_lib
from electra_jax.finetune import classify, common

WORDS = "great film loved it awful plot boring dull fun acting superb bad the a was".split()
REVIEWS = [
    ("great film loved it", "pos"),
    ("awful plot boring", "neg"),
    ("fun acting superb", "pos"),
    ("dull bad the plot was", "neg"),
]


@pytest.fixture(scope="module")
def hf_init(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hf_init"))
    helpers.write_hf_model(out, WORDS, seed=2)
    return out


def write_csv(path, header, rows, delimiter=","):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


# ---------------------------------------------------------------------------- truncation


def test_truncation_policies_keep_head_tail_or_both(hf_init):
    ids = list(range(10, 30))
    assert common.cut(ids, 8, "head") == ids[:8]
    assert common.cut(ids, 8, "tail") == ids[-8:]
    assert common.cut(ids, 8, "head_tail") == ids[:2] + ids[-6:]
    assert common.cut(ids, 30, "tail") == ids
    tok = tokenizer_lib.load_tokenizer(hf_init)
    text = "great film loved it awful plot boring dull"  # 8 tokens
    vocab = open(os.path.join(hf_init, "vocab.txt")).read().split()

    def words(features):
        return [vocab[i] for i in features["input_ids"] if i]

    assert words(common.encode_text_pair(tok, text, None, 6, "tail")[0]) == [
        "[CLS]",
        "awful",
        "plot",
        "boring",
        "dull",
        "[SEP]",
    ]
    assert words(common.encode_text_pair(tok, text, None, 6, "head")[0]) == [
        "[CLS]",
        "great",
        "film",
        "loved",
        "it",
        "[SEP]",
    ]
    assert words(common.encode_text_pair(tok, text, None, 6, "head_tail")[0]) == [
        "[CLS]",
        "great",
        "plot",
        "boring",
        "dull",
        "[SEP]",
    ]
    # a pair: the longer text loses tokens first (longest-first), here from its start ("tail")
    pair, num_cut, num_tokens = common.encode_text_pair(tok, text, "fun acting", 9, "tail")
    assert (num_cut, num_tokens) == (4, 10)
    assert words(pair) == ["[CLS]", "awful", "plot", "boring", "dull", "[SEP]", "fun", "acting", "[SEP]"]
    assert pair["token_type_ids"].tolist() == [0] * 6 + [1] * 3
    with pytest.raises(ValueError, match="truncation='middle'"):
        config = classify_configs.get_config()
        config.truncation = "middle"
        classify.encode_examples(tok, [], {}, config, "f")


def test_cut_examples_are_reported_naming_the_file(hf_init, caplog):
    tok = tokenizer_lib.load_tokenizer(hf_init)
    pairs = [("great film loved it awful plot boring dull", None), ("great film", None)]
    features = common.encode_text_pairs(tok, pairs, 6, "head", "reviews.csv")
    assert features["attention_mask"].sum(-1).tolist() == [6, 4]
    assert "reviews.csv: 1 of 2 examples are longer than max_seq_length=6; 4 of their 10 tokens" in caplog.text


def test_macro_f1_and_accuracy_equal_sklearn():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(4, size=200), rng.integers(4, size=200)
    predictions[predictions == 3] = 0  # class 3 is never predicted
    metrics = classify.classification_metrics(labels, predictions, 5)  # class 4 never appears
    assert metrics["accuracy"] == pytest.approx(100 * sklearn.metrics.accuracy_score(labels, predictions))
    assert metrics["macro_f1"] == pytest.approx(
        100 * sklearn.metrics.f1_score(labels, predictions, average="macro", labels=range(5), zero_division=0)
    )


# ---------------------------------------------------------------------------- end to end


def run_config(tmp_path, init, **overrides):
    config = classify_configs.get_config()
    config.update(
        dict(
            init=init,
            batch_size=8,
            eval_batch_size=8,
            max_seq_length=12,
            num_epochs=20.0,
            optim=dict(learning_rate=3e-3, layerwise_lr_decay=0.8, warmup_fraction=0.0),
            dropout=0.0,
            log_every=5,
            train_file=str(tmp_path / "train.csv"),
            dev_file=str(tmp_path / "dev.jsonl"),
        )
    )
    write_csv(
        config.train_file,
        ["id", "review", "sentiment"],
        [(i, text, label) for i, (text, label) in enumerate(REVIEWS * 3)],
    )
    write_jsonl(config.dev_file, [{"review": t, "sentiment": label} for t, label in REVIEWS])
    config.update(overrides)
    return config


def test_classify_end_to_end_csv_train_jsonl_dev_tsv_test(tmp_path, hf_init):
    import torch
    import transformers

    test_file = str(tmp_path / "test.tsv")
    write_csv(test_file, ["review"], [(t,) for t, _ in REVIEWS], delimiter="\t")  # unlabelled
    config = run_config(
        tmp_path, hf_init, text_column="review", label_column="sentiment", truncation="head_tail", test_file=test_file
    )
    out = tmp_path / "out"
    results = classify.run(config, str(out))
    assert results["labels"] == ["neg", "pos"]
    assert json.load(open(out / "label_map.json")) == {"neg": 0, "pos": 1}
    log = results["runs"][0]["log"]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert results["median"]["accuracy"] == 100.0  # memorised
    predictions = [json.loads(line) for line in open(out / "test_predictions.jsonl")]
    assert [p["line"] for p in predictions] == [2, 3, 4, 5]
    assert [p["label"] for p in predictions] == [label for _, label in REVIEWS]
    # the export predicts the same in transformers and names its labels
    torch_model = transformers.ElectraForSequenceClassification.from_pretrained(str(out / "seed_0")).eval()
    assert torch_model.config.id2label == {0: "neg", 1: "pos"}
    tok = tokenizer_lib.load_tokenizer(str(out / "seed_0"))
    features = classify.encode_examples(
        tok, labelled_text.read_examples(config.dev_file, config), {"neg": 0, "pos": 1}, config, config.dev_file
    )
    with torch.no_grad():
        logits = torch_model(
            **{
                k: torch.tensor(features[k], dtype=torch.long)
                for k in ("input_ids", "attention_mask", "token_type_ids")
            }
        ).logits.numpy()
    assert logits.argmax(-1).tolist() == features["labels"].tolist()


def test_a_preempted_fine_tuning_run_resumes_to_the_unbroken_result(tmp_path, hf_init, monkeypatch, caplog):
    # SIGTERM during seed 1: seed 0's finished run is kept, seed 1 resumes from the checkpoint
    # the signal saved, and the results, logs and exported weights equal an unbroken run's.
    import signal

    from electra_jax import trainer

    config = run_config(
        tmp_path, hf_init, text_column="review", label_column="sentiment", dropout=0.1, seeds=2, checkpoint_every=4
    )
    config.eval_every = 10
    unbroken = classify.run(config, str(tmp_path / "unbroken"))
    assert unbroken["hyperparameters"]["num_train_steps"] == 30
    batches, drawn = common.train_batches, []

    def signalled_during_seed_1_step_14(*args, **kwargs):
        for batch in batches(*args, **kwargs):
            drawn.append(1)
            if len(drawn) == 30 + 14:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    monkeypatch.setattr(common, "train_batches", signalled_during_seed_1_step_14)
    out = tmp_path / "out"
    with pytest.raises(trainer.Preempted, match=r"classify seed 1 stopped at step 14 of 30 .* run the same command"):
        classify.run(config, str(out))
    monkeypatch.undo()
    with caplog.at_level("INFO"):
        resumed = classify.run(config, str(out))
    assert "classify seed 0: resumed from its checkpoint at step 30 of 30" in caplog.text
    assert "classify seed 1: resumed from its checkpoint at step 14 of 30" in caplog.text
    assert resumed["runs"] == unbroken["runs"]  # every logged loss and dev metric, both seeds
    for seed in (0, 1):  # metrics.jsonl as the unbroken run's: no row twice (seed 0 was only re-scored)
        rows = [(r["step"], r["split"]) for r in map(json.loads, open(out / f"seed_{seed}" / "metrics.jsonl"))]
        assert rows == [
            (r["step"], r["split"])
            for r in map(json.loads, open(tmp_path / "unbroken" / f"seed_{seed}" / "metrics.jsonl"))
        ]
    for seed in (0, 1):
        a, b = (helpers.read_safetensors(tmp_path / run / f"seed_{seed}") for run in ("unbroken", "out"))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- bad inputs


def test_labels_spelled_differently_are_one_class_and_a_bom_is_no_column(tmp_path, caplog):
    config = classify_configs.get_config()
    config.text_column, config.label_column = "text", "label"
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("text,label\nfine,1\nbad,1 \nmeh, 0\n", encoding="utf-8-sig")  # with a BOM
    jsonl_path = tmp_path / "train.jsonl"
    write_jsonl(
        jsonl_path,
        [
            {"text": "fine", "label": 1},
            {"text": "ok", "label": 1.0},
            {"text": "so-so", "label": 0.5},
            {"text": "bad", "label": "neg "},
        ],
    )
    with caplog.at_level("WARNING"):
        from_csv = labelled_text.read_examples(str(csv_path), config)
        from_jsonl = labelled_text.read_examples(str(jsonl_path), config)
    assert [e.label for e in from_csv] == ["1", "1", "0"]
    assert [e.label for e in from_jsonl] == ["1", "1", "0.5", "neg"]
    merged = [r.getMessage() for r in caplog.records if "read as one class" in r.getMessage()]
    assert merged == [
        f"{csv_path}: labels ['1', '1 '] are read as one class '1'",
        f"{jsonl_path}: labels ['1', '1.0'] are read as one class '1'",
    ]
    config.labels = "neg, 0.5,1.0"
    assert classify.label_list(config, from_jsonl) == ["neg", "0.5", "1"]
    # A repeated label made a head with an orphan class id.
    config.labels = "0,1,0"
    with pytest.raises(ValueError, match=r"--config.labels='0,1,0' names 0 more than once"):
        classify.label_list(config, from_jsonl)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"text": "fine", "label": [1]}, r"'label' is the JSON \[1\]; it must be a string, number or bool"),
        ({"text": "fine", "label": {"v": 1}}, r"'label' is the JSON \{\"v\": 1\}"),
        ({"text": ["fine", "day"], "label": 1}, r"'text' is the JSON \[\"fine\", \"day\"\]; it must be a string"),
    ],
)
def test_labels_and_texts_of_the_wrong_json_type_are_refused(tmp_path, row, message):
    # A list or object label became a class; a list text was trained on as its JSON.
    config = classify_configs.get_config()
    write_jsonl(tmp_path / "train.jsonl", [{"text": "ok", "label": 0}, row])
    with pytest.raises(ValueError, match=r"train\.jsonl:2: " + message):
        labelled_text.read_examples(str(tmp_path / "train.jsonl"), config)


def test_bad_files_name_file_line_and_fix(tmp_path, hf_init):
    config = run_config(tmp_path, hf_init)  # default columns text / label: not in these files
    with pytest.raises(
        ValueError,
        match=r"train\.csv:2: the row has no 'text' value .*"
        r"--config\.text_column",
    ):
        classify.run(config, str(tmp_path / "out"))
    config = run_config(tmp_path, hf_init, text_column="review", label_column="sentiment")
    write_jsonl(config.dev_file, [{"review": "fun", "sentiment": "pos"}, {"sentiment": "neg"}])
    with pytest.raises(ValueError, match=r"dev\.jsonl:2: the row has no 'review' value"):
        classify.run(config, str(tmp_path / "out"))
    write_jsonl(config.dev_file, [{"review": "fun", "sentiment": "neutral"}])
    with pytest.raises(ValueError, match=r"dev\.jsonl:1: label 'neutral' is not one of \['neg', 'pos'\]"):
        classify.run(config, str(tmp_path / "out"))
    open(config.dev_file, "w").close()
    with pytest.raises(ValueError, match=r"dev\.jsonl holds no examples"):
        classify.run(config, str(tmp_path / "out"))
    with open(config.train_file, "a") as f:
        f.write("99,only two fields\n")
    with pytest.raises(ValueError, match=r"train\.csv:14: 2 fields but the header names 3"):
        classify.run(config, str(tmp_path / "out"))
    config.train_file = str(tmp_path / "train.xlsx")
    with pytest.raises(ValueError, match=r"unknown extension '\.xlsx'"):
        classify.run(config, str(tmp_path / "out"))
    config.dev_file = ""
    with pytest.raises(
        ValueError, match=r"config\.dev_file is empty; set --config\.dev_file=<\.csv/\.tsv/\.jsonl file>"
    ):
        classify.run(config, str(tmp_path / "out"))


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_a_field_over_128_kib_is_read_whole(tmp_path, suffix):
    # Python's csv module refuses fields over 128 KiB by default, with no file or line.
    long_review = "a long review. " * 20_000  # 300 KB
    path = tmp_path / f"train{suffix}"
    delimiter = "\t" if suffix == ".tsv" else ","
    path.write_text(f"text{delimiter}label\nshort{delimiter}0\n{long_review}{delimiter}1\n")
    examples = labelled_text.read_examples(str(path), classify_configs.get_config())
    assert [(len(e.text), e.label) for e in examples] == [(5, "0"), (len(long_review), "1")]


def test_a_malformed_csv_record_names_file_and_line(tmp_path):
    import io

    from data_pipelines import files

    records = files.csv_records(io.StringIO('a,b\n1,2\n"x",y\n'), "train.csv", strict=True)
    assert next(records) == (1, ["a", "b"]) and next(records) == (2, ["1", "2"])
    records = files.csv_records(io.StringIO('a,b\n"x"y,1\n'), "train.csv", strict=True)
    next(records)
    with pytest.raises(ValueError, match=r"train\.csv:2: not a valid CSV/TSV record \("):
        next(records)


def test_a_label_set_of_one_class_is_refused_naming_the_file(tmp_path):
    # A 1-class head trained and reported accuracy 100.
    config = classify_configs.get_config()
    config.train_file = str(tmp_path / "train.csv")
    write_csv(config.train_file, ["text", "label"], [("fine", "pos"), ("great", "pos"), ("bad", "neg")])
    train = labelled_text.read_examples(config.train_file, config)
    assert classify.label_list(config, train) == ["neg", "pos"]
    config.max_train_examples = 2
    with pytest.raises(ValueError, match=r"train\.csv \(its first 2 rows\) has 1 class\(es\) \['pos'\]; a classifier"):
        classify.label_list(config, train[:2])
    config.labels = "pos"
    with pytest.raises(ValueError, match=r"--config\.labels='pos' has 1 class\(es\) \['pos'\]"):
        classify.label_list(config, train)


@pytest.mark.parametrize(
    "row, column",
    [
        (("", "", "pos"), "text"),
        (("   ", "", "pos"), "text"),
        (("fine", "", " "), "label"),
        (("fine", "", "pos"), "pair"),
    ],
    ids=["empty_text", "blank_text", "blank_label", "empty_pair"],
)
def test_an_empty_text_or_label_names_file_line_and_fix(tmp_path, row, column):
    # An empty text trained on nothing; an empty label became a class ''.
    config = classify_configs.get_config()
    config.text_pair_column = "pair" if column == "pair" else ""
    path = str(tmp_path / "train.csv")
    write_csv(path, ["text", "pair", "label"], [("good", "ok", "pos"), row])
    with pytest.raises(
        ValueError, match=rf"train\.csv:3: the '{column}' value is empty or only whitespace; fill it in"
    ):
        labelled_text.read_examples(path, config)
    # An unlabelled test file may leave its label cells empty.
    write_csv(path, ["text", "pair", "label"], [("good", "ok", ""), ("bad", "no", "neg")])
    assert [e.label for e in labelled_text.read_examples(path, config, labelled=False)] == [None, "neg"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_file_that_is_not_utf8_names_file_line_and_the_fix(tmp_path, suffix):
    path = tmp_path / f"train{suffix}"
    rows = [("a fine film", "pos")] * 400 + [("un café", "neg")]  # past the decoder's first read-ahead
    if suffix == ".csv":
        lines = ["text,label", *(f"{text},{label}" for text, label in rows)]
    else:
        lines = [json.dumps({"text": text, "label": label}, ensure_ascii=False) for text, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="cp1252")
    line = len(lines)
    with pytest.raises(ValueError, match=rf"train\{suffix}:{line}: byte \d+ is not UTF-8; re-encode the file as UTF-8"):
        labelled_text.read_examples(str(path), classify_configs.get_config())


def test_a_dev_file_that_is_the_training_file_is_refused(tmp_path):
    # Its 'dev' scores were training scores, and picked the median seed.
    config = run_config(tmp_path, init=str(tmp_path / "never_loaded"))
    os.symlink(config.train_file, tmp_path / "same.csv")
    config.dev_file = str(tmp_path / "same.csv")
    with pytest.raises(ValueError, match=r"dev_file=.*same\.csv is the training file .*; hold out a dev file"):
        classify.run(config, str(tmp_path / "out"))
