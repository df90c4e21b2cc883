"""The helpers of the learning benchmarks: the context-free detector of rtd_context_check,
the eval rows learning_curve draws, the seed study's commands, the GLUE table's numbers."""

import json
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from benchmarks.studies import glue_rows, learning_curve, rtd_context_check, seed_study


def test_token_only_detector_finds_token_statistics_and_nothing_else():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 500, 40_000)
    # a token's identity sets its replacement rate: the detector must find it out of sample
    rate = np.where(tokens < 50, 0.6, 0.1)
    labels = rng.random(tokens.size) < rate
    oracle = roc_auc_score(labels, rate)  # scoring by the true rates: 0.68 here
    got = roc_auc_score(labels, rtd_context_check.token_only_scores(tokens, labels))
    assert oracle - 0.01 < got <= oracle + 0.005
    # labels unrelated to the token: fitted in-sample, rare tokens would look predictive;
    # cross-fitted, the detector is at chance
    noise = rng.random(tokens.size) < 0.15
    auc = roc_auc_score(noise, rtd_context_check.token_only_scores(tokens, noise))
    assert abs(auc - 0.5) < 0.02


def _write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_eval_rows_keep_the_last_row_of_a_replayed_step(tmp_path):
    _write_rows(
        tmp_path / "metrics.jsonl",
        [
            {"step": 10, "split": "train", "mlm_accuracy": 0.1},
            {"step": 10, "split": "eval", "mlm_accuracy": 0.2, "disc_auc": 0.6},
            {"step": 20, "split": "eval", "mlm_accuracy": 0.3, "disc_auc": 0.7},
            {"step": 20, "split": "eval", "mlm_accuracy": 0.35, "disc_auc": 0.75},  # after a resume
        ],
    )
    rows = learning_curve.eval_rows(str(tmp_path))
    assert [(r["step"], r["mlm_accuracy"]) for r in rows] == [(10, 0.2), (20, 0.35)]
    table = learning_curve.markdown_table({"run": rows})
    assert "| run | 20 | 0.350 | 0.750 | - | - |" in table
    assert seed_study.last_eval(str(tmp_path))["mlm_accuracy"] == 0.35


def test_runs_without_eval_rows_or_with_a_broken_line_are_named(tmp_path):
    _write_rows(tmp_path / "metrics.jsonl", [{"step": 1, "split": "train"}])
    with pytest.raises(ValueError, match="no eval rows; train with --config.train.eval_every"):
        learning_curve.eval_rows(str(tmp_path))
    (tmp_path / "bad.jsonl").write_text('{"step": 1, "split": "eval"}\n{"step": \n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not a JSON line"):
        learning_curve.eval_rows(str(tmp_path / "bad.jsonl"))


def test_seed_study_command_puts_the_seed_and_arm_after_the_shared_flags():
    argv = seed_study.command(
        "runs/a/seed_3", 3, ["objective.sampler=gumbel"], ["--config=configs/pretrain.py:tiny", "--config.train.seed=0"]
    )
    assert argv[1:3] == ["-m", "electra_jax.train"]
    # absl takes the last value of a repeated flag: the study's seed wins over a shared one
    assert argv.index("--config.train.seed=3") > argv.index("--config.train.seed=0")
    assert argv[-1] == "--config.objective.sampler=gumbel"


def test_glue_rows_average_medians_and_give_the_spread_of_per_seed_averages():
    summary = glue_rows.summarize({"electra": {"cola": [10.0, 30.0, 20.0], "stsb": [50.0, 40.0, 70.0]}})
    row = summary["electra"]
    assert row["tasks"]["cola"] == {"median": 20.0, "min": 10.0, "max": 30.0, "per_seed": [10.0, 30.0, 20.0]}
    assert row["average"] == 35.0  # mean of the task medians 20 and 50
    assert row["per_seed_average"] == [30.0, 35.0, 45.0]  # seed k averaged over tasks
    assert "| electra | 20.0 [10.0-30.0] | 50.0 [40.0-70.0] | **35.0** [30.0-45.0] |" in glue_rows.table(
        summary, ["cola", "stsb"]
    )


def test_glue_rows_reads_the_paper_metric_and_puts_row_overrides_last():
    results = {
        "tasks": {
            "stsb": {
                "runs": [
                    {"dev": {"stsb": {"pearson": 1.0, "spearman": 2.0}}},
                    {"dev": {"stsb": {"pearson": 3.0, "spearman": 4.0}}},
                ]
            }
        }
    }
    assert glue_rows.task_scores(results, "stsb") == [2.0, 4.0]
    argv = glue_rows.command("runs/g/mlm/stsb", "stsb", ["--config.seeds=5"], ["init=w/mlm", "from_scratch=True"])
    assert argv[1:3] == ["-m", "electra_jax.finetune"]
    assert argv.index("--config.seeds=5") < argv.index("--config.init=w/mlm")
    assert argv[-1] == "--config.from_scratch=True"
    with pytest.raises(ValueError, match="NAME=key=value"):
        seed_study.parse_overrides(["random"])
    assert seed_study.split_argv(["--root=r", "--", "--config.seeds=5"]) == (["--root=r"], ["--config.seeds=5"])


def test_glue_rows_tabulates_finished_runs_without_running_them_again(tmp_path, capsys):
    for row, scores in (("random", [10.0, 12.0]), ("electra", [40.0, 44.0])):
        (tmp_path / row / "stsb").mkdir(parents=True)
        runs = [{"dev": {"stsb": {"pearson": 0.0, "spearman": s}}} for s in scores]
        (tmp_path / row / "stsb" / "results.json").write_text(json.dumps({"tasks": {"stsb": {"runs": runs}}}))
    glue_rows.main(
        [
            f"--root={tmp_path}",
            "--tasks=stsb",
            "--row",
            "random=init=w,from_scratch=True",
            "--row",
            "electra=init=w",
            "--",
            "--config.seeds=2",
        ]
    )
    table = (tmp_path / "table.md").read_text()
    assert "| random | 11.0 [10.0-12.0] | **11.0** [10.0-12.0] |" in table
    assert "| electra | 42.0 [40.0-44.0] | **42.0** [40.0-44.0] |" in table
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["wall_s"] == {} and summary["rows"]["random"] == ["init=w", "from_scratch=True"]
    with pytest.raises(ValueError, match=r"--tasks \['qqq'\]"):
        glue_rows.main([f"--root={tmp_path}", "--tasks=qqq", "--row", "a=init=w"])


def test_glue_rows_split_gives_each_part_its_own_seeds_and_reruns_only_missing_parts(tmp_path):
    assert glue_rows.split_seeds(range(0, 5), 2) == [range(0, 3), range(3, 5)]
    assert glue_rows.split_seeds(range(3, 6), 3) == [range(3, 4), range(4, 5), range(5, 6)]
    with pytest.raises(ValueError, match=r"--split=3: needs 1 to 2 parts"):
        glue_rows.split_seeds(range(0, 2), 3)
    # the row's seed= comes after the shared --config.seeds=: seeds 2..6
    rows = {"electra": ["init=w", "seed=2"]}
    done = tmp_path / "electra" / "stsb" / "seeds_2-4"
    done.mkdir(parents=True)
    (done / "results.json").write_text("{}")
    jobs, merges = glue_rows.plan(str(tmp_path), ["stsb"], rows, {}, ["--config.seeds=5"], split=2)
    task_dir = str(tmp_path / "electra" / "stsb")
    assert merges == {task_dir: [f"{task_dir}/seeds_2-4", f"{task_dir}/seeds_5-6"]}
    [(workdir, argv)] = jobs  # the finished part is not rerun
    assert workdir == f"{task_dir}/seeds_5-6"
    assert f"--workdir={workdir}" in argv and argv[-2:] == ["--config.seed=5", "--config.seeds=2"]
    with pytest.raises(ValueError, match="--config.seeds=N"):
        glue_rows.plan(str(tmp_path), ["cola"], rows, {}, ["--config.seeds", "5"], split=2)


def test_run_all_reports_each_finished_job_and_names_a_failed_one(tmp_path):
    done = []
    jobs = [(str(tmp_path / name), [sys.executable, "-c", ""]) for name in ("a", "b")]
    walls = seed_study.run_all(jobs, [], on_done=done.append)
    assert done == [str(tmp_path / "a"), str(tmp_path / "b")] and set(walls) == set(done)
    with pytest.raises(RuntimeError, match=r"/c: exit 3; see .*/c/train.log"):
        seed_study.run_all([(str(tmp_path / "c"), [sys.executable, "-c", "raise SystemExit(3)"])], [])


def test_glue_rows_split_merges_a_task_before_the_next_task_starts(tmp_path, monkeypatch):
    """Each fake fine-tuning part writes its seeds' results; cola's parts fail unless stsb's
    merged results.json is already there, so the table's cells land as tasks finish."""

    real_command = glue_rows.command

    def fake_command(workdir, task, shared, overrides):
        if not overrides[-1].startswith("seeds="):  # plan() reading the seeds asked for
            return real_command(workdir, task, shared, overrides)
        seed = int(overrides[-2].removeprefix("seed="))
        seeds = int(overrides[-1].removeprefix("seeds="))
        metric = "spearman" if task == "stsb" else "mcc"
        runs = [{"seed": s, "dev": {task: {metric: float(s)}}} for s in range(seed, seed + seeds)]
        results = {
            "init": "w",
            "config": {"seed": seed, "seeds": seeds},
            "tasks": {task: {"runs": runs}},
            "skipped": {},
        }
        need = tmp_path / "electra" / "stsb" / "results.json"
        script = (
            "import json, os, sys\n"
            f"if {task == 'cola'} and not os.path.exists({str(need)!r}): sys.exit(7)\n"
            f"json.dump({results!r}, open(os.path.join({workdir!r}, 'results.json'), 'w'))\n"
        )
        return [sys.executable, "-c", script]

    monkeypatch.setattr(glue_rows, "command", fake_command)
    glue_rows.main(
        [f"--root={tmp_path}", "--tasks=stsb,cola", "--split=2", "--row", "electra=init=w", "--", "--config.seeds=3"]
    )
    merged = json.loads((tmp_path / "electra" / "cola" / "results.json").read_text())
    assert [run["seed"] for run in merged["tasks"]["cola"]["runs"]] == [0, 1, 2]
    assert merged["merged_from"] == ["seeds_0-1", "seeds_2-2"]
    assert "| electra | 1.0 [0.0-2.0] | 1.0 [0.0-2.0] | **1.0** [0.0-2.0] |" in (tmp_path / "table.md").read_text()
