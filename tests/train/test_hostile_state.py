"""Hostile or inconsistent training states (`.train_state/state.pt`): a state whose key
matches but whose contents cannot continue this run is removed with one line saying why,
and training starts fresh, instead of failing every later `dvc repro` the same way (or
crashing). The size and archive bounds apply before torch.load."""

import dataclasses
import io
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest
import torch

from mnist_pipeline.model.networks import InputSpec, build_model
from mnist_pipeline.runtime import configure_torch
from mnist_pipeline.testing.bounds import MB
from mnist_pipeline.testing.configs import complete_params, model_config, train_config
from mnist_pipeline.testing.holds import kill_train_after_epoch
from mnist_pipeline.testing.synthetic import make_images
from mnist_pipeline.train import resume
from mnist_pipeline.train.distributed import SINGLE_PROCESS
from mnist_pipeline.train.loop import fit, state_expectation
from tests.support import REPO, python_env

SPEC = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.2, pixel_std=0.3)
MODEL = model_config(hidden_sizes=(16,), dropout=0.0)
CONFIG = train_config(device="cpu", epochs=3, batch_size=32, lr=3e-3, manual_mlp_step=False)
KEY = {"params train": "p", "data": "d"}


@pytest.fixture(scope="module")
def run():
    """(data, the states an uninterrupted run saved after each epoch, its final weights)."""
    images, labels = make_images(192, seed=1)
    data = (images[:160], labels[:160]), (images[160:], labels[160:])
    configure_torch(0, threads=1, device=torch.device("cpu"))
    model = build_model(MODEL, SPEC)
    states: list[resume.TrainState] = []
    fit(model, *data, CONFIG, seed=0, save_state=states.append)
    return data, states, model.state_dict()


def expected(data) -> resume.Expected:
    return state_expectation(build_model(MODEL, SPEC), CONFIG, len(data[0][1]), 1)


def _nan_weights(state):
    weights = {k: v.clone() for k, v in state.model.items()}
    weights["2.weight"][0, 0] = float("nan")
    return dataclasses.replace(state, model=weights)


def _other_shapes(state):
    other = build_model(model_config(hidden_sizes=(8,), dropout=0.0), SPEC).state_dict()
    return dataclasses.replace(state, model=other)


def _stride0_optimizer(state):
    optimizer = {**state.optimizer, "state": {}}
    for index, slot in state.optimizer["state"].items():
        optimizer["state"][index] = {
            k: (torch.zeros(1).expand(v.shape) if v.dim() else v) for k, v in slot.items()
        }
    return dataclasses.replace(state, optimizer=optimizer)


def _optimizer_shapes(state):
    optimizer = {**state.optimizer, "state": dict(state.optimizer["state"])}
    slot = dict(optimizer["state"][0])
    slot["exp_avg"] = torch.zeros(7, 7)
    optimizer["state"][0] = slot
    return dataclasses.replace(state, optimizer=optimizer)


def _step_count(state):
    optimizer = {**state.optimizer, "state": dict(state.optimizer["state"])}
    optimizer["state"][0] = {**optimizer["state"][0], "step": torch.tensor(64.0)}
    return dataclasses.replace(state, optimizer=optimizer)


CASES = {
    "NaN weights": (_nan_weights, "tensor state.model.2.weight holds NaN or infinite values"),
    "an epoch past the last": (
        lambda s: dataclasses.replace(s, epoch=99),
        "epoch 99 is not in 1..3",
    ),
    "epoch zero": (lambda s: dataclasses.replace(s, epoch=0), "epoch 0 is not in 1..3"),
    "a short history": (
        lambda s: dataclasses.replace(s, history=s.history[:-1]),
        "its history does not have 2 epochs",
    ),
    "weights of another shape": (
        _other_shapes,
        "its model weights are not this model's (names, shapes or dtypes differ)",
    ),
    "stride-0 optimizer tensors": (_stride0_optimizer, "is a view of 4 stored bytes"),
    "optimizer tensors of no parameter's shape": (
        _optimizer_shapes,
        "its optimizer's exp_avg has shape [7, 7], no parameter's",
    ),
    "an impossible step count": (_step_count, "its optimizer has taken 64 steps, not 10"),
    "a NaN best loss": (
        lambda s: dataclasses.replace(s, best_loss=float("nan")),
        "best_loss nan is not a number",
    ),
    "a generator state of the wrong size": (
        lambda s: dataclasses.replace(s, data_order_rng=torch.zeros(3, dtype=torch.uint8)),
        "data_order_rng is not a generator state",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_inconsistent_state_is_removed_and_training_starts_fresh(
    run, tmp_path, case, monkeypatch
):
    data, states, final_weights = run
    change, problem = CASES[case]
    resume.write_state(tmp_path, KEY, change(states[1]), {"train_seconds": 1.0})
    state, extra, why = resume.read_state(tmp_path, KEY, expected(data))
    assert (state, extra) == (None, {})
    assert problem in why and why.endswith("removed it, starting fresh") and "\n" not in why
    # The stage's path: prepare removes the file and a fresh fit is the uninterrupted run.
    prepared = _prepare(tmp_path, data, monkeypatch)
    assert prepared.state is None and prepared.message == why
    assert not (tmp_path / resume.STATE_FILE).exists()
    configure_torch(0, threads=1, device=torch.device("cpu"))
    model = build_model(MODEL, SPEC)
    fit(model, *data, CONFIG, seed=0, resume=prepared.state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in final_weights.items())


def test_a_consistent_state_still_resumes(run, tmp_path):
    data, states, _ = run
    resume.write_state(tmp_path, KEY, states[1], {"train_seconds": 1.0})
    state, _, why = resume.read_state(tmp_path, KEY, expected(data))
    assert state is not None and state.epoch == 2 and why == ""


def test_a_state_over_the_size_bound_is_not_loaded(run, tmp_path):
    data, states, _ = run
    limit = expected(data).max_bytes()
    padded = dataclasses.replace(states[1], history=[*states[1].history])
    resume.write_state(tmp_path, KEY, padded, {"pad": torch.zeros(limit // 4)})
    process = psutil.Process()
    rss_before = process.memory_info().rss
    started = time.monotonic()
    state, _, why = resume.read_state(tmp_path, KEY, expected(data))
    assert time.monotonic() - started < 60  # a hang guard, not a speed target
    assert process.memory_info().rss - rss_before < 20 * MB
    assert state is None and f"over the limit of {limit}; removed it" in why


def test_a_deflated_state_is_not_loaded(run, tmp_path):
    data, states, _ = run
    resume.write_state(tmp_path, KEY, states[1], {})
    path = tmp_path / resume.STATE_FILE
    with zipfile.ZipFile(path) as source:
        entries = [(info.filename, source.read(info)) for info in source.infolist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for name, payload in entries:
            target.writestr(name, payload)
    path.write_bytes(buffer.getvalue())
    state, _, why = resume.read_state(tmp_path, KEY, expected(data))
    assert state is None and "is compressed; torch.save stores entries uncompressed" in why


def _prepare(state_dir: Path, data, monkeypatch) -> resume.Resume:
    """resume.prepare as the stage calls it, with the key the state was written under."""
    monkeypatch.setattr(resume, "run_key", lambda *args: KEY)
    return resume.prepare(
        state_dir,
        {"distributed": {"nnodes": 1}},
        state_dir / "manifest.json",
        torch.device("cpu"),
        SINGLE_PROCESS,
        0.0,
        expected(data),
    )


# --- the train stage, stopped after its first epoch, then given a broken state --------------

STAGE_PARAMS = """
model: {name: mlp, hidden_sizes: [16], dropout: 0.0}
train: {device: cpu, epochs: 3, batch_size: 50, threads: 1, optimizer: adam,
        manual_mlp_step: false}
"""


@pytest.mark.slow
def test_the_train_stage_replaces_a_broken_state_instead_of_crashing(tmp_path, prepared):
    """Stride-0 optimizer tensors crashed torch's Adam step (SIGSEGV) on every later run."""
    params = tmp_path / "params.yaml"
    params.write_text(complete_params(STAGE_PARAMS))
    argv = [
        str(REPO / "stages" / "train.py"),
        *("--params", str(params), "--data", str(prepared)),
        *("--model", str(tmp_path / "model.pt"), "--log-dir", str(tmp_path / "log")),
        *("--state-dir", str(tmp_path / "state")),
    ]
    env = python_env(PYTHONUNBUFFERED="1")
    # Killed after the line of epoch 1 (its state is saved before the line).
    kill_train_after_epoch(argv, 1, env)
    state_file = tmp_path / "state" / resume.STATE_FILE
    payload = torch.load(state_file, weights_only=True)  # the key stays this run's
    for slot in payload["state"]["optimizer"]["state"].values():
        slot["exp_avg"] = torch.zeros(1).expand(slot["exp_avg"].shape)
    torch.save(payload, state_file)

    result = subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if "removed it, starting fresh" in line]
    assert len(notes) == 1 and "is a view of 4 stored bytes" in notes[0], result.stdout
    assert (tmp_path / "model.pt").is_file() and not state_file.exists()
