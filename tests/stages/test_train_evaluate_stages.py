"""The train and evaluate stage scripts on a tiny prepared data set: they round-trip,
and bad input ends in one stderr line, a non-zero exit and no output.

The round trip and one bad param run the scripts as subprocesses, as DVC runs them; the
other cases call the same script's parser and `main` through `run_stage` in this process
(the same one-line/exit-1 contract, without a Python and torch start each).
"""

import contextlib
import io
import json
import re
import subprocess
import sys

import pytest
import torch
import yaml

from mnist_pipeline.model.checkpoint import load_checkpoint
from mnist_pipeline.testing.configs import complete_params
from tests.support import REPO, load_script, python_env

pytestmark = pytest.mark.slow  # every test trains a model, some in a subprocess

FIGURE_KINDS = ("confusion", "reliability", "uncertainty", "worst")
TEST_ROWS = 60  # the `prepared` fixture's test split
PARAMS = """
seed: 3
model: {name: mlp, hidden_sizes: [16], dropout: 0.2}
train: {device: cpu, epochs: 2, batch_size: 50, threads: 1, optimizer: adamw, lr: 0.003}
evaluate: {device: cpu, mc_samples: 3, worst_examples: 4}
"""


@pytest.fixture(autouse=True)
def torch_settings_restored():
    """A stage configures torch for its process (threads, deterministic kernels, the
    seed): put this test process's settings back after each test."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_rng_state(rng)


def _stage(name, tmp_path, params_text, *args, subprocess_run=False):
    """Run stages/NAME.py with a params file of `params_text` and `args`: in a subprocess,
    or its `main` through `run_stage` in this process."""
    params = tmp_path / "params.yaml"
    params.write_text(complete_params(params_text))
    argv = ["--params", str(params), *args]
    if subprocess_run:
        command = [sys.executable, str(REPO / "stages" / f"{name}.py"), *argv]
        return subprocess.run(
            command, env=python_env(), capture_output=True, text=True, timeout=300, check=False
        )
    stage = load_script(f"stages/{name}.py")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = stage.run_stage(stage.main, stage.parser, argv)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def _train(tmp_path, prepared, params_text=PARAMS, subprocess_run=False):
    model, live = tmp_path / "models" / "model.pt", tmp_path / "metrics" / "train"
    args = ["--data", str(prepared), "--model", str(model), "--log-dir", str(live)]
    args += ["--timings", str(tmp_path / "logs" / "timings.json")]
    return _stage("train", tmp_path, params_text, *args, subprocess_run=subprocess_run), model, live


def _evaluate(tmp_path, prepared, model, params_text=PARAMS, subprocess_run=False):
    metrics, plots = tmp_path / "metrics" / "evaluate.json", tmp_path / "metrics" / "evaluate"
    args = [
        "--data",
        str(prepared),
        "--model",
        str(model),
        "--metrics",
        str(metrics),
        "--tables",
        str(plots),
        "--figures",
        str(plots.parent / "figures"),
    ]
    result = _stage("evaluate", tmp_path, params_text, *args, subprocess_run=subprocess_run)
    return result, metrics, plots


def test_train_then_evaluate_round_trip(tmp_path, prepared):
    result, model, live = _train(tmp_path, prepared, subprocess_run=True)
    assert result.returncode == 0, result.stderr
    assert "valid loss" in result.stdout  # printed each epoch, as the tutorial does
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["saved_epoch"] == 2 and summary["epochs_run"] == 2
    assert summary["lowest_valid_loss_epoch"] in (1, 2)
    losses = [
        float(row.split("\t")[2]) for row in (live / "plots/loss.tsv").read_text().split("\n")[1:-1]
    ]
    saved = f"the weights after epoch 2 (the last; valid loss {losses[1]:.4f})"
    assert f"train: wrote {model}: {saved}" in result.stdout
    assert set(summary["train"]) == {"loss", "accuracy"}
    loss_rows = (live / "plots" / "loss.tsv").read_text().splitlines()
    assert loss_rows[0].split("\t") == ["epoch", "train", "valid"]
    assert [row.split("\t")[0] for row in loss_rows[1:]] == ["1", "2"]  # epochs count from 1
    lr_rows = (live / "plots" / "lr.tsv").read_text().splitlines()
    assert lr_rows[0] == "epoch\tlr" and len(lr_rows) == 1 + 2 * 6  # every step: 300 / 50
    assert not (live / "timings.json").exists()  # not a result: outside what DVC tracks
    timings = json.loads((tmp_path / "logs" / "timings.json").read_text())
    assert len(timings["epoch_seconds"]) == 2 and timings["train_seconds"] > 0
    _, payload = load_checkpoint(model)
    assert payload["run"]["epochs_run"] == 2 and payload["run"]["threads"] == 1
    assert payload["params"]["train"]["epochs"] == 2

    result, metrics, plots = _evaluate(tmp_path, prepared, model, subprocess_run=True)
    assert result.returncode == 0, result.stderr
    values = json.loads(metrics.read_text())
    assert set(values) == {"valid", "test"}
    assert {
        "accuracy",
        "macro_f1",
        "top2_accuracy",
        "ece",
        "brier",
        "mc_accuracy",
        "mc_mutual_info_mean",
        "temperature",  # evaluate.calibrate is on in the committed params
        "ece_uncalibrated",
        "loss_uncalibrated",
    } <= set(values["test"])
    assert values["test"]["temperature"] == values["valid"]["temperature"] > 0
    assert all(isinstance(v, float) for split in values.values() for v in split.values())
    tables = [
        "predictions_test.csv",
        "confusion_test.csv",
        "per_class_test.csv",
        "per_class_valid.csv",
    ]
    assert sorted(p.name for p in plots.iterdir()) == sorted(tables)
    splits = ("test", "valid")
    pngs = [f"{name}_{split}.png" for name in FIGURE_KINDS for split in splits]
    pngs += [f"confusion_{split}_normalized.png" for split in splits]
    assert sorted(p.name for p in (plots.parent / "figures").iterdir()) == sorted(pngs)
    header, *rows = (plots / "predictions_test.csv").read_text().splitlines()
    assert header == "label,predicted,confidence" and len(rows) == TEST_ROWS
    accuracy = sum(row.split(",")[0] == row.split(",")[1] for row in rows) / len(rows)
    assert accuracy == pytest.approx(values["test"]["accuracy"])
    assert all(re.fullmatch(r"\d,\d,[01]\.\d{4}", row) for row in rows)
    _assert_declared_metrics_hold_signal_only(tmp_path)


# Parts of a metric's name that mark it as bookkeeping, not a result of the model.
NOT_SIGNAL = ("seconds", "time", "step", "lr")


def _assert_declared_metrics_hold_signal_only(root):
    """Every metrics file dvc.yaml declares (as written under `root`) holds results only,
    each once: no timings, learning rate or step counter, no `nll` (equal to `loss`), and
    the validation numbers in evaluate.json alone."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = [  # of the stages this test runs (export has its own tests)
        path if isinstance(path, str) else next(iter(path))
        for name, stage in stages.items()
        if name in ("train", "evaluate")
        for path in stage.get("metrics", [])
    ]
    assert sorted(declared) == ["metrics/evaluate.json", "metrics/train/metrics.json"]
    names_by_file = {path: _leaf_names(json.loads((root / path).read_text())) for path in declared}
    for path, names in names_by_file.items():
        for name in names:
            assert not any(part in name for part in NOT_SIGNAL), f"{path}: {name}"
            assert "nll" not in name, f"{path}: {name} duplicates loss"
    all_names = [name for names in names_by_file.values() for name in names]
    assert len(all_names) == len(set(all_names)), "a metric in two files"
    train_names = names_by_file["metrics/train/metrics.json"]
    assert not any(name.startswith("valid.") for name in train_names)


def _leaf_names(tree, prefix=""):
    names = []
    for key, value in tree.items():
        if isinstance(value, dict):
            names += _leaf_names(value, f"{prefix}{key}.")
        else:
            names.append(f"{prefix}{key}")
    return names


def test_evaluate_without_dropout_says_so(tmp_path, prepared):
    no_dropout = PARAMS.replace("dropout: 0.2", "dropout: 0.0")
    _, model, _ = _train(tmp_path, prepared, no_dropout)
    result, metrics, _ = _evaluate(tmp_path, prepared, model, no_dropout)
    assert result.returncode == 0, result.stderr
    assert "no dropout" in result.stdout
    assert not any(k.startswith("mc_") for k in json.loads(metrics.read_text())["test"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("lr: 0.003", "lr: -1"), "train.lr: must be > 0"),
        (("device: cpu, epochs", "device: cuda:7, epochs"), "train.device: 'cuda:7' asked for"),
        (("name: mlp", "name: resnet"), "model.name: 'resnet' is not one of: mlp, cnn"),
        (("batch_size: 50", "batch_size: 0"), "train.batch_size: must be >= 1"),
        (("dropout: 0.2", "dropout: 1.5"), "model.dropout: must be in [0, 1)"),
        (("optimizer: adamw", "optimizer: lbfgs"), "train.optimizer: 'lbfgs' is not one of"),
        (
            ("threads: 1,", "threads: 1, augment: {hflip: true},"),
            "train.augment.hflip: mnist images must never be mirrored",
        ),
        (("threads: 1,", "threads: 1, augment: {shift_px: 9},"), "train.augment.shift_px: must"),
    ],
)
def test_bad_train_params_fail_fast_with_one_line(tmp_path, prepared, capsys, change, message):
    """The stage's main in this process, as its script runs it (stages/train.py's own
    parser and `run_stage`); the script as a subprocess gives the same line (below)."""
    stage = load_script("stages/train.py")
    params = tmp_path / "params.yaml"
    params.write_text(complete_params(PARAMS.replace(*change)))
    model, live = tmp_path / "models" / "model.pt", tmp_path / "metrics" / "train"
    argv = ["--params", str(params), "--data", str(prepared), "--model", str(model)]
    assert stage.run_stage(stage.main, stage.parser, [*argv, "--log-dir", str(live)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ": error: " in err and message in err, err
    assert not model.parent.exists() and not live.exists()


def test_the_train_script_says_a_bad_param_in_one_line(tmp_path, prepared):
    bad = PARAMS.replace("lr: 0.003", "lr: -1")
    result, model, live = _train(tmp_path, prepared, bad, subprocess_run=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "train.lr: must be > 0" in result.stderr
    assert not model.parent.exists() and not live.exists()


def test_test_time_flip_follows_the_data_set(tmp_path, prepared):
    """The fixture is MNIST: `auto` leaves its digits unmirrored, `true` is refused."""
    _, model, _ = _train(tmp_path, prepared)
    plain, metrics, _ = _evaluate(tmp_path, prepared, model)
    assert plain.returncode == 0, plain.stderr
    expected = json.loads(metrics.read_text())
    auto = PARAMS.replace("worst_examples: 4", "worst_examples: 4, tta_hflip: auto")
    result, metrics, _ = _evaluate(tmp_path, prepared, model, auto)
    assert result.returncode == 0 and json.loads(metrics.read_text()) == expected
    refused = PARAMS.replace("worst_examples: 4", "worst_examples: 4, tta_hflip: true")
    metrics.unlink()
    result, metrics, _ = _evaluate(tmp_path, prepared, model, refused)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "evaluate.tta_hflip: mnist images must never be mirrored" in result.stderr
    assert not metrics.exists()


def test_corrupt_shard_fails_train_with_one_line(tmp_path, prepared):
    broken = tmp_path / "prepared"
    subprocess.run(["cp", "-r", str(prepared), str(broken)], check=True)
    shard = next((broken / "train").glob("shard-*.pt"))
    shard.write_bytes(shard.read_bytes()[:-10])
    result, model, _ = _train(tmp_path, broken)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "dvc repro prepare" in result.stderr and not model.exists()


def test_mismatched_or_corrupt_checkpoint_fails_evaluate(tmp_path, prepared):
    _, model, _ = _train(tmp_path, prepared)
    payload = torch.load(model, weights_only=True)
    payload["model_config"]["hidden_sizes"] = [8]
    torch.save(payload, model)
    result, metrics, plots = _evaluate(tmp_path, prepared, model)
    assert result.returncode == 1 and "weights do not match the model config" in result.stderr
    assert result.stderr.count("\n") == 1 and not metrics.exists() and not plots.exists()
    assert not (plots.parent / "figures").exists()
    model.write_bytes(b"garbage")
    result, _, _ = _evaluate(tmp_path, prepared, model)
    assert result.returncode == 1 and "not a readable checkpoint" in result.stderr


def test_training_that_diverges_leaves_no_logs_or_checkpoint(tmp_path, prepared):
    diverging = PARAMS.replace("optimizer: adamw, lr: 0.003", "optimizer: sgd, lr: 1.0e+30")
    result, model, live = _train(tmp_path, prepared, diverging)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "training diverged" in result.stderr
    assert not model.exists() and not live.parent.exists()  # no temporary dirs either
