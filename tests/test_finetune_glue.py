"""GLUE fine-tuning: HF export parity, layer-wise learning rates, the loop on fixture TSVs,
TSV vs TFDS inputs, evaluation-only mode, and refusals of bad inputs."""

import csv
import json
import os

import helpers
import jax
import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from configs import glue as glue_configs
from configs import pretrain as recipes
from data_pipelines import glue as glue_data
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.pretraining import FEATURE_KEYS
from electra_jax import export, heads, hf, loading, model
from electra_jax.finetune import common, glue

WORDS = (
    "the cat sat on a mat dog ran far away it rained was dry he left early a man is playing "
    "flute plane taking off air large said hi to me"
).split()

# (text_a, text_b) pairs the fixture tasks draw their rows from
PAIRS = [
    ("the cat sat on a mat", "a cat sat"),
    ("the dog ran far away", "it rained"),
    ("he left early", "he left"),
    ("a man is playing a flute", "a man is playing"),
    ("the plane is taking off", "an air plane is taking off"),
    ("it was dry", "it rained"),
]


def write_vocab(path, extra_tokens=0):
    return helpers.write_vocab(path, WORDS, [f"unused{i}" for i in range(extra_tokens)])


def write_tsv(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("".join("\t".join(row) + "\n" for row in rows))


def mrpc_rows(n, seed):
    rng = np.random.default_rng(seed)
    header = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
    return [header] + [(str(rng.integers(2)), str(i), str(i + 1000), *PAIRS[i % len(PAIRS)]) for i in range(n)]


def stsb_rows(n, seed, with_score=True):
    rng = np.random.default_rng(seed)
    header = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2") + (
        ("score",) if with_score else ()
    )
    return [header] + [
        (str(i), "main-captions", "MSRvid", "2012test", "0001", "none", "none", *PAIRS[i % len(PAIRS)])
        + ((f"{rng.uniform(0, 5):.3f}",) if with_score else ())
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("glue"))
    write_tsv(f"{root}/MRPC/train.tsv", mrpc_rows(24, 0))
    write_tsv(f"{root}/MRPC/dev.tsv", mrpc_rows(10, 1))
    write_tsv(
        f"{root}/MRPC/test.tsv",
        [("index", "#1 ID", "#2 ID", "#1 String", "#2 String")]
        + [(str(i), str(i), str(i + 1000), *PAIRS[i]) for i in range(6)],
    )
    write_tsv(f"{root}/STS-B/train.tsv", stsb_rows(24, 3))
    write_tsv(f"{root}/STS-B/dev.tsv", stsb_rows(10, 4))
    write_tsv(f"{root}/STS-B/test.tsv", stsb_rows(5, 5, with_score=False))
    return root


def tiny_config(vocab_size, **overrides):
    return model.ElectraConfig(vocab_size=vocab_size, **{**helpers.TINY, **overrides})


@pytest.fixture(scope="module")
def hf_init(tmp_path_factory):
    """A transformers ElectraForPreTraining dir (random tiny weights) with its vocab.txt."""
    out = str(tmp_path_factory.mktemp("hf_init"))
    helpers.write_hf_model(out, WORDS, seed=1)
    return out


def small_run_config(glue_dir, init, **overrides):
    config = glue_configs.get_config()
    config.update(
        dict(
            init=init,
            data_dir=glue_dir,
            source="tsv",
            batch_size=8,
            eval_batch_size=8,
            max_seq_length=16,
            num_epochs=2.0,
            optim=dict(learning_rate=1e-3, layerwise_lr_decay=0.8),
            log_every=2,
        )
    )
    config.update(overrides)
    return config


def test_task_all_with_missing_tasks_is_refused_before_training(tmp_path, glue_dir):
    # It trained the tasks found and printed their mean as the "GLUE score".
    config = small_run_config(glue_dir, str(tmp_path / "never_loaded"), task="all")
    with pytest.raises(FileNotFoundError) as refused:
        glue.run(config, str(tmp_path / "ft"))
    message = str(refused.value)
    assert message.startswith("task=all but 7 of 9 tasks have no data: cola (")
    assert f"{os.path.join(glue_dir, 'CoLA', 'train.tsv')}, {os.path.join(glue_dir, 'CoLA', 'dev.tsv')})" in message
    assert "mnli (" in message and "dev_mismatched.tsv" in message and "mrpc (" not in message
    assert message.endswith("one per run: --config.task=<one of ['mrpc', 'stsb']>")
    assert not (tmp_path / "ft").exists()


# ---------------------------------------------------------------------------- export parity


@pytest.mark.parametrize("num_labels", [3, 1])
def test_export_predicts_the_same_in_transformers(tmp_path, num_labels):
    import torch
    import transformers

    cfg = tiny_config(40)
    net = heads.SequenceClassifier(cfg, num_labels)
    params = model.init_params(net, jax.random.PRNGKey(0))
    labels = ["a", "b", "c"][:num_labels]
    hf.save_pretrained(
        cfg,
        params,
        str(tmp_path),
        kind="sequence_classification",
        extra_config={
            "id2label": {str(i): n for i, n in enumerate(labels)},
            "problem_type": "regression" if num_labels == 1 else "single_label_classification",
        },
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 40, size=(3, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0  # a padded row
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    ours = np.asarray(net.apply({"params": params}, ids, mask, types, deterministic=True))
    torch_model = transformers.ElectraForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    assert torch_model.config.num_labels == num_labels
    with torch.no_grad():
        theirs = torch_model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
        ).logits.numpy()
    assert ours.shape == (3, num_labels)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # and the directory loads back into the same tree
    _, loaded = hf.load_pretrained(str(tmp_path))
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, jax.device_get(params))


# ---------------------------------------------------------------------------- layer-wise LR


def hand_depth(path: str, num_layers: int) -> int:
    """ELECTRA's _get_layer_lrs, written out: embeddings 0, layer i -> i + 1, head n + 2."""
    if "/embeddings" in path or "embeddings_project" in path:
        return 0
    for i in range(num_layers):
        if f"/layer_{i}/" in path:
            return i + 1
    assert path.startswith("classifier/"), path
    return num_layers + 2


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"warmup_fraction": -0.5},
            r"warmup_fraction=-0.5; it must be in \[0.0, 1.0\] \(--config.optim.warmup_fraction\)",
        ),
        ({"learning_rate": -1.0}, r"^optim.learning_rate=-1.0; it must be >= 0.0 \(--config.optim.learning_rate\)"),
    ],
)
def test_fine_tuning_numbers_out_of_range_are_refused(change, message):
    # Fine-tuning at learning_rate=-1 or warmup_fraction=-0.5 exited 0 with results.
    config = glue_configs.get_config()
    config.optim.update(change)
    hyper = {"learning_rate": config.optim.learning_rate or 1e-4, "layerwise_lr_decay": 0.8}
    with pytest.raises(ValueError, match=message):
        common.make_optimizer(config, hyper, num_layers=2, total_steps=10)


def test_each_layer_gets_the_learning_rate_of_the_formula():
    cfg = tiny_config(40, embedding_size=24, num_layers=3)
    params = model.init_params(heads.SequenceClassifier(cfg, 2), jax.random.PRNGKey(0))
    config = glue_configs.get_config()
    # bias-corrected Adam, whose first step is exactly g / (|g| + eps)
    config.optim.update(dict(warmup_fraction=0.0, weight_decay=0.0, clip_norm=0.0, bias_correction=True))
    lr, decay = 1e-3, 0.8
    tx, _ = common.make_optimizer(
        config, {"learning_rate": lr, "layerwise_lr_decay": decay}, cfg.num_layers, total_steps=10
    )
    grads = jax.tree_util.tree_map(
        lambda p: np.random.default_rng(p.size).normal(size=p.shape).astype(np.float32), params
    )
    updates, _ = tx.update(grads, tx.init(params), params)
    flat_updates = hf._flatten(jax.device_get(updates))
    flat_grads = hf._flatten(grads)
    depths = set()
    for path, update in flat_updates.items():
        depth = hand_depth(path, cfg.num_layers)
        depths.add(depth)
        g = flat_grads[path]
        # Adam's first bias-corrected step is g / (|g| + eps); schedule(0) = lr (no warmup).
        expected = -lr * decay ** (cfg.num_layers + 2 - depth) * g / (np.abs(g) + config.optim.eps)
        np.testing.assert_allclose(update, expected, rtol=1e-5, atol=1e-12, err_msg=path)
    assert depths == {0, 1, 2, 3, 5}  # embeddings, three layers, the head


def test_paper_hyperparameters_per_size_and_task():
    config = glue_configs.get_config()
    small = model.ElectraConfig(vocab_size=30522, hidden_size=256, num_layers=12, num_heads=4)
    large = model.ElectraConfig(
        vocab_size=30522, embedding_size=1024, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096
    )
    assert common.resolved_hyperparameters(config, small, glue.num_epochs("mrpc")) == {
        "learning_rate": 3e-4,
        "layerwise_lr_decay": 0.8,
        "num_epochs": 3.0,
    }
    assert common.resolved_hyperparameters(config, large, glue.num_epochs("rte")) == {
        "learning_rate": 5e-5,
        "layerwise_lr_decay": 0.9,
        "num_epochs": 10.0,
    }
    assert common.resolved_hyperparameters(config, small, glue.num_epochs("stsb"))["num_epochs"] == 10.0
    with pytest.raises(ValueError, match="learning_rate"):
        common.resolved_hyperparameters(config, tiny_config(40), glue.num_epochs("mrpc"))


# ---------------------------------------------------------------------------- the loop


def test_mrpc_three_seeds_median_exports_and_submission(tmp_path, glue_dir, hf_init):
    workdir = str(tmp_path / "out")
    results = glue.run(small_run_config(glue_dir, hf_init, seeds=3), workdir)
    mrpc = results["tasks"]["mrpc"]
    assert [run["seed"] for run in mrpc["runs"]] == [0, 1, 2]
    # 24 pairs, both orders (the default for MRPC), 2 epochs, batch 8
    assert mrpc["hyperparameters"]["num_train_steps"] == 24 * 2 * 2 // 8
    for name in ("f1", "accuracy"):
        per_seed = [run["dev"]["mrpc"][name] for run in mrpc["runs"]]
        assert mrpc["median"]["mrpc"][name] == pytest.approx(np.median(per_seed))
    assert results["glue_score"] == pytest.approx(np.mean(list(mrpc["median"]["mrpc"].values())))
    on_disk = json.load(open(os.path.join(workdir, "results.json")))
    assert on_disk["tasks"]["mrpc"]["median"] == mrpc["median"]
    assert "| mrpc | f1 |" in open(os.path.join(workdir, "results.md")).read()

    # An exported run predicts in transformers what our loop scored (sklearn metrics).
    dev = glue_data.load_glue("mrpc", "dev", data_dir=glue_dir, source="tsv")
    tok = tokenizer_lib.load_tokenizer(os.path.join(workdir, "mrpc", "seed_1"))
    features = glue.encode_examples(tok, dev, 16, regression=False)
    logits = torch_logits(os.path.join(workdir, "mrpc", "seed_1"), features)
    labels, predictions = [e.label for e in dev], logits.argmax(-1)
    seed_1 = mrpc["runs"][1]["dev"]["mrpc"]
    assert seed_1["accuracy"] == pytest.approx(100 * sklearn.metrics.accuracy_score(labels, predictions))
    assert seed_1["f1"] == pytest.approx(100 * sklearn.metrics.f1_score(labels, predictions, zero_division=0))

    # The leaderboard file: header, every test index once, label names.
    with open(os.path.join(workdir, "submission", "MRPC.tsv"), newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["index", "prediction"]
    assert [int(r[0]) for r in rows[1:]] == list(range(6))
    assert {r[1] for r in rows[1:]} <= {"0", "1"}

    # Evaluation-only mode restores the exported median-seed model and reproduces its dev score.
    seed = mrpc["median_seed"]
    eval_config = small_run_config(
        glue_dir, os.path.join(workdir, "mrpc", f"seed_{seed}"), eval_only=True, eval_split="dev"
    )
    evaluated = glue.evaluate_finetuned(eval_config, str(tmp_path / "eval"))
    assert evaluated["metrics"] == pytest.approx(mrpc["runs"][seed]["dev"]["mrpc"])
    test_eval = glue.evaluate_finetuned(
        small_run_config(glue_dir, eval_config.init, eval_only=True, eval_split="test"), str(tmp_path / "eval")
    )
    with open(test_eval["submission_file"]) as f:
        assert f.read() == open(os.path.join(workdir, "submission", "MRPC.tsv")).read()


def torch_logits(model_dir, features):
    import torch
    import transformers

    torch_model = transformers.ElectraForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return torch_model(**{k: torch.tensor(features[k], dtype=torch.long) for k in FEATURE_KEYS}).logits.numpy()


def test_stsb_regression_learns_and_scores_as_scipy(tmp_path, glue_dir, hf_init):
    config = small_run_config(glue_dir, hf_init, task="stsb", num_epochs=6.0)
    stsb = glue.run(config, str(tmp_path))["tasks"]["stsb"]
    losses = [entry["loss"] for entry in stsb["runs"][0]["log"]]
    assert losses[-1] < 0.5 * losses[0]  # the regression head fits the training scores
    # Dev metrics equal scipy's on the exported model's predictions, which transformers
    # reproduces. (Duplicate dev rows make near-tied scores, so scipy ranks our own floats.)
    run_dir = os.path.join(tmp_path, "stsb", "seed_0")
    # The run's metrics.jsonl holds its log: every logged training loss, then the dev metrics.
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        written = [json.loads(line) for line in f]
    assert [(e["step"], e["loss"]) for e in written if e["split"] == "train"] == [
        (entry["step"], pytest.approx(entry["loss"])) for entry in stsb["runs"][0]["log"]
    ]
    (dev_line,) = [e for e in written if e["split"] == "dev"]
    assert dev_line["step"] == stsb["runs"][0]["log"][-1]["step"]
    assert dev_line["stsb/spearman"] == pytest.approx(stsb["runs"][0]["dev"]["stsb"]["spearman"])
    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    restored = loading.load_network(run_dir, network="encoder")
    dev = glue.load_split(config, "stsb", "dev", restored.tokenizer)
    net = heads.SequenceClassifier(restored.model_config, 1)
    params = {"electra": restored.encoder_params, "classifier": restored.classifier_params}
    predict = common.make_predict_fn(net, common.make_placement(config, net))
    scores = common.predict_outputs(predict, params, dev, config.eval_batch_size)[:, 0]
    np.testing.assert_allclose(torch_logits(run_dir, dev)[:, 0], scores, atol=1e-5)
    assert stsb["median"]["stsb"]["pearson"] == pytest.approx(
        100 * scipy.stats.pearsonr(dev["labels"], scores).statistic, abs=1e-3
    )
    assert stsb["median"]["stsb"]["spearman"] == pytest.approx(
        100 * scipy.stats.spearmanr(dev["labels"], scores).statistic, abs=1e-3
    )
    with open(os.path.join(tmp_path, "submission", "STS-B.tsv"), newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    submitted = np.array([float(r[1]) for r in rows])
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4"]
    assert np.all((submitted >= 0) & (submitted <= 5))


# ---------------------------------------------------------------------------- data sources


class FakeTfdsBuilder:
    """Stands in for a prepared tfds glue/mrpc builder (TFDS feature names, int labels)."""

    def __init__(self, examples):
        self.examples = examples

    def is_prepared(self):
        return True

    def as_dataset(self, split):
        import tensorflow as tf

        rows = self.examples[split.replace("validation", "dev")][::-1]  # TFDS may reorder
        return tf.data.Dataset.from_tensor_slices(
            {
                "idx": np.array([e.idx for e in rows]),
                "sentence1": np.array([e.text_a for e in rows]),
                "sentence2": np.array([e.text_b for e in rows]),
                "label": np.array([e.label for e in rows]),
            }
        )


def test_tsv_and_tfds_sources_give_the_same_features(glue_dir, hf_init, monkeypatch):
    tok = tokenizer_lib.load_tokenizer(hf_init)
    config = small_run_config(glue_dir, hf_init)
    from_tsv = {split: glue.load_split(config, "mrpc", split, tok) for split in ("train", "dev")}
    examples = {
        split: glue_data.load_glue("mrpc", split, data_dir=glue_dir, source="tsv") for split in ("train", "dev")
    }
    monkeypatch.setattr(glue_data, "_tfds_builder", lambda task, data_dir: FakeTfdsBuilder(examples))
    config.source = "tfds"
    for split in ("train", "dev"):
        from_tfds = glue.load_split(config, "mrpc", split, tok)
        for key in (*FEATURE_KEYS, "labels", "idx"):
            np.testing.assert_array_equal(from_tfds[key], from_tsv[split][key], err_msg=key)
    # and the features are [CLS] a [SEP] b [SEP] with the WordPiece ids of the vocab
    first = examples["train"][0]
    expected = [tok.cls_id, *tok.encode(first.text_a), tok.sep_id, *tok.encode(first.text_b), tok.sep_id]
    assert from_tsv["train"]["input_ids"][0][: len(expected)].tolist() == expected


# ---------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "bad_row, message",
    [
        (("1", "7", "8", "only four columns"), "expected 5 tab-separated columns, found 4"),
        (("yes", "7", "8", "a", "b"), "label 'yes' is not one of"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, hf_init, bad_row, message):
    root = str(tmp_path / "glue")
    rows = mrpc_rows(10, 0)
    rows.insert(4, bad_row)  # data line 5 of the file
    write_tsv(f"{root}/MRPC/train.tsv", rows)
    write_tsv(f"{root}/MRPC/dev.tsv", mrpc_rows(4, 1))
    with pytest.raises(ValueError, match=rf"MRPC/train\.tsv:5: {message}"):
        glue.run(small_run_config(root, hf_init), str(tmp_path / "out"))


def test_init_whose_vocab_differs_from_the_tokenizer_is_refused(tmp_path, hf_init):
    bigger_vocab = str(tmp_path / "vocab.txt")
    size = write_vocab(bigger_vocab, extra_tokens=3)
    with pytest.raises(ValueError, match=rf"vocab_size={size - 3} .* has {size} tokens"):
        loading.load_network(hf_init, tokenizer_path=bigger_vocab, network="encoder")


def test_data_dir_is_required(hf_init, tmp_path):
    config = small_run_config("", hf_init)
    with pytest.raises(ValueError, match="no data_dir was given"):
        glue.run(config, str(tmp_path))


# ---------------------------------------------------------------------------- pretraining workdir


def _pretrain_workdir(root, objective_kind):
    """A pretraining workdir as train.py leaves it: config.json (with data.tokenizer) and an
    orbax checkpoint of a tiny ElectraPretrainingModel at step 3."""
    from electra_jax import checkpoints, pretrain

    vocab_path = str(root / "vocab.txt")
    vocab_size = write_vocab(vocab_path)
    config = recipes.pretraining_config("tiny")
    config.objective.kind = objective_kind
    config.model.update(
        dict(
            vocab_size=vocab_size,
            hidden_size=32,
            embedding_size=16,
            intermediate_size=64,
            num_heads=2,
            max_position_embeddings=64,
        )
    )
    config.train.update(dict(max_seq_length=16, batch_size=8, num_steps=10))
    config.objective.max_predictions_per_seq = 3
    config.data.tokenizer = vocab_path
    workdir = str(root / "workdir")
    checkpoints.check_run_config(workdir, config.to_json_best_effort(sort_keys=True), fresh=False)
    state = pretrain.init_train_state(pretrain.make_pretrainer(config))
    ckpt = checkpoints.Checkpointer(workdir, save_every=1, keep=2)
    ckpt.save(3, state, force=True)
    ckpt.close()
    return workdir, jax.device_get(state.params), vocab_size


@pytest.fixture(scope="module")
def pretrain_workdir(tmp_path_factory):
    return _pretrain_workdir(tmp_path_factory.mktemp("pretrain"), "electra")


@pytest.fixture(scope="module")
def mlm_workdir(tmp_path_factory):
    return _pretrain_workdir(tmp_path_factory.mktemp("pretrain_mlm"), "mlm")


def test_mlm_only_run_exports_a_masked_lm_and_fine_tunes(tmp_path, glue_dir, mlm_workdir):
    """The MLM-only baseline goes through the same export and fine-tuning paths as ELECTRA:
    its one network is an ElectraForMaskedLM (same logits in transformers), and fine-tuning
    takes its encoder, from the workdir or from the exported directory."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    workdir, params, _ = mlm_workdir
    out = str(tmp_path / "hf")
    export.export_checkpoint(workdir, out)
    assert sorted(os.listdir(out)) == ["generator"]  # no discriminator to export
    encoder = {"embeddings": params["embeddings"], **params["generator"]["electra"]}
    pretrained = loading.load_network(workdir, network="encoder")
    jax.tree_util.tree_map(np.testing.assert_array_equal, pretrained.encoder_params, encoder)
    assert pretrained.model_config.hidden_size == 32 and pretrained.head_params is None
    from_export = loading.load_network(os.path.join(out, "generator"), network="encoder")
    jax.tree_util.tree_map(np.testing.assert_allclose, from_export.encoder_params, encoder)

    ids = np.array([[2, 7, 9, 11, 3, 0]], np.int64)
    mask = (ids > 0).astype(np.int64)
    ours = model.Generator(pretrained.model_config).apply(
        {"params": model.split_pretraining_params(params)["generator"]}, ids, mask, np.zeros_like(ids)
    )
    hf_net = transformers.ElectraForMaskedLM.from_pretrained(os.path.join(out, "generator")).eval()
    with torch.no_grad():
        theirs = hf_net(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
    np.testing.assert_allclose(theirs.numpy(), np.asarray(ours), atol=1e-4)

    results = glue.run(small_run_config(glue_dir, workdir, task="mrpc", save_models=False), str(tmp_path / "ft"))
    assert np.isfinite(results["tasks"]["mrpc"]["median"]["mrpc"]["f1"])
    with pytest.raises(ValueError, match="MLM-only run .* has no discriminator"):
        loading.load_network(workdir, network="discriminator")


def test_init_from_a_pretraining_workdir_takes_the_discriminator(tmp_path, pretrain_workdir):
    workdir, params, vocab_size = pretrain_workdir
    pretrained = loading.load_network(workdir, network="encoder")
    jax.tree_util.tree_map(
        np.testing.assert_array_equal,
        pretrained.encoder_params,
        {"embeddings": params["embeddings"], **params["discriminator"]["electra"]},
    )
    assert pretrained.model_config.hidden_size == 32  # the discriminator, not the generator (8)
    assert pretrained.tokenizer.vocab_size == vocab_size
    write_vocab(str(tmp_path / "other.txt"), extra_tokens=2)
    with pytest.raises(ValueError, match=f"vocab_size={vocab_size} .* has {vocab_size + 2} tokens"):
        loading.load_network(workdir, tokenizer_path=str(tmp_path / "other.txt"), network="encoder")
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 7"):
        loading.load_network(workdir, init_step=7, network="encoder")


@pytest.mark.integration
@pytest.mark.slow
def test_cli_fine_tunes_from_a_pretraining_workdir(tmp_path, glue_dir, pretrain_workdir):
    import subprocess
    import sys

    out = str(tmp_path / "out")
    command = [
        sys.executable,
        "-m",
        "electra_jax.finetune",
        "--config=configs/glue.py",
        "--config.task=mrpc",
        f"--config.init={pretrain_workdir[0]}",
        "--config.init_step=3",
        f"--config.data_dir={glue_dir}",
        "--config.source=tsv",
        "--config.batch_size=8",
        "--config.max_seq_length=16",
        "--config.num_epochs=1",
        "--config.optim.learning_rate=1e-3",
        "--config.optim.layerwise_lr_decay=0.8",
        "--config.save_models=False",
        f"--workdir={out}",
    ]
    finished = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "| mrpc | f1 |" in finished.stdout
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["tasks"]["mrpc"]["hyperparameters"]["num_train_steps"] == 24 * 2 // 8  # both orders
    assert os.path.exists(os.path.join(out, "submission", "MRPC.tsv"))


def test_from_scratch_baseline_has_the_same_head_and_shapes_but_random_encoder(hf_init):
    pretrained = loading.load_network(hf_init, network="encoder")
    net = heads.SequenceClassifier(pretrained.model_config, 2)
    rng = jax.random.PRNGKey(7)
    from_init = common.init_task_params(net, pretrained.encoder_params, rng, 16)
    from_scratch = common.init_task_params(net, None, rng, 16)
    jax.tree_util.tree_map(np.testing.assert_array_equal, from_init["classifier"], from_scratch["classifier"])
    assert from_init["electra"] is pretrained.encoder_params
    word = ("embeddings", "word_embeddings", "embedding")
    init_table = from_init["electra"][word[0]][word[1]][word[2]]
    scratch_table = from_scratch["electra"][word[0]][word[1]][word[2]]
    assert scratch_table.shape == init_table.shape and not np.allclose(scratch_table, init_table)


# ---------------------------------------------------------------------------- the original's recipe


def test_double_unordered_appends_every_training_pair_swapped(glue_dir, hf_init, monkeypatch):
    tokenizer = tokenizer_lib.load_tokenizer(hf_init)
    config = small_run_config(glue_dir, hf_init, max_train_examples=5, double_unordered=False)
    once = glue.load_split(config, "mrpc", "train", tokenizer)
    config.double_unordered = True
    twice = glue.load_split(config, "mrpc", "train", tokenizer)
    dev = glue.load_split(config, "mrpc", "dev", tokenizer)  # dev and test are never doubled
    assert len(twice["labels"]) == 2 * len(once["labels"]) == 10
    assert len(dev["labels"]) == len(
        glue.load_split(small_run_config(glue_dir, hf_init), "mrpc", "dev", tokenizer)["labels"]
    )
    np.testing.assert_array_equal(twice["labels"], np.tile(once["labels"], 2))
    examples = glue_data.load_glue("mrpc", "train", data_dir=glue_dir, source="tsv")[:5]
    swapped = [tokenizer.encode_pair(e.text_b, e.text_a, 16) for e in examples]
    np.testing.assert_array_equal(twice["input_ids"][5:], common.stack_features(swapped, 16)["input_ids"])
    config.double_unordered = None  # the per-task default
    assert glue.double_unordered(config, "mrpc") == ("mrpc" in glue.DOUBLE_UNORDERED_TASKS)
    single = [glue_data.GlueExample("train-0", 0, "it rained", None, 1)]
    monkeypatch.setattr(glue_data, "load_glue", lambda *args, **kwargs: single)
    config.double_unordered = True
    with pytest.raises(ValueError, match="sst2 has one sentence per example"):
        glue.load_split(config, "sst2", "train", tokenizer)


def test_the_defaults_are_the_original_recipe():
    """Raw-moment Adam for every task, both sentence orders for MRPC and STS-B only."""
    config = glue_configs.get_config()
    assert config.optim.bias_correction is False
    assert [task for task in glue_data.TASKS if glue.double_unordered(config, task)] == ["mrpc", "stsb"]


@pytest.mark.parametrize("bias_correction", [True, False])
def test_bias_correction_reaches_the_fine_tuning_optimizer(bias_correction):
    """The knob picks the original's Adam (raw moments) or optax's: the first update differs
    by sqrt(1 - b2) / (1 - b1) = 0.316 exactly, with clipping and weight decay off."""
    config = glue_configs.get_config()
    config.optim.update(dict(bias_correction=bias_correction, weight_decay=0.0, clip_norm=0.0, warmup_fraction=0.0))
    hyper = {"learning_rate": 1e-3, "layerwise_lr_decay": 1.0, "num_epochs": 1.0}
    tx, _ = common.make_optimizer(config, hyper, num_layers=1, total_steps=10)
    params = {"w": np.ones(3, np.float32)}
    grads = {"w": np.array([0.5, -2.0, 1e-3], np.float32)}
    updates, _ = tx.update(grads, tx.init(params), params)
    m, v = 0.1 * grads["w"], 0.001 * grads["w"] ** 2  # first moments, no correction
    if bias_correction:
        m, v = m / 0.1, v / 0.001
    np.testing.assert_allclose(updates["w"], -1e-3 * m / (np.sqrt(v) + config.optim.eps), rtol=1e-5)


def test_original_head_is_dropout_and_one_glorot_dense_on_the_raw_cls_vector(hf_init):
    """classifier_head=original: logits = hidden[:, 0] @ W + b (no pooler dense or tanh), W
    Glorot-uniform (bound sqrt(6 / (fan_in + fan_out))), b zero, dropout in training only."""
    pretrained = loading.load_network(hf_init, network="encoder")
    cfg = pretrained.model_config
    net = heads.SequenceClassifier(cfg, 3, head="original")
    params = common.init_task_params(net, pretrained.encoder_params, jax.random.PRNGKey(0), 16)
    assert set(params["classifier"]) == {"out_proj"}
    kernel, bias = params["classifier"]["out_proj"]["kernel"], params["classifier"]["out_proj"]["bias"]
    np.testing.assert_array_equal(bias, np.zeros(3))
    ids = np.array([[2, 5, 6, 7, 3, 0], [2, 8, 9, 3, 10, 3]], np.int32)
    mask = (ids != 0).astype(np.int32)
    types = np.array([[0] * 6, [0, 0, 0, 0, 1, 1]], np.int32)
    hidden = model.ElectraModel(cfg).apply({"params": params["electra"]}, ids, mask, types)
    logits = net.apply({"params": params}, ids, mask, types)
    np.testing.assert_allclose(logits, np.asarray(hidden[:, 0]) @ kernel + bias, rtol=1e-5, atol=1e-6)
    train_logits = net.apply({"params": params}, ids, mask, types, False, rngs={"dropout": jax.random.PRNGKey(1)})
    assert not np.allclose(train_logits, logits)
    # the init, on a head wide enough to measure: uniform in +-bound, std bound / sqrt(3)
    wide = heads.OriginalClassificationHead(model.ElectraConfig(vocab_size=8, hidden_size=256), 64)
    hidden = np.zeros((1, 1, 256), np.float32)
    wide_kernel = model.nn.meta.unbox(wide.init(jax.random.PRNGKey(2), hidden, True))["params"]["out_proj"]["kernel"]
    bound = np.sqrt(6 / (256 + 64))
    assert np.abs(wide_kernel).max() <= bound
    np.testing.assert_allclose(np.std(wide_kernel), bound / np.sqrt(3), rtol=0.03)


def test_original_head_fine_tunes_and_refuses_an_export(tmp_path, glue_dir, hf_init):
    config = small_run_config(glue_dir, hf_init, task="stsb", num_epochs=6.0, classifier_head="original")
    with pytest.raises(ValueError, match="has no transformers class.*save_models=False"):
        glue.run(config, str(tmp_path / "refused"))
    config.save_models = False
    stsb = glue.run(config, str(tmp_path / "original"))["tasks"]["stsb"]
    losses = [entry["loss"] for entry in stsb["runs"][0]["log"]]
    assert losses[-1] < 0.5 * losses[0]
    config.classifier_head = "pooler"
    with pytest.raises(ValueError, match=r"classifier_head='pooler'; choose one of \['hf', 'original'\]"):
        glue.run(config, str(tmp_path / "bad"))


# ---------------------------------------------------------------------------- MNLI: AX and the MNLI-init trick

NLI_LABELS = ("entailment", "neutral", "contradiction")


@pytest.fixture(scope="module")
def nli_dir(tmp_path_factory):
    """MNLI (GLUE's 12 / 16 / 10 columns), RTE and the diagnostic set, from PAIRS."""
    root = str(tmp_path_factory.mktemp("glue_nli"))
    rng = np.random.default_rng(0)

    def mnli_rows(n, num_columns, labelled=True):
        header = tuple(f"column{i}" for i in range(num_columns))
        rows = []
        for i in range(n):
            a, b = PAIRS[i % len(PAIRS)]
            label = (NLI_LABELS[rng.integers(3)],) if labelled else ()
            rows.append((str(i), *["x"] * 7, a, b, *["-"] * (num_columns - 10 - len(label)), *label))
        return [header] + rows

    write_tsv(f"{root}/MNLI/train.tsv", mnli_rows(24, 12))
    for suffix in ("matched", "mismatched"):
        write_tsv(f"{root}/MNLI/dev_{suffix}.tsv", mnli_rows(6, 16))
        write_tsv(f"{root}/MNLI/test_{suffix}.tsv", mnli_rows(4, 10, labelled=False))
    write_tsv(
        f"{root}/diagnostic/diagnostic.tsv",
        [("index", "sentence1", "sentence2")] + [(str(i), *PAIRS[i % len(PAIRS)]) for i in range(7)],
    )
    nli = ("entailment", "not_entailment")
    rte = [(str(i), *PAIRS[i % len(PAIRS)], nli[i % 2]) for i in range(16)]
    write_tsv(f"{root}/RTE/train.tsv", [("index", "sentence1", "sentence2", "label")] + rte)
    write_tsv(f"{root}/RTE/dev.tsv", [("index", "sentence1", "sentence2", "label")] + rte[:6])
    return root


def encoder_of(directory):
    return loading.load_network(directory, network="encoder").encoder_params


def test_mnli_writes_ax_and_rte_starts_from_the_mnli_model(tmp_path, nli_dir, hf_init):
    """MNLI's median run predicts the diagnostic set into AX.tsv (as eval_only on "ax" does
    from its export); RTE with init=that export fine-tunes its encoder under a new head."""
    mnli = glue.run(small_run_config(nli_dir, hf_init, task="mnli"), str(tmp_path / "mnli"))["tasks"]["mnli"]
    assert sorted(os.path.basename(f) for f in mnli["submission_files"]) == ["AX.tsv", "MNLI-m.tsv", "MNLI-mm.tsv"]
    with open(tmp_path / "mnli" / "submission" / "AX.tsv", newline="") as f:
        ax_rows = list(csv.reader(f, delimiter="\t"))
    assert ax_rows[0] == ["index", "prediction"] and [r[0] for r in ax_rows[1:]] == [str(i) for i in range(7)]
    assert {r[1] for r in ax_rows[1:]} <= set(NLI_LABELS)
    mnli_model = str(tmp_path / "mnli" / "mnli" / f"seed_{mnli['median_seed']}")
    evaluated = glue.evaluate_finetuned(
        small_run_config(nli_dir, mnli_model, task="mnli", eval_only=True, eval_split="ax"), str(tmp_path / "eval")
    )
    with open(evaluated["submission_file"], newline="") as f:
        assert list(csv.reader(f, delimiter="\t")) == ax_rows

    # lr ~0: the RTE export keeps the MNLI encoder, which fine-tuning on MNLI moved from hf_init
    rte_config = small_run_config(nli_dir, mnli_model, task="rte", optim=dict(learning_rate=1e-30), predict_test=False)
    rte = glue.run(rte_config, str(tmp_path / "rte"))["tasks"]["rte"]
    assert rte["hyperparameters"]["num_train_examples"] == 16
    rte_model = str(tmp_path / "rte" / "rte" / "seed_0")
    jax.tree_util.tree_map(np.testing.assert_array_equal, encoder_of(rte_model), encoder_of(mnli_model))
    moved = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), encoder_of(mnli_model), encoder_of(hf_init))
    assert any(jax.tree_util.tree_leaves(moved))
    assert loading.load_network(rte_model, network="encoder").classifier_params["out_proj"]["kernel"].shape[-1] == 2


def test_seeds_split_over_processes_merge_into_the_single_process_results(tmp_path, glue_dir, hf_init):
    """benchmarks/glue_rows --split: a seed's run does not depend on the process it ran in."""
    whole = glue.run(small_run_config(glue_dir, hf_init, seeds=3), str(tmp_path / "whole"))
    parts = [
        glue.run(small_run_config(glue_dir, hf_init, seed=2, seeds=1), str(tmp_path / "b")),  # order does not matter
        glue.run(small_run_config(glue_dir, hf_init, seed=0, seeds=2), str(tmp_path / "a")),
    ]
    merged = glue.merge_seed_splits(parts)
    for key in ("median", "runs", "median_seed"):
        assert merged["tasks"]["mrpc"][key] == whole["tasks"]["mrpc"][key]
    assert merged["config"] == whole["config"] and merged["glue_score"] == whole["glue_score"]
    seed_0 = {**parts[1], "tasks": {"mrpc": {"runs": parts[1]["tasks"]["mrpc"]["runs"][:1]}}}
    with pytest.raises(ValueError, match=r"seeds \[0, 0, 1\] overlap"):
        glue.merge_seed_splits([parts[1], seed_0])
    other_recipe = {**parts[0], "config": {**parts[0]["config"], "learning_rate": 1.0}}
    with pytest.raises(ValueError, match="differ in tasks or in config"):
        glue.merge_seed_splits([parts[1], other_recipe])


def test_a_fine_tuning_workdir_resumes_its_own_run_and_refuses_another_unless_fresh(tmp_path):
    # A rerun into a used workdir once left the old results.json and submission beside the new
    # seed_0 model. Now the same config resumes, another is refused, and --fresh moves the
    # earlier run aside, never an input.
    from electra_jax.finetune import __main__ as finetune_cli

    workdir = tmp_path / "out"
    (workdir / "seed_0").mkdir(parents=True)
    (workdir / "results.json").write_text("{}")
    config = glue_configs.get_config()
    finetune_cli.claim_workdir(config, str(tmp_path / "new"), fresh=False)  # a new workdir: its config recorded
    assert json.load(open(tmp_path / "new" / "config.json"))["optim"]["learning_rate"] == config.optim.learning_rate
    (tmp_path / "new" / "seed_0").mkdir()  # its first run started
    with pytest.raises(
        FileExistsError, match=r"out holds files of another program \(results.json, seed_0\); .*--fresh"
    ):
        finetune_cli.claim_workdir(config, str(workdir), fresh=False)
    config.seeds, config.log_every = 3, 7
    finetune_cli.claim_workdir(config, str(tmp_path / "new"), fresh=False)  # more seeds, other logging: resumes
    config.optim.learning_rate = 1e-3
    with pytest.raises(FileExistsError, match=r"another config \(optim.learning_rate: saved 0.0 vs 0.001\); .*--fresh"):
        finetune_cli.claim_workdir(config, str(tmp_path / "new"), fresh=False)
    config.data_dir = str(workdir / "seed_0")  # an input inside the earlier run: never moved
    with pytest.raises(ValueError, match=r"refusing to remove .*seed_0: it is config.data_dir"):
        finetune_cli.claim_workdir(config, str(workdir), fresh=True)
    config.data_dir, config.tokenizer = str(tmp_path / "glue"), str(workdir / "seed_0" / "vocab.txt")
    with pytest.raises(ValueError, match=r"refusing to remove .*seed_0: it .*config.tokenizer"):
        finetune_cli.claim_workdir(config, str(workdir), fresh=True)
    config.tokenizer = ""
    assert sorted(os.listdir(workdir)) == ["results.json", "seed_0"]
    config.data_dir = str(tmp_path / "glue")
    finetune_cli.claim_workdir(config, str(workdir), fresh=True)
    aside = [name for name in os.listdir(workdir) if name.startswith("replaced-")]
    assert sorted(os.listdir(workdir)) == ["config.json", *aside] and len(aside) == 1
    assert sorted(os.listdir(workdir / aside[0])) == ["results.json", "seed_0"]


def test_a_preempted_fine_tuning_run_exits_143_for_a_restart_to_resume_it(tmp_path, monkeypatch):
    import sys
    import types

    from electra_jax import trainer
    from electra_jax.finetune import __main__ as finetune_cli

    def report(config, workdir):
        raise trainer.Preempted("toy seed 0 stopped at step 3 of 9; run the same command again to resume")

    monkeypatch.setitem(sys.modules, "preempted_task", types.SimpleNamespace(report=report))
    monkeypatch.setitem(finetune_cli.TASKS, "preempted", "preempted_task")
    config = glue_configs.get_config()
    with config.unlocked():
        config.program = "preempted"
    flag = types.SimpleNamespace
    with pytest.raises(SystemExit) as stopped:
        finetune_cli.main(["finetune"], flag(value=config), flag(value=str(tmp_path / "out")), flag(value=False))
    assert stopped.value.code == 143 == finetune_cli.PREEMPTED_EXIT_CODE


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("batch_size", 0, r"^batch_size=0; it must be >= 1 \(--config.batch_size\)"),
        ("eval_batch_size", 0, r"^eval_batch_size=0; it must be >= 1"),
        ("seeds", 0, r"^seeds=0; it must be >= 1"),
        ("seed", -1, r"^seed=-1; it must be >= 0"),
        ("max_seq_length", 1, r"^max_seq_length=1; it must be >= 4"),
        ("dropout", 1.0, r"^dropout=1.0; it must be in \[0.0, 0.9\]"),
        ("optim.learning_rate", -1.0, r"^optim.learning_rate=-1.0; it must be >= 0.0"),
    ],
)
def test_the_cli_refuses_a_number_out_of_range_before_the_workdir_records_it(tmp_path, key, value, message):
    # batch_size=0 and the rest raised ZeroDivisionError / IndexError, naming no key, after
    # config.json recorded the bad value (so the corrected rerun was refused as another run).
    import types

    from electra_jax.finetune import __main__ as finetune_cli

    config = glue_configs.get_config()
    section, _, field = key.rpartition(".")
    (config[section] if section else config)[field] = value
    flag = types.SimpleNamespace
    with pytest.raises(ValueError, match=message):
        finetune_cli.main(["finetune"], flag(value=config), flag(value=str(tmp_path / "out")), flag(value=False))
    assert not (tmp_path / "out" / finetune_cli.CONFIG_FILE).exists()


def test_a_run_that_failed_before_training_does_not_refuse_the_corrected_one(tmp_path):
    # Its config.json made the corrected rerun "a fine-tuning run with another config".
    from electra_jax.finetune import __main__ as finetune_cli

    config = glue_configs.get_config()
    workdir = tmp_path / "out"
    finetune_cli.claim_workdir(config, str(workdir), fresh=False)
    (workdir / "label_map.json").write_text("{}")  # what a task writes before its first step
    config.optim.learning_rate = 1e-3
    finetune_cli.claim_workdir(config, str(workdir), fresh=False)
    assert json.loads((workdir / "config.json").read_text())["optim"]["learning_rate"] == 1e-3


def test_a_pretraining_workdir_is_named_as_such(tmp_path):
    # config_differences raised an AttributeError on the pretraining config's sections.
    from electra_jax.finetune import __main__ as finetune_cli

    workdir = tmp_path / "pretrained"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps({"model": {"hidden_size": 256}, "init": {"workdir": ""}}))
    with pytest.raises(
        FileExistsError, match=r"pretrained holds a pretraining run, not a fine-tuning one: .*--config.init"
    ):
        finetune_cli.claim_workdir(glue_configs.get_config(), str(workdir), fresh=False)
