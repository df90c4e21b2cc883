"""GLUE readers: TSV layout and a fake TFDS source give the same examples; bad rows fail loudly."""

import os
import shutil

import numpy as np
import pytest

from benchmarks.shared_data import shared_path
from data_pipelines import glue

GLUE_DIR = shared_path("glue")

# The rows every fixture is written from: (text_a, text_b, label name or score).
COLA = [
    ("The sailors rode the breeze.", None, "1"),
    ("Him ate the apple.", None, "0"),
    ('He said "hi" to me.', None, "1"),
]
MRPC = [
    ("Amrozi accused his brother.", 'Referring to him as "the witness".', "1"),
    ("Yucaipa owned Dominick's.", "Yucaipa bought Dominick's in 1995.", "0"),
]
STSB = [
    ("A plane is taking off.", "An air plane is taking off.", "5.000"),
    ("A man is playing a flute.", "A man is playing a large flute.", "3.800"),
]
MNLI = [
    ("The cat sat.", "A cat is sitting.", "entailment"),
    ("It rained.", "It was dry.", "contradiction"),
    ("He left.", "He left early.", "neutral"),
]


def write_tsv(path, lines, bom=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        f.write("".join("\t".join(line) + "\n" for line in lines))


@pytest.fixture
def glue_dir(tmp_path):
    """Tiny files in GLUE's own layouts (column order, headers, BOM) for four tasks."""
    root = str(tmp_path / "glue")
    write_tsv(f"{root}/CoLA/train.tsv", [("gj04", label, "", a) for a, _, label in COLA])  # no header
    write_tsv(f"{root}/CoLA/test.tsv", [("index", "sentence")] + [(str(i), a) for i, (a, _, _) in enumerate(COLA)])
    write_tsv(
        f"{root}/MRPC/train.tsv",
        [("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")]
        + [(label, str(100 + i), str(200 + i), a, b) for i, (a, b, label) in enumerate(MRPC)],
        bom=True,
    )
    write_tsv(
        f"{root}/STS-B/dev.tsv",
        [("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score")]
        + [
            (str(i), "main-captions", "MSRvid", "2012test", "0001", "none", "none", a, b, s)
            for i, (a, b, s) in enumerate(STSB)
        ],
    )
    mnli_header = [
        "index",
        "promptID",
        "pairID",
        "genre",
        "s1_binary",
        "s2_binary",
        "s1_parse",
        "s2_parse",
        "sentence1",
        "sentence2",
        "label1",
        "label2",
        "label3",
        "label4",
        "label5",
        "gold_label",
    ]
    write_tsv(
        f"{root}/MNLI/dev_matched.tsv",
        [mnli_header]
        + [
            (str(i), "1", "1e", "fiction", "()", "()", "()", "()", a, b, g, g, g, g, g, g)
            for i, (a, b, g) in enumerate(MNLI)
        ],
    )
    return root


# What TFDS glue/<task> yields for the same rows: its feature names and int/float labels.
TFDS_ROWS = {
    ("cola", "train"): [{"idx": i, "sentence": a, "label": int(y)} for i, (a, _, y) in enumerate(COLA)],
    ("cola", "test"): [{"idx": i, "sentence": a, "label": -1} for i, (a, _, _) in enumerate(COLA)],
    ("mrpc", "train"): [
        {"idx": i, "sentence1": a, "sentence2": b, "label": int(y)} for i, (a, b, y) in enumerate(MRPC)
    ],
    ("stsb", "validation"): [
        {"idx": i, "sentence1": a, "sentence2": b, "label": np.float32(s)} for i, (a, b, s) in enumerate(STSB)
    ],
    ("mnli", "validation_matched"): [
        {"idx": i, "premise": a, "hypothesis": b, "label": ["entailment", "neutral", "contradiction"].index(g)}
        for i, (a, b, g) in enumerate(MNLI)
    ],
}


class FakeBuilder:
    """Stands in for a prepared tfds builder; rows come back reversed, as a sharded read may."""

    def __init__(self, task):
        self.task = task

    def is_prepared(self):
        return True

    def as_dataset(self, split):
        import tensorflow as tf

        rows = TFDS_ROWS[(self.task, split)][::-1]
        return tf.data.Dataset.from_tensor_slices({k: np.array([r[k] for r in rows]) for k in rows[0]})


CASES = [("cola", "train"), ("cola", "test"), ("mrpc", "train"), ("stsb", "dev"), ("mnli", "dev_matched")]


@pytest.mark.parametrize("task,split", CASES)
def test_tsv_and_tfds_give_the_same_examples(glue_dir, monkeypatch, task, split):
    tfds = pytest.importorskip("tensorflow_datasets")
    from_tsv = glue.load_glue(task, split, data_dir=glue_dir, source="tsv")
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: FakeBuilder(name.split("/")[1]))
    from_tfds = glue.load_glue(task, split, data_dir=glue_dir)  # auto picks the "prepared" TFDS
    assert from_tsv == from_tfds
    assert len(from_tsv) == len(TFDS_ROWS[(task, split.replace("dev", "validation"))])


def test_tsv_values_hand_checked(glue_dir):
    cola = glue.load_glue("cola", "train", data_dir=glue_dir, source="tsv")
    assert cola[2] == glue.GlueExample("train-2", 2, 'He said "hi" to me.', None, 1)  # bare quotes kept
    assert [e.label for e in glue.load_glue("cola", "test", data_dir=glue_dir, source="tsv")] == [None] * 3
    mrpc = glue.load_glue("mrpc", "train", data_dir=glue_dir, source="tsv")
    assert mrpc[0].text_b == 'Referring to him as "the witness".' and mrpc[0].label == 1
    assert [e.label for e in glue.load_glue("stsb", "dev", data_dir=glue_dir, source="tsv")] == [5.0, 3.8]
    mnli = glue.load_glue("mnli", "dev_matched", data_dir=glue_dir, source="tsv")
    assert [e.label for e in mnli] == [0, 2, 1]
    assert glue.LABELS["mnli"][mnli[1].label] == "contradiction"
    assert glue.num_labels("stsb") == 1 and glue.num_labels("mnli") == 3


def test_malformed_rows_name_file_and_line(glue_dir):
    path = f"{glue_dir}/CoLA/train.tsv"
    with open(path, "a") as f:
        f.write("gj04\t1\tan extra\tcolumn\there\n")
    with pytest.raises(ValueError, match=r"CoLA/train.tsv:4: expected 4 tab-separated columns, found 5"):
        glue.load_glue("cola", "train", data_dir=glue_dir, source="tsv")
    write_tsv(path, [("gj04", "1", "", "Fine."), ("gj04", "yes", "", "Bad label.")])
    with pytest.raises(ValueError, match=r"CoLA/train.tsv:2: label 'yes' is not one of \['0', '1'\]"):
        glue.load_glue("cola", "train", data_dir=glue_dir, source="tsv")
    sts = f"{glue_dir}/STS-B/dev.tsv"
    with open(sts, "a") as f:
        f.write("\t".join(["9", "g", "f", "y", "o", "s", "s", "a", "b", "high"]) + "\n")
    with pytest.raises(ValueError, match=r"STS-B/dev.tsv:4: score 'high' is not a number"):
        glue.load_glue("stsb", "dev", data_dir=glue_dir, source="tsv")


def test_a_file_that_is_not_utf8_names_file_line_and_the_fix(glue_dir):
    # The decoder's message named neither the file nor the line ("position 200" of a buffer).
    path = f"{glue_dir}/CoLA/train.tsv"
    rows = [("gj04", "1", "", f"Sentence number {i}.") for i in range(500)]  # past the first read-ahead
    rows.append(("gj04", "1", "", "Un café au lait."))
    with open(path, "w", encoding="cp1252", newline="") as f:
        f.write("".join("\t".join(row) + "\n" for row in rows))
    byte = os.path.getsize(path) - len(" au lait.\n") - 1
    with pytest.raises(ValueError, match=rf"CoLA/train.tsv:501: byte {byte} is not UTF-8; re-encode .*iconv -f cp1252"):
        glue.load_glue("cola", "train", data_dir=glue_dir, source="tsv")


@pytest.mark.parametrize("score", ["7.5", "-2", "5.001"])
def test_scores_outside_the_sts_b_scale_are_refused_naming_file_and_line(glue_dir, score):
    with open(f"{glue_dir}/STS-B/dev.tsv", "a") as f:
        f.write("\t".join(["9", "g", "f", "y", "o", "s", "s", "a", "b", score]) + "\n")
    with pytest.raises(ValueError, match=rf"STS-B/dev.tsv:4: score '{score}' is outside STS-B's 0-5 similarity scale"):
        glue.load_glue("stsb", "dev", data_dir=glue_dir, source="tsv")


def test_non_finite_scores_and_empty_splits_are_refused_naming_the_file(glue_dir):
    sts = f"{glue_dir}/STS-B/dev.tsv"
    with open(sts, "a") as f:
        f.write("\t".join(["9", "g", "f", "y", "o", "s", "s", "a", "b", "nan"]) + "\n")
    with pytest.raises(ValueError, match=r"STS-B/dev.tsv:4: score 'nan' is not a finite number"):
        glue.load_glue("stsb", "dev", data_dir=glue_dir, source="tsv")
    path = f"{glue_dir}/CoLA/dev.tsv"
    write_tsv(path, [])
    with pytest.raises(ValueError, match=r"CoLA/dev.tsv holds no dev examples \(header or blank lines only\)"):
        glue.load_glue("cola", "dev", data_dir=glue_dir, source="tsv")


def test_missing_data_and_bad_names(glue_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"RTE/train.tsv not found"):
        glue.load_glue("rte", "train", data_dir=glue_dir, source="tsv")
    with pytest.raises(ValueError, match="unknown GLUE task 'sst'"):
        glue.load_glue("sst", "train", data_dir=glue_dir)
    with pytest.raises(ValueError, match="unknown split 'dev' for mnli"):
        glue.load_glue("mnli", "dev", data_dir=glue_dir)
    with pytest.raises(FileNotFoundError, match="TFDS glue/cola is not prepared"):
        glue.load_glue("cola", "train", tfds_data_dir=str(tmp_path / "tfds"), source="tfds")


REAL_COUNTS = {
    ("cola", "train"): 8551,
    ("cola", "dev"): 1043,
    ("cola", "test"): 1063,
    ("sst2", "train"): 67349,
    ("sst2", "dev"): 872,
    ("sst2", "test"): 1821,
    ("mrpc", "train"): 3668,
    ("mrpc", "dev"): 408,
    ("mrpc", "test"): 1725,
    ("rte", "train"): 2490,
    ("rte", "dev"): 277,
    ("rte", "test"): 3000,
    ("stsb", "train"): 5749,
    ("stsb", "dev"): 1500,
    ("stsb", "test"): 1379,
    ("wnli", "train"): 635,
    ("wnli", "dev"): 71,
    ("wnli", "test"): 146,
    ("qnli", "dev"): 5463,
}


@pytest.mark.skipif(not os.path.isdir(GLUE_DIR), reason="shared GLUE files not present")
def test_real_glue_files_parse_with_documented_counts():
    for (task, split), count in REAL_COUNTS.items():
        examples = glue.load_glue(task, split, data_dir=GLUE_DIR, source="tsv")
        assert len(examples) == count, (task, split)
        assert [e.idx for e in examples] == list(range(count)), (task, split)
    qnli_labels = [e.label for e in glue.load_glue("qnli", "dev", data_dir=GLUE_DIR, source="tsv")]
    assert (qnli_labels.count(0), qnli_labels.count(1)) == (2702, 2761)  # entailment / not (SOURCE.md)
    mrpc_dev = glue.load_glue("mrpc", "dev", data_dir=GLUE_DIR, source="tsv")
    assert mrpc_dev[0].text_a.startswith("He said the foodservice pie business")  # BOM header skipped


@pytest.mark.skipif(not os.path.isdir(GLUE_DIR), reason="shared GLUE files not present")
def test_mrpc_split_from_raw_msr_file_matches_glue_tsv(tmp_path):
    os.makedirs(tmp_path / "MRPC")
    for name in ("msr_paraphrase_train.txt", "dev_ids.tsv"):  # no train.tsv / dev.tsv
        shutil.copy(f"{GLUE_DIR}/MRPC/{name}", tmp_path / "MRPC" / name)
    for split in ("train", "dev"):
        assert glue.load_glue("mrpc", split, data_dir=str(tmp_path), source="tsv") == glue.load_glue(
            "mrpc", split, data_dir=GLUE_DIR, source="tsv"
        )
