"""NER / token classification: entity F1 vs seqeval, the HF ElectraForTokenClassification
layout, first-piece label alignment, the loop end to end on a CoNLL fixture, bad inputs."""

import os

import helpers
import jax
import numpy as np
import pytest

from configs import tagging as tagging_configs
from data_pipelines import conll
from data_pipelines import tokenizer as tokenizer_lib
from electra_jax import heads, hf, model
from electra_jax.finetune import tagging

WORDS = "eu rejects german call to boycott british lamb peter blackburn in brussels on monday".split()
PIECES = ["play", "##ing", "##s"]  # "playing" -> play ##ing, "plays" -> play ##s
SENTENCES = [
    [
        ("eu", "B-ORG"),
        ("rejects", "O"),
        ("german", "B-MISC"),
        ("call", "O"),
        ("to", "O"),
        ("boycott", "O"),
        ("british", "B-MISC"),
        ("lamb", "O"),
    ],
    [("peter", "B-PER"), ("blackburn", "I-PER")],
    [("brussels", "B-LOC"), ("on", "O"), ("monday", "O"), ("playing", "O")],
]


def write_vocab(path):
    return helpers.write_vocab(path, WORDS, PIECES)


def write_conll(path, sentences, docstart=True):
    with open(path, "w", encoding="utf-8") as f:
        if docstart:
            f.write("-DOCSTART- -X- -X- O\n\n")
        for sentence in sentences:
            f.writelines(f"{word} NNP B-NP {tag}\n" for word, tag in sentence)
            f.write("\n")


@pytest.fixture(scope="module")
def hf_init(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hf_init"))
    helpers.write_hf_model(out, WORDS, seed=1, extra=PIECES)
    return out


# ---------------------------------------------------------------------------- metrics


def random_tags(rng, length, scheme_tags):
    return [scheme_tags[i] for i in rng.integers(len(scheme_tags), size=length)]


def test_entity_f1_equals_seqeval_on_random_predictions():
    from seqeval import metrics as seqeval_metrics

    rng = np.random.default_rng(0)
    # IOB2 tags plus ill-formed sequences (I- after O, type switches inside an entity),
    # which conlleval and seqeval's default mode read the same particular way.
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "I-MISC"]
    gold = [random_tags(rng, int(rng.integers(1, 15)), tags) for _ in range(300)]
    predicted = [random_tags(rng, len(s), tags) for s in gold]
    ours = tagging.entity_metrics(gold, predicted)
    assert ours["f1"] == pytest.approx(100 * seqeval_metrics.f1_score(gold, predicted))
    assert ours["precision"] == pytest.approx(100 * seqeval_metrics.precision_score(gold, predicted))
    assert ours["recall"] == pytest.approx(100 * seqeval_metrics.recall_score(gold, predicted))
    assert ours["accuracy"] == pytest.approx(100 * seqeval_metrics.accuracy_score(gold, predicted))
    report = seqeval_metrics.classification_report(gold, predicted, output_dict=True)
    for entity_type, scores in ours["per_type"].items():
        assert scores["f1"] == pytest.approx(100 * report[entity_type]["f1-score"]), entity_type
    # IOBES too
    iobes = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "S-LOC", "B-LOC", "E-LOC"]
    gold = [random_tags(rng, 12, iobes) for _ in range(200)]
    predicted = [random_tags(rng, 12, iobes) for _ in range(200)]
    assert tagging.entity_metrics(gold, predicted)["f1"] == pytest.approx(
        100 * seqeval_metrics.f1_score(gold, predicted)
    )


def test_entity_f1_hand_case():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    # gold: PER(0-1), LOC(3), ORG; predicted: PER(0-1), ORG(3), ORG -> 2 of 3 right each way
    m = tagging.entity_metrics(gold, predicted)
    assert (m["precision"], m["recall"]) == (pytest.approx(200 / 3), pytest.approx(200 / 3))
    assert m["per_type"]["LOC"]["recall"] == 0.0 and m["per_type"]["PER"]["f1"] == 100.0
    assert tagging.entities(["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]) == {("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4)}


# ---------------------------------------------------------------------------- head parity


def test_token_classifier_predicts_the_same_in_transformers(tmp_path):
    import torch
    import transformers

    cfg = model.ElectraConfig(vocab_size=40, **helpers.TINY)
    net = heads.TokenClassifier(cfg, 5)
    params = model.init_params(net, jax.random.PRNGKey(0))
    tagging.export_tagger(_pretrained(cfg, str(tmp_path / "src")), params, list("OABCD"), str(tmp_path / "m"))
    ids = np.random.default_rng(0).integers(5, 40, size=(2, 10)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    ours = np.asarray(net.apply({"params": params}, ids, mask, np.zeros_like(ids)))
    torch_model = transformers.ElectraForTokenClassification.from_pretrained(str(tmp_path / "m")).eval()
    assert torch_model.config.id2label[3] == "C"
    with torch.no_grad():
        theirs = torch_model(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long)
        ).logits.numpy()
    assert ours.shape == (2, 10, 5)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    _, loaded = hf.load_pretrained(str(tmp_path / "m"))
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, jax.device_get(params))


def _pretrained(cfg, vocab_dir):
    from electra_jax import loading

    os.makedirs(vocab_dir, exist_ok=True)
    path = os.path.join(vocab_dir, "vocab.txt")
    with open(path, "w") as f:
        f.write("\n".join(helpers.SPECIALS + [f"w{i}" for i in range(cfg.vocab_size - 5)]) + "\n")
    return loading.Network(cfg, {}, tokenizer_lib.load_tokenizer(path))


# ---------------------------------------------------------------------------- alignment


def test_labels_sit_on_first_pieces_and_long_sentences_are_chunked(tmp_path):
    write_vocab(str(tmp_path / "vocab.txt"))
    tok = tokenizer_lib.load_tokenizer(str(tmp_path / "vocab.txt"))
    sentence = conll.Sentence(("peter", "playing", "plays", "monday"), ("B-PER", "O", "B-MISC", "O"), (1, 2, 3, 4))
    label_ids = {"O": 0, "B-PER": 1, "B-MISC": 2}
    features = tagging.encode_sentences(tok, [sentence], label_ids, 12, "f")
    vocab = open(tmp_path / "vocab.txt").read().split()
    assert [vocab[i] for i in features["input_ids"][0] if i] == [
        "[CLS]",
        "peter",
        "play",
        "##ing",
        "play",
        "##s",
        "monday",
        "[SEP]",
    ]
    assert features["label_mask"][0].tolist()[:8] == [0, 1, 1, 0, 1, 0, 1, 0]
    assert features["labels"][0].tolist()[:8] == [0, 1, 0, 0, 2, 0, 0, 0]
    # max_seq_length 4 leaves 2 pieces per row: [peter] [play ##ing] [play ##s] [monday]
    chunked = tagging.encode_sentences(tok, [sentence], label_ids, 4, "f")
    assert chunked["sentence"].tolist() == [0, 0, 0, 0]
    assert chunked["label_mask"].sum() == 4
    with pytest.raises(ValueError, match="a word of 2 sub-word pieces cannot fit"):
        tagging.encode_sentences(tok, [sentence], label_ids, 3, "f")
    logits = np.zeros((4, 4, 3))
    logits[..., 2] = 1.0  # predicts B-MISC everywhere
    logits[1, 1, 0] = 5.0  # ... except at "playing"'s first piece
    assert tagging.word_predictions(logits, chunked, 1) == [[2, 0, 2, 2]]


# ---------------------------------------------------------------------------- end to end


def run_config(tmp_path, init, **overrides):
    config = tagging_configs.get_config()
    for name, sentences in (("train", SENTENCES * 4), ("dev", SENTENCES), ("test", SENTENCES[:2])):
        write_conll(str(tmp_path / f"{name}.txt"), sentences)
    config.update(
        dict(
            init=init,
            train_file=str(tmp_path / "train.txt"),
            dev_file=str(tmp_path / "dev.txt"),
            test_file=str(tmp_path / "test.txt"),
            batch_size=8,
            eval_batch_size=8,
            max_seq_length=16,
            num_epochs=32.0,
            optim=dict(learning_rate=1e-2, layerwise_lr_decay=0.8, warmup_fraction=0.0),
            dropout=0.0,
            log_every=8,
        )
    )
    config.update(overrides)
    return config


def test_ner_end_to_end_learns_exports_and_predicts(tmp_path, hf_init):
    import torch
    import transformers

    config = run_config(tmp_path, hf_init)
    results = tagging.run(config, str(tmp_path / "out"))
    log = results["runs"][0]["log"]
    assert log[-1]["loss"] < 0.3 * log[0]["loss"]
    assert results["median"]["f1"] > 80  # the fixture is memorisable
    assert results["labels"][0] == "O"
    assert set(results["labels"]) == {"O", "B-ORG", "B-MISC", "B-PER", "I-PER", "B-LOC"}
    lines = open(tmp_path / "out" / "test_predictions.txt").read().split("\n")
    assert lines[0].split()[:2] == ["eu", "B-ORG"] and lines[8] == ""
    # the export tags like our loop in transformers
    export = str(tmp_path / "out" / "seed_0")
    tok = tokenizer_lib.load_tokenizer(export)
    dev = tagging.load_file(config, config.dev_file, tok, {t: i for i, t in enumerate(results["labels"])})
    torch_model = transformers.ElectraForTokenClassification.from_pretrained(export).eval()
    with torch.no_grad():
        logits = torch_model(
            **{
                k: torch.tensor(dev.features[k], dtype=torch.long)
                for k in ("input_ids", "attention_mask", "token_type_ids")
            }
        ).logits.numpy()
    predicted = [[results["labels"][i] for i in s] for s in tagging.word_predictions(logits, dev.features, 3)]
    assert tagging.entity_metrics([list(s.tags) for s in dev.sentences], predicted)["f1"] == pytest.approx(
        results["runs"][0]["dev"]["f1"]
    )


# ---------------------------------------------------------------------------- bad inputs


def test_a_training_file_without_entities_is_refused_naming_it(tmp_path):
    # Only "O": a 1-tag model trained, reporting F1 0 and accuracy 100.
    config = tagging_configs.get_config()
    config.train_file = str(tmp_path / "train.txt")
    write_conll(config.train_file, [[(word, "O") for word, _ in sentence] for sentence in SENTENCES])
    train = conll.read_conll(config.train_file, config.label_column)
    with pytest.raises(ValueError, match=r"train\.txt has the tags \['O'\] and no entity tag"):
        tagging.label_list(config, train)
    config.labels = "O"
    with pytest.raises(ValueError, match=r"--config\.labels='O' has the tags \['O'\] and no entity tag"):
        tagging.label_list(config, train)


def test_a_dev_file_that_is_the_training_file_is_refused(tmp_path):
    config = run_config(tmp_path, init=str(tmp_path / "never_loaded"))
    config.dev_file = os.path.join(os.path.dirname(config.train_file), ".", "train.txt")
    with pytest.raises(ValueError, match=r"train\.txt is the training file .*; hold out a dev file"):
        tagging.run(config, str(tmp_path / "out"))


def test_bad_conll_files_name_file_line_and_fix(tmp_path, hf_init):
    path = str(tmp_path / "bad.txt")
    with open(path, "w") as f:
        f.write("eu B-ORG\nrejects\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: expected `word \.\.\. tag`.*found 1"):
        conll.read_conll(path, -1)
    # In 4-column CoNLL a line missing its tag gave its chunk column as the tag.
    open(path, "w").write("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nGerman JJ B-NP\n")
    with pytest.raises(ValueError, match=r"bad\.txt:4: 3 columns \('German JJ B-NP'\) where line 1 has 4"):
        conll.read_conll(path, -1)
    open(path, "w").write("\n-DOCSTART- O\n\n")
    with pytest.raises(ValueError, match=r"bad\.txt holds no sentences"):
        conll.read_conll(path, -1)
    with pytest.raises(ValueError, match="'PERSON' is neither 'O' nor"):
        tagging.check_tag("PERSON")
    config = run_config(tmp_path, hf_init)
    write_conll(config.dev_file, [[("eu", "B-ORG"), ("monday", "B-DATE")]], docstart=False)
    with pytest.raises(ValueError, match=r"dev\.txt:2: tag 'B-DATE' is not one of the labels"):
        tagging.run(config, str(tmp_path / "out"))
    config = run_config(tmp_path, hf_init, train_file="")
    with pytest.raises(ValueError, match="config.train_file is empty"):
        tagging.run(config, str(tmp_path / "out"))
