"""The compact experiments table (`make exps`): at most 120 columns for 20 experiments,
test accuracy with its 95% interval, McNemar's verdict against HEAD, the params that
differ, and nothing from a file reaches the terminal as a control sequence."""

import numpy as np
import pytest
from scipy.stats import binomtest

from mnist_pipeline.experiments.table import (
    MAX_WIDTH,
    Record,
    accuracy_cell,
    format_table,
    params_cell,
    records_from_exp_show,
    verdict_cell,
)
from mnist_pipeline.review.significance import wilson_interval

BASE_PARAMS = {
    "seed": 0,
    "model": {"dropout": 0.2, "hidden_sizes": [128, 256]},
    "train": {"lr": 0.004, "batch_size": 256},
    "evaluate": {"batch_size": 1000},
}


def _correct(right: int, total: int) -> np.ndarray:
    return np.arange(total) < right


@pytest.mark.parametrize(("right", "total"), [(8970, 10000), (0, 50), (50, 50), (7, 9)])
def test_wilson_interval_matches_scipy(right, total):
    expected = binomtest(right, total).proportion_ci(0.95, method="wilson")
    low, high = wilson_interval(right, total)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_accuracy_cell_gives_the_interval_in_points():
    assert accuracy_cell(_correct(8970, 10000), 0.897) == "89.70% [89.09, 90.28]"
    assert accuracy_cell(None, 0.897) == "89.70%"  # no per-image results: no interval
    assert accuracy_cell(None, None) == "—"


def test_verdict_cell_follows_mcnemar_on_the_same_images():
    baseline = _correct(800, 1000)
    better = baseline.copy()
    better[800:850] = True  # 50 more right, none lost: p far below 0.05
    assert verdict_cell(baseline, better) == "+5.00 p<0.0001 better"
    worse = baseline.copy()
    worse[:3] = False  # 3 fewer: within noise
    assert verdict_cell(baseline, worse) == "-0.30 p=0.25 n.s."
    assert verdict_cell(baseline, baseline) == "+0.00 p=1 n.s."
    assert verdict_cell(baseline, _correct(5, 10)) == "other test images"
    assert verdict_cell(None, better) == "no baseline results"


def test_params_cell_names_only_what_differs_by_the_shortest_clear_key():
    changed = {
        **BASE_PARAMS,
        "model": {"dropout": 0.3, "hidden_sizes": [64]},
        "train": {"lr": 0.004, "batch_size": 64},
    }
    assert params_cell(BASE_PARAMS, changed) == (
        "dropout=0.3 hidden_sizes=[64] train.batch_size=64"  # batch_size is in two sections
    )
    assert params_cell(BASE_PARAMS, BASE_PARAMS) == "(same)"


def _record(name: str, accuracy: float, **params) -> Record:
    merged = {**BASE_PARAMS, "train": {**BASE_PARAMS["train"], **params}}
    return Record(name, "f" * 40, "done", merged, accuracy)


def test_twenty_experiments_with_long_names_and_params_fit_120_columns():
    baseline = Record("HEAD", "a" * 40, "done", BASE_PARAMS, 0.8)
    base_correct = _correct(800, 1000)
    rows = []
    for index in range(20):
        long = f"a-very-long-experiment-name-number-{index}"
        record = _record(long, 0.8, lr=index / 1000, batch_size=2**index)
        rows.append((record, _correct(790 + index, 1000)))
    table = format_table(baseline, base_correct, rows, hidden=3)
    lines = table.splitlines()
    assert len(lines) == 1 + 1 + 20 + 1
    assert max(len(line) for line in lines) <= MAX_WIDTH
    assert lines[1].startswith("HEAD aaaaaaa") and "80.00% [77.41, 82.36]" in lines[1]
    assert lines[2].startswith("a-very-long-experiment-…")  # cut, and said so
    assert "-1.00 p=0.002 worse" in lines[2] and "train.batch_size=1 lr=0.0" in lines[2]
    assert lines[-1] == "(3 more, of lower test accuracy: --limit 23)"


def test_control_characters_from_files_never_reach_the_terminal():
    baseline = Record("HEAD", "a" * 40, "done", BASE_PARAMS, None)
    evil = {**BASE_PARAMS, "seed": "/data\x1b]0;pwned\x07\n"}
    rows = [(Record("x\x1b[2Jy", "b" * 40, "done", evil, 0.5), None)]
    table = format_table(baseline, None, rows)
    assert "\x1b" not in table and "\x07" not in table
    assert "x?[2Jy" in table and "seed=/data?]0;pwned??" in table
    assert table.count("\n") == 3  # the newline in the value did not start a line


def test_records_from_exp_show_take_the_baseline_and_the_state_of_each_experiment():
    def data(accuracy, lr):
        return {
            "params": {"params.yaml": {"data": {"train": {"lr": lr}}}},
            "metrics": {"metrics/evaluate.json": {"data": {"test": {"accuracy": accuracy}}}},
        }

    shown = [
        {"rev": "workspace", "data": data(0.1, 1), "experiments": None},
        {
            "rev": "c" * 40,
            "data": data(0.8, 0.004),
            "experiments": [
                {"name": "done-one", "executor": None, "revs": [{"rev": "d" * 40, **_d(data)}]},
                {
                    "name": "waiting",
                    "executor": {"state": "queued"},
                    "revs": [{"rev": "e" * 40, "data": {"params": {}}}],
                },
            ],
        },
    ]
    baseline, experiments = records_from_exp_show(shown, "c" * 40)
    assert baseline.test_accuracy == 0.8 and baseline.params == {"train": {"lr": 0.004}}
    assert [(e.name, e.state, e.rev[:1], e.test_accuracy) for e in experiments] == [
        ("done-one", "done", "d", 0.9),
        ("waiting", "queued", "", None),
    ]


def _d(data):
    return {"data": data(0.9, 0.01)}
