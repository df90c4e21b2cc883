"""benchmarks/pretrain_step.py: the compile-only mode and the padded-vocabulary ablation, run
as on the GPU image, where tensorflow is not installed."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tensorflow made unimportable, as on the GPU image (jax, flax, optax, orbax, torch only)
WITHOUT_TENSORFLOW = (
    "import sys; sys.modules['tensorflow'] = None; "
    "from benchmarks import pretrain_step; pretrain_step.main(sys.argv[1:])"
)


@pytest.mark.integration
def test_compile_only_rows_report_memory_and_the_padded_vocabulary(tmp_path):
    out = tmp_path / "rows.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_TENSORFLOW,
            "--sizes=tiny",
            "--seqs=32",
            "--batch=4",
            "--compile_only",
            "--ablations=recipe,pad_vocab_128",
            "--set",
            "model.vocab_size=8000",
            f"--out={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "XLA_FLAGS": ""},
    )  # one device, as the harness is used: faster compiles
    assert proc.returncode == 0, proc.stderr[-3000:]
    recipe, padded = [json.loads(line) for line in out.read_text().splitlines()]
    assert (recipe["impl"], padded["impl"]) == ("electra_jax", "electra_jax+pad_vocab_128")
    for row in (recipe, padded):
        assert "step_s" not in row and row["compile_s"] > 0
        assert row["step_memory_gib"] > row["donated_gib"] > 0
    # 8000 -> 8064 rows: 64 more word-embedding rows (embedding_size 128) and bias entries
    assert padded["num_params"] - recipe["num_params"] == 64 * (128 + 1)
    assert padded["model_flops"] == recipe["model_flops"]  # padding is not useful work
    assert proc.stdout.count("| compile only |") == 2
