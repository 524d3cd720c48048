"""The benchmark scripts still run: each on tiny synthetic data, one round, one epoch.

No timing assertions (the numbers mean nothing at this size); only that every
mode runs end to end and reports what its tables need.
"""

import dataclasses
import json

import pytest
import torch
import yaml

from benchmarks import (
    bench_train,
    profile_train,
    run_all,
    tutorial_loop,
)
from benchmarks import train_support as ts
from mnist_pipeline.config.params import load_params
from mnist_pipeline.model.networks import build_model
from mnist_pipeline.testing import synthetic
from mnist_pipeline.testing.configs import make_params, model_config, train_config
from tests.support import REPO

TINY_ROWS = (600, 200, 10)
SMALL_SETTING = make_params(
    model=model_config(hidden_sizes=(32,), dropout=0.1),
    train=train_config(device="cpu", epochs=2, batch_size=64, lr=0.003, schedule="onecycle"),
)


@pytest.fixture(scope="module")
def tiny_data():
    return ts.load_data(None, TINY_ROWS, seed=0)


@pytest.fixture
def tiny_rows(monkeypatch):
    """--quick and the full-size defaults both mean TINY_ROWS here."""
    monkeypatch.setattr(bench_train, "QUICK_ROWS", TINY_ROWS)
    monkeypatch.setattr(ts, "FULL_ROWS", TINY_ROWS)


def test_both_loops_start_from_the_same_weights(tiny_data):
    ts.seed_torch(3)
    tutorial = tutorial_loop.tutorial_model()
    ts.seed_torch(3)
    model_cfg, _ = ts.tutorial_configs()
    project = build_model(model_cfg, ts.input_spec(tiny_data["train"][0]))
    project_linears = [m for m in project if isinstance(m, torch.nn.Linear)]
    tutorial_linears = [m for m in tutorial if isinstance(m, torch.nn.Linear)]
    assert len(project_linears) == len(tutorial_linears) == 3
    for p, t in zip(project_linears, tutorial_linears, strict=True):
        assert torch.equal(p.weight, t.weight) and torch.equal(p.bias, t.bias)


def test_tutorial_loop_reads_its_printed_valid_loss(tiny_data):
    ts.seed_torch(0)
    records = tutorial_loop.run_epochs(tiny_data["train"], tiny_data["valid"], epochs=2)
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0 < r["valid/loss"] < 5 and 0 <= r["valid/accuracy"] <= 1 for r in records)


def test_bench_train_runs_every_mode(tiny_data, tmp_path):
    result = bench_train.run(
        tiny_data,
        rounds=1,
        epochs=1,
        batch_sizes=(64, 256),
        faithful_epochs=2,
        params=SMALL_SETTING,
    )
    assert [r["batch_size"] for r in result["compare"]] == [64, 256]
    for row in result["compare"]:
        assert row["ratio"] > 0 and row["project"]["samples_per_s"] > 0
    faithful = result["faithfulness"]
    assert len(faithful["tutorial"]) == len(faithful["project"]) == 2
    assert faithful["abs_diff_last"] < 0.1  # same setting, same start: nearly the same loss
    assert result["time_to_result"]["tutorial_epochs"] == 2
    assert result["threads"] == torch.get_num_threads()
    json.dumps(result)  # --json must be able to write it


def test_bench_train_cli_quick(tiny_rows, tmp_path):
    out = tmp_path / "train.json"
    argv = ["--quick", "--modes", "compare", "--batch-sizes", "64", "--json", str(out)]
    bench_train.main(argv)
    assert json.loads(out.read_text())["compare"][0]["batch_size"] == 64


def test_bench_train_on_a_raw_dir(tmp_path):
    splits = synthetic.make_splits((60, 12, 10), seed=1)
    raw = synthetic.write_raw_dir(tmp_path / "raw", "idx", splits)
    data = ts.load_data(raw, (50, 10, 10), seed=0)
    assert data["name"] == "mnist" and len(data["train"][1]) == 50 and len(data["valid"][1]) == 10
    result = bench_train.run(data, rounds=1, epochs=1, batch_sizes=(64,), modes=("compare",))
    assert result["train_rows"] == 50


def test_run_all_train_step_and_summary(tiny_rows, tmp_path, capsys):
    out = tmp_path / "all.json"
    run_all.main(["--quick", "--steps", "train", "--json", str(out)])
    results = json.loads(out.read_text())
    assert set(results["train"]) >= {"compare", "faithfulness", "time_to_result"}
    assert "== Summary" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_distributed_runs_every_layout():
    from benchmarks import bench_distributed

    results = bench_distributed.run(
        None, epochs=1, overrides={"model.hidden_sizes": [8]}, rows=TINY_ROWS
    )
    assert [(r["processes"], r["threads"]) for r in results] == [(1, 2), (2, 1), (1, 1)]
    assert all(r["epoch_s"] > 0 and 0 <= r["valid_accuracy"] <= 1 for r in results)
    lines = run_all.summary({"threads": 1, "distributed": results})
    assert any("2 process(es) x 1 thread(s)" in what for what, _, _ in lines)


def test_profile_train_runs():
    result = profile_train.run(steps=3, repeats=1, rows=5)
    assert result["us_per_step"] > 0 and 0 < result["gemm_share"] < 1


def test_bench_step_compares_both_steps_in_both_settings():
    from benchmarks import bench_step

    results = bench_step.run(None, rounds=1, rows=TINY_ROWS)
    for setting in ("default", "tutorial"):
        assert results[setting]["manual_s"] > 0 and results[setting]["autograd_s"] > 0


def test_benchmarks_take_their_settings_from_the_committed_params_and_presets(
    committed_params, tmp_path
):
    # One source of values: what a benchmark runs is what the pipeline would run, from the
    # committed params.yaml (never the working copy) and presets/tutorial.yaml.
    from benchmarks import bench_step

    params = load_params(committed_params)
    default_model, default_train = bench_step.settings()["default"]
    assert default_model == params.model
    assert default_train == dataclasses.replace(params.train, device="cpu")
    preset = yaml.safe_load((REPO / "presets/tutorial.yaml").read_text())
    tutorial_model, tutorial_train = ts.tutorial_configs()
    for section, config in (("model", tutorial_model), ("train", tutorial_train)):
        for key, value in preset[section].items():
            expected = tuple(value) if isinstance(value, list) else value
            assert getattr(config, key) == expected, f"{section}.{key}"
    assert tutorial_train.augment == params.train.augment  # the rest is the committed file


@pytest.mark.e2e
def test_bench_cnn_quick_runs_a_preset_through_bench_repro(tmp_path, monkeypatch, capsys):
    """bench_cnn runs each preset through bench_repro (`dvc repro` of a fresh copy, with
    timed stages): one run shows both work and that run_all reports both. On a CPU that
    emulates bf16 (made so here), it says so before the preset's hours-long run."""
    from benchmarks import bench_cnn
    from mnist_pipeline import runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)

    # One preset: the other goes through the same code, and each is a whole pipeline.
    assert list(bench_cnn.TARGETS) == ["cnn-fast", "cnn-best"]
    # One full batch of the preset's 256: its bf16 steps are the slow part on a CPU that
    # emulates bf16 (AVX2 only), and more rows show nothing more.
    rows = (256, 64, 10)
    results = bench_cnn.run(None, tmp_path, 0, rows, quick=True, presets=("cnn-fast",))
    assert [r["preset"] for r in results] == ["cnn-fast"]
    out = capsys.readouterr().out
    assert out.count("bench_cnn: warning: cnn-fast: train.precision: bf16 on this CPU") == 1
    for r in results:
        assert r["epochs"] == 1
        assert r["stages_run"] == ["fetch", "prepare", "train", "evaluate", "export"]
        assert 0 <= r["test_accuracy"] <= 1
        assert r["train_stage_wall_s"] > r["train_seconds"] > 0  # the stage's own clock
        assert r["repro_seconds"] > r["train_stage_wall_s"] and r["evaluate_seconds"] > 0
        assert r["met"] is False  # one epoch on 256 synthetic images misses the target
    lines = bench_cnn.summary_lines(results)
    assert [what.split(" ")[0] for what, _, _ in lines] == ["cnn-fast"]
    assert all("(target missed)" in measured for _, measured, _ in lines)
    repro_lines = run_all.summary({"threads": 1, "repro": results[0]})
    assert any(what.startswith("dvc repro") for what, _, _ in repro_lines)
    assert list(tmp_path.iterdir()) == []  # the throwaway copy is gone


def test_bench_reference_trains_the_published_recipe_and_reports_the_ratio(tiny_data):
    from benchmarks import bench_reference

    net = bench_reference.Net()
    assert [p.shape[0] for p in net.parameters()] == [32, 32, 64, 64, 128, 128, 10, 10]
    assert net(torch.zeros(2, 1, 28, 28)).exp().sum(dim=1).allclose(torch.ones(2))
    result = bench_reference.run(tiny_data, epochs=2)
    assert [r["epoch"] for r in result["epochs"]] == [1, 2]
    assert result["train_rows"] == TINY_ROWS[0] and result["test_rows"] == TINY_ROWS[2]
    best = result["epochs"][result["best_epoch"] - 1]
    assert (
        result["best_test_accuracy"]
        == best["test_accuracy"]
        == max(r["test_accuracy"] for r in result["epochs"])
    )
    assert result["seconds_to_best"] == best["train_s"] > 0
    cnn = [{"preset": "cnn-fast", "train_stage_wall_s": result["seconds_to_best"] / 4}]
    cnn[0]["test_accuracy"] = 0.5
    lines = bench_reference.summary_lines(result, cnn)
    assert len(lines) == 2 and "= 1/4.0" in lines[1][1] and lines[1][2] == "<= 1/12"
    assert run_all.summary({"threads": 1, "reference": result})[-1] == lines[0]
