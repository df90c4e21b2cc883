"""Corpus formats and mixtures: every format reads back as the same documents as the
equivalent .txt and builds byte-identical shards; bad records are named or counted as
lost; mixture weights hold within sampling error; the tokenizer's sample is bounded."""

import gzip
import json
import math

import pytest
import test_cloud_paths

from data_pipelines import build_shards as build_lib
from data_pipelines import corpus_sources, text_files
from data_pipelines import tokenizer as tokenizer_lib

fake_gcs = test_cloud_paths.fake_gcs  # the fixture: gs:// routed to a local folder

# Records as a web corpus ships them: several paragraphs, CRLF, unicode, blank-line runs.
RECORDS = [
    f"Page {i} begins here. It has two sentences!\n\nA second paragraph, with ünïcode ({i}).\r\n"
    f"Wrapped onto a second line? Yes.\n\n\n{'Words repeat often in record %d. ' % i * (i % 4 + 1)}"
    for i in range(40)
]


def write_jsonl(path, records, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for i, text in enumerate(records):
            f.write(json.dumps({"id": i, "text": text}) + "\n")


def write_all_formats(root, records=RECORDS):
    """The same corpus as .txt (records parted by blank lines), .txt.gz, JSON Lines
    (.jsonl, .json.gz, .jsonl.zst) and Parquet; returns {format: path}."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    text = "\n\n".join(records) + "\n"
    paths = {name: str(root / f"corpus.{name}") for name in ("txt", "txt.gz", "jsonl", "json.gz", "jsonl.zst")}
    (root / "corpus.txt").write_text(text, encoding="utf-8")
    with gzip.open(paths["txt.gz"], "wt", encoding="utf-8") as f:
        f.write(text)
    write_jsonl(paths["jsonl"], records)
    write_jsonl(paths["json.gz"], records, gzip.open)
    (root / "corpus.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress((root / "corpus.jsonl").read_bytes()))
    paths["parquet"] = str(root / "corpus.parquet")
    table = pa.table({"url": [f"u{i}" for i in range(len(records))], "text": records})
    pq.write_table(table, paths["parquet"], row_group_size=7)  # several row groups and batches
    return paths


def documents(inputs, **reading):
    stats = text_files.TextStats()
    docs = list(text_files.iter_documents(corpus_sources.resolve_inputs(inputs), stats=stats, **reading))
    return [d.sentences for d in docs], stats


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory):
    return write_all_formats(tmp_path_factory.mktemp("formats"))


@pytest.mark.parametrize("sentence_boundary", ["punctuation", "line"])
def test_every_format_reads_the_same_documents_as_the_txt(corpus_files, monkeypatch, sentence_boundary):
    monkeypatch.setattr(corpus_sources, "PARQUET_BATCH_ROWS", 3)  # batches cross row groups
    expected, _ = documents(corpus_files["txt"], sentence_boundary=sentence_boundary)
    assert len(expected) == 3 * len(RECORDS)  # three paragraphs a record
    for name, path in corpus_files.items():
        assert documents(path, sentence_boundary=sentence_boundary)[0] == expected, name


def test_a_record_is_a_document_under_document_boundary_file(corpus_files):
    """What a file is for text, a record is for the record formats."""
    by_record, _ = documents(corpus_files["jsonl"], document_boundary="file")
    by_paragraph, _ = documents(corpus_files["jsonl"])
    assert len(by_record) == len(RECORDS)
    assert [s for d in by_record for s in d] == [s for d in by_paragraph for s in d]


def test_documents_carry_their_source_and_index(corpus_files):
    sources = corpus_sources.resolve_inputs([corpus_files["jsonl"], corpus_files["parquet"]])
    docs = list(text_files.iter_documents(sources))
    assert [(d.source, d.index) for d in docs[:2]] == [(corpus_files["jsonl"], 0), (corpus_files["jsonl"], 1)]
    assert (docs[-1].source, docs[-1].index) == (corpus_files["parquet"], 3 * len(RECORDS) - 1)


@pytest.fixture(scope="module")
def tokenizer(corpus_files, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("spm") / "spm.model")
    return tokenizer_lib.train_sentencepiece(corpus_files["txt"], path, vocab_size=100)


def test_shards_of_every_format_are_byte_identical_to_the_txt_ones(corpus_files, tokenizer, tmp_path):
    def build(name):
        settings = dict(tokenizer_path=tokenizer.path, max_seq_length=32, num_shards=3, num_eval_shards=1)
        build_lib.build_shards(corpus_files[name], str(tmp_path / name), show_progress=False, **settings)
        return {p.name: p.read_bytes() for p in sorted((tmp_path / name).glob("*.tfrecord"))}

    expected = build("txt")
    assert len(expected) == 4
    for name in ("txt.gz", "json.gz", "jsonl.zst", "parquet"):
        assert build(name) == expected, name


def test_sources_weights_and_tfds_specs_parse(tmp_path):
    for name in ("a.txt", "b.jsonl", "c@v2.txt"):
        (tmp_path / name).write_text("x\n")
    sources = corpus_sources.resolve_inputs(f"{tmp_path}/a.txt@0.8, {tmp_path}/*.jsonl@2e-1")
    assert [(s.paths, s.weight) for s in sources] == [((f"{tmp_path}/a.txt",), 0.8), ((f"{tmp_path}/b.jsonl",), 0.2)]
    assert corpus_sources.resolve_inputs(f"{tmp_path}/c@v2.txt")[0].weight is None  # '@' not before a number
    assert corpus_sources.parse_tfds_spec("tfds:wikipedia/20230601.en:1.0.0:train[:10%]") == (
        "wikipedia/20230601.en:1.0.0",
        "train[:10%]",
    )
    with pytest.raises(ValueError, match=r"no @WEIGHT while others do"):
        corpus_sources.resolve_inputs(f"{tmp_path}/a.txt@0.8,{tmp_path}/b.jsonl")
    with pytest.raises(ValueError, match=r"source '.*\*.jsonl' matches only inputs of an earlier source"):
        corpus_sources.resolve_inputs(f"{tmp_path}/b.jsonl@1,{tmp_path}/*.jsonl@1")
    with pytest.raises(ValueError, match=r"weight 0.0; a mixture weight must be > 0"):
        corpus_sources.resolve_inputs(f"{tmp_path}/a.txt@0")
    with pytest.raises(ValueError, match=r"tfds:NAME\[/CONFIG\]\[:VERSION\]:SPLIT"):
        corpus_sources.resolve_inputs("tfds:c4")
    with pytest.raises(FileNotFoundError, match=r"matches no file"):
        corpus_sources.resolve_inputs(f"{tmp_path}/missing/*.jsonl@1")


def test_a_bad_json_line_is_named_under_error_and_counted_under_skip(tmp_path):
    path = tmp_path / "web.jsonl"
    lines = [json.dumps({"text": f"Good record {i}."}) for i in range(20)]
    lines[2] = '{"text": "unterminated'
    lines[5] = json.dumps({"body": "no text field"})
    lines[8] = json.dumps({"text": None})
    lines[11] = json.dumps(["a", "list"])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:3: not a JSON line .*one JSON object per line"):
        documents(str(path), on_invalid_utf8="error")
    docs, stats = documents(str(path))
    assert len(docs) == 16 and stats.bad_records == 4 and stats.bad_record_bytes > 0
    raw = path.read_bytes().replace(b"Good record 0", b"Good \xff record 0")
    (tmp_path / "latin.jsonl").write_bytes(raw)
    with pytest.raises(ValueError, match=r"latin.jsonl:1: invalid UTF-8"):
        documents(str(tmp_path / "latin.jsonl"), on_invalid_utf8="error")


def test_a_wrong_field_or_column_names_the_file_what_it_has_and_the_fix(corpus_files):
    with pytest.raises(ValueError, match=r"corpus.jsonl: 40 of 40 records have no usable text .*corpus.jsonl:1: "):
        documents(corpus_files["jsonl"], text_field="content")
    with pytest.raises(ValueError, match=r"no field 'content' \(it has: id, text\); set --config.text_field"):
        documents(corpus_files["json.gz"], text_field="content")
    with pytest.raises(ValueError, match=r"corpus.parquet: no column 'body' \(columns: url, text\); set --config"):
        documents(corpus_files["parquet"], text_field="body")


def test_a_truncated_compressed_file_is_named(corpus_files, tmp_path):
    import zstandard

    # Two frames (as pzstd and chunked writers make them) read whole; cut in either, an error.
    two_frames = tmp_path / "two_frames.jsonl.zst"
    data = open(corpus_files["jsonl"], "rb").read()
    half = data.index(b"\n", len(data) // 2) + 1
    two_frames.write_bytes(
        zstandard.ZstdCompressor().compress(data[:half]) + zstandard.ZstdCompressor().compress(data[half:])
    )
    assert documents(str(two_frames)) == documents(corpus_files["jsonl"])
    for name in ("json.gz", "jsonl.zst", "two_frames.jsonl.zst"):
        damaged = tmp_path / f"damaged.{name}"
        data = open(corpus_files.get(name, two_frames), "rb").read()
        damaged.write_bytes(data[: len(data) // 2 + 7])
        with pytest.raises(ValueError, match=rf"damaged.{name}: damaged or truncated compressed data"):
            documents(str(damaged))


def test_bad_records_count_as_lost_and_fail_the_build_above_the_threshold(tokenizer, tmp_path):
    records = [json.dumps({"text": text}) for text in RECORDS]
    records[3] = json.dumps({"text": [RECORDS[3]]})  # a list: about 1/40 of the corpus, above the default 1%
    (tmp_path / "web.jsonl").write_text("\n".join(records) + "\n")
    corpus, out = str(tmp_path / "web.jsonl"), str(tmp_path / "s")
    settings = dict(tokenizer_path=tokenizer.path, max_seq_length=32, num_shards=2, show_progress=False)
    with pytest.raises(build_lib.DataLossError, match=r"1 records had no usable text"):
        build_lib.build_shards(corpus, out, **settings)
    summary = build_lib.build_shards(corpus, out, max_lost_fraction=0.2, **settings)
    assert summary["bad_records"] == 1 and summary["lost_fraction"] > 0.01


def test_mixture_weights_hold_within_sampling_error(tmp_path):
    """Each draw picks source A with probability 0.8, so A's share of n drawn documents is
    binomial: within 4 standard deviations, sqrt(0.8 * 0.2 / n) (~0.01 here), for every seed."""
    num_documents = 5000
    for name in ("a", "b"):
        (tmp_path / f"{name}.txt").write_text("".join(f"{name} {i}.\n\n" for i in range(num_documents)))
    inputs = f"{tmp_path}/a.txt@0.8,{tmp_path}/b.txt@0.2"
    for seed in range(5):
        stats = text_files.TextStats()
        sources = corpus_sources.resolve_inputs(inputs)
        drawn = [d.source for d in text_files.iter_documents(sources, seed=seed, stats=stats)]
        share = drawn.count(f"{tmp_path}/a.txt") / len(drawn)
        tolerance = 4 * math.sqrt(0.8 * 0.2 / len(drawn))
        assert abs(share - 0.8) < tolerance, (seed, share, tolerance)
        # It ends when A runs out; B's documents not drawn are counted, none silently gone.
        assert drawn.count(f"{tmp_path}/a.txt") == num_documents
        assert stats.documents + stats.unused_documents == 2 * num_documents
    again = [d.sentences for d in text_files.iter_documents(corpus_sources.resolve_inputs(inputs), seed=4)]
    assert [d[0] for d in again[:50]] == [d[0] for d in documents(inputs, seed=4)[0][:50]]  # seeded


def test_the_tokenizer_sample_is_the_bounded_prefix_of_a_seeded_random_order():
    docs = [text_files.Document("web.jsonl", i, [f"Document number {i}." * (1 + i % 7)]) for i in range(3000)]
    sizes = [len(d.sentences[0].encode()) for d in docs]
    budget = sum(sizes) // 5
    sample = tokenizer_lib.sample_documents(docs, budget, seed=3)
    # Independent reference: sort all by key, take documents while they fit.
    order = sorted(range(len(docs)), key=lambda i: tokenizer_lib._document_key(3, "web.jsonl", i))
    kept, total = [], 0
    for i in order:
        if total + sizes[i] > budget:
            break
        kept.append(i)
        total += sizes[i]
    assert sample.documents == [docs[i].sentences for i in sorted(kept)]  # in corpus order
    assert sample.bytes == total <= budget and sample.corpus_bytes == sum(sizes)
    assert tokenizer_lib.sample_documents(docs, budget, seed=4).documents != sample.documents
    whole = tokenizer_lib.sample_documents(docs, sum(sizes), seed=3)
    assert whole.documents == [d.sentences for d in docs]  # a corpus that fits is all of it, in order


def test_the_tokenizer_trains_on_a_sample_of_the_stated_size(corpus_files, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    tokenizer_lib.train_sentencepiece(
        corpus_files["parquet"], str(tmp_path / "spm.model"), vocab_size=60, sample_bytes=5000, seed=1
    )
    message = next(r.getMessage() for r in caplog.records if "seeded sample" in r.getMessage())
    sampled = int(message.split("seeded sample of ")[1].split(" bytes")[0])
    assert 4000 < sampled <= 5000 and "sample_bytes=5000, seed=1" in message


@pytest.fixture(scope="module")
def tfds_data_dir(tmp_path_factory):
    """A TFDS dataset prepared locally from RECORDS (no download): tfds:tiny_corpus:train."""
    import tensorflow_datasets as tfds

    class TinyCorpus(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict({"text": tfds.features.Text(), "url": tfds.features.Text()})
            # Examples in the order generated, so the documents compare with the .txt's in order.
            return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, text in enumerate(RECORDS):
                yield i, {"text": text, "url": f"u{i}"}

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TinyCorpus(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_a_tfds_split_reads_as_the_txt_and_names_what_is_wrong(corpus_files, tfds_data_dir, tmp_path):
    expected, _ = documents(corpus_files["txt"])
    assert documents("tfds:tiny_corpus:train", tfds_data_dir=tfds_data_dir)[0] == expected
    assert documents("tfds:tiny_corpus:train[:2]", tfds_data_dir=tfds_data_dir)[0] == expected[:6]
    [fingerprint] = corpus_sources.fingerprints(
        corpus_sources.resolve_inputs("tfds:tiny_corpus:train"), "", tfds_data_dir
    )
    assert fingerprint == {"path": "tfds:tiny_corpus:train", "dataset": "tiny_corpus/1.0.0", "examples": len(RECORDS)}
    with pytest.raises(ValueError, match=r"no feature 'body' \(features: text, url\); set --config.text_field"):
        documents("tfds:tiny_corpus:train", tfds_data_dir=tfds_data_dir, text_field="body")
    with pytest.raises(ValueError, match=r"tiny_corpus is not prepared in .*tfds build tiny_corpus"):
        documents("tfds:tiny_corpus:train", tfds_data_dir=str(tmp_path))


def run_module(module, *flags, cwd, env=None):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", module, *flags], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.integration
def test_jsonl_gz_and_parquet_corpora_prepare_and_train_end_to_end(tmp_path, compile_cache):
    """`prepare_data` on a JSON Lines .gz corpus and on a Parquet one (the embedded default
    corpus, three paragraphs a record), then a few training steps on each one's shards with
    the flags prepare_data prints."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_pipelines import default_corpus

    default_corpus.write_default_corpus(str(tmp_path / "corpus.txt"), max_documents=1500)
    paragraphs = (tmp_path / "corpus.txt").read_text(encoding="utf-8").strip().split("\n\n")
    records = ["\n\n".join(paragraphs[i : i + 3]) for i in range(0, len(paragraphs), 3)]
    write_jsonl(tmp_path / "web.json.gz", records, gzip.open)
    pq.write_table(pa.table({"text": records}), tmp_path / "books.parquet")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": compile_cache}
    for name in ("web.json.gz", "books.parquet"):
        out = tmp_path / name.split(".")[0]
        printed = run_module(
            "data_pipelines.prepare_data",
            f"--config.inputs={tmp_path / name}",
            f"--config.output_dir={out}",
            "--config.vocab_size=1000",
            "--config.max_seq_length=64",
            "--config.num_shards=2",
            "--config.num_processes=1",
            cwd=repo,
            env=env,
        )
        summary = json.loads(printed.split("train with:")[0])
        assert summary["shards"]["documents"] == len(paragraphs) and summary["shards"]["bad_records"] == 0
        flags = [line.strip(" \\") for line in printed.split("train with:")[1].strip().splitlines()]
        log = run_module(
            "electra_jax.train",
            f"--config={repo}/configs/pretrain.py:tiny",
            f"--workdir={out / 'run'}",
            *flags,
            "--config.train.batch_size=8",
            "--config.train.num_steps=3",
            "--config.train.log_every=1",
            "--config.train.eval_every=0",
            "--config.train.checkpoint_every=3",
            "--config.train.tensorboard=False",
            "--config.optim.warmup_steps=1",
            "--config.objective.max_predictions_per_seq=10",
            "--config.model.num_layers=1",
            cwd=repo,
            env=env,
        )
        metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
        assert max(m.get("step", 0) for m in metrics) == 3, log


def test_gs_globs_are_read_through_epath(fake_gcs, corpus_files):
    """gs:// inputs are listed, read and fingerprinted through etils.epath (here routed to a
    local folder by test_cloud_paths' fixture, which fails any local-only call on them)."""
    import os
    import shutil

    for name in ("jsonl.zst", "parquet"):
        os.makedirs(fake_gcs("gs://bucket/web"), exist_ok=True)
        shutil.copy(corpus_files[name], fake_gcs(f"gs://bucket/web/part.{name}"))
    sources = corpus_sources.resolve_inputs("gs://bucket/web/*.jsonl.zst@3,gs://bucket/web/part.parquet@1")
    assert [s.paths for s in sources] == [("gs://bucket/web/part.jsonl.zst",), ("gs://bucket/web/part.parquet",)]
    expected, _ = documents(corpus_files["txt"])
    assert documents("gs://bucket/web/*.jsonl.zst")[0] == documents("gs://bucket/web/part.parquet")[0] == expected
    fingerprint = corpus_sources.fingerprints(sources, "")[1]
    assert fingerprint["path"] == "gs://bucket/web/part.parquet" and fingerprint["weight"] == 1.0
    assert fingerprint["bytes"] == os.path.getsize(corpus_files["parquet"])


@pytest.mark.integration
def test_the_cli_reports_a_wrong_text_field_in_one_line(corpus_files, tokenizer, tmp_path):
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "ELECTRA_JAX_TRACEBACK"}
    command = [sys.executable, "-m", "data_pipelines.build_shards", f"--config.inputs={corpus_files['parquet']}"]
    command += [
        f"--config.tokenizer_path={tokenizer.path}",
        f"--config.output_dir={tmp_path}",
        "--config.text_field=body",
    ]
    proc = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-2:] == [
        f"error: {corpus_files['parquet']}: no column 'body' (columns: url, text); "
        "set --config.text_field to the text's column",
        "  (ELECTRA_JAX_TRACEBACK=1 shows the traceback)",
    ]


def test_a_directory_built_before_text_field_existed_resumes_and_a_changed_weight_is_refused(
    corpus_files, tokenizer, tmp_path
):
    import os

    from data_pipelines import files, prepare_data

    out = str(tmp_path / "shards")
    settings = dict(tokenizer_path=tokenizer.path, max_seq_length=32, num_shards=2, show_progress=False)
    build_lib.build_shards(corpus_files["txt"], out, **settings)
    recorded = files.read_json(os.path.join(out, build_lib.BUILD_CONFIG_FILE))
    del recorded["text_field"]  # as versions before it wrote build_config.json
    files.write_json(os.path.join(out, build_lib.BUILD_CONFIG_FILE), recorded)
    assert build_lib.build_shards(corpus_files["txt"], out, **settings)["shards_skipped"] == 2
    with pytest.raises(ValueError, match=r"text_field changed"):
        build_lib.build_shards(corpus_files["txt"], out, text_field="body", **settings)

    mixture = f"{corpus_files['jsonl']}@0.7,{corpus_files['parquet']}@0.3"
    prepared = str(tmp_path / "prepared")
    options = dict(tokenizer=tokenizer.path, max_seq_length=32, num_shards=2, num_eval_shards=0, show_progress=False)
    summary = prepare_data.prepare_data(prepared, inputs=mixture, **options)["shards"]
    assert summary["documents"] + summary["unused_documents"] == 2 * 3 * len(RECORDS)
    with pytest.raises(ValueError, match=r"prepared with other settings or inputs \(inputs changed"):
        prepare_data.prepare_data(prepared, inputs=mixture.replace("@0.3", "@0.4"), **options)
