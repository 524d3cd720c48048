"""Resuming training bit for bit: `fit` continued from any epoch's saved state ends
exactly where an uninterrupted call ends, and the train stage killed at an epoch and
started again writes the checkpoint of an uninterrupted run."""

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_pipeline.config.params import load_params
from mnist_pipeline.model.networks import InputSpec, build_model
from mnist_pipeline.runtime import configure_torch
from mnist_pipeline.testing.configs import complete_params, model_config, train_config
from mnist_pipeline.testing.dvc_repo import (
    commit_all,
    env_for,
    lock_out_md5,
    read_json,
    run,
    set_params,
    stages_run,
)
from mnist_pipeline.testing.holds import hold_after_epoch, hold_after_epoch_sitecustomize
from mnist_pipeline.testing.synthetic import make_images
from mnist_pipeline.train import resume
from mnist_pipeline.train.augment import Augment
from mnist_pipeline.train.loop import fit, state_expectation
from mnist_pipeline.train.run import TrainOutputs
from mnist_pipeline.train.run import run_stage as train_stage
from tests.support import REPO, python_env

SPEC = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.2, pixel_std=0.3)
EPOCHS = 5
SETTINGS = {
    # The hand-written step (one flat parameter tensor), onecycle, dropout.
    "manual step": (
        model_config(hidden_sizes=(32,), dropout=0.2),
        train_config(device="cpu", epochs=EPOCHS, batch_size=32, lr=3e-3, schedule="onecycle"),
    ),
    # Autograd, SGD with momentum, a step schedule, early stopping with its best state.
    "autograd": (
        model_config(hidden_sizes=(32, 16), dropout=0.2),
        train_config(
            device="cpu",
            epochs=EPOCHS,
            batch_size=32,
            optimizer="sgd",
            momentum=0.9,
            lr=0.2,
            schedule="step",
            step_epochs=2,
            early_stopping_patience=2,
            manual_mlp_step=False,
        ),
    ),
    "cnn": (
        model_config(name="cnn", conv_channels=(4,), hidden_sizes=(16,), dropout=0.2),
        train_config(device="cpu", epochs=3, batch_size=50, lr=3e-3, schedule="cosine"),
    ),
    # As the CNN presets train: bf16, pooled blocks of two convs, shifts and flips.
    "augmented-cnn": (
        model_config(name="cnn", conv_channels=(4, 8), block_convs=2, hidden_sizes=()),
        train_config(device="cpu", epochs=3, batch_size=50, lr=3e-3, precision="bf16"),
    ),
}
AUGMENTS = {"augmented-cnn": Augment(shift_px=2, hflip=True)}


@pytest.fixture(scope="module")
def data():
    images, labels = make_images(400, seed=1)
    return (images[:320], labels[:320]), (images[320:], labels[320:])


def _fit(data, setting, resume_from=None, save_state=None):
    model_cfg, cfg = SETTINGS[setting]
    configure_torch(0, threads=1, device=torch.device("cpu"))
    model = build_model(model_cfg, SPEC)
    if resume_from is not None:
        torch.manual_seed(12345)  # the resumed run must not depend on the RNG it starts with
    augment = AUGMENTS.get(setting)
    result = fit(
        model, *data, cfg, seed=0, resume=resume_from, save_state=save_state, augment=augment
    )
    return model, result


def _expected(data, setting):
    model_cfg, cfg = SETTINGS[setting]
    return state_expectation(build_model(model_cfg, SPEC), cfg, len(data[0][1]), 1)


def _without_timings(history):
    return [{k: v for k, v in log.items() if k != "epoch_seconds"} for log in history]


def _assert_same(a, b):
    (model_a, result_a), (model_b, result_b) = a, b
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    assert _without_timings(result_a.history) == _without_timings(result_b.history)
    assert (result_a.best_epoch, result_a.stopped_early) == (
        result_b.best_epoch,
        result_b.stopped_early,
    )


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_fit_resumed_after_any_epoch_ends_as_an_uninterrupted_run(data, setting, tmp_path):
    plain = _fit(data, setting)
    states: list[resume.TrainState] = []
    saving = _fit(data, setting, save_state=states.append)
    _assert_same(plain, saving)  # saving the state changes nothing
    assert [s.epoch for s in states] == list(range(1, len(states) + 1))
    key = {"params": "p", "data": "d"}
    for state in states:
        # Through the file, as the stage does it (weights_only load of plain containers).
        resume.write_state(tmp_path, key, state, {"train_seconds": 1.5})
        loaded, extra, why = resume.read_state(tmp_path, key, _expected(data, setting))
        assert loaded is not None and why == "" and extra == {"train_seconds": 1.5}
        _assert_same(plain, _fit(data, setting, resume_from=loaded))


def test_a_state_of_another_run_is_never_resumed(data, tmp_path):
    states: list[resume.TrainState] = []
    _fit(data, "manual step", save_state=states.append)
    resume.write_state(tmp_path, {"params train": "a", "data": "d"}, states[0], {})
    expected = _expected(data, "manual step")
    state, _, why = resume.read_state(tmp_path, {"params train": "b", "data": "d"}, expected)
    assert state is None
    assert (
        why == f"{tmp_path / 'state.pt'} is from another run (params train differ); starting fresh"
    )
    (tmp_path / "state.pt").write_bytes(b"truncated")
    state, _, why = resume.read_state(tmp_path, {"params train": "b", "data": "d"}, expected)
    assert state is None and "not a readable training state" in why
    assert why.endswith("starting fresh")
    resume.remove_state(tmp_path)
    assert not tmp_path.exists()
    assert resume.read_state(tmp_path, {}, expected) == (None, {}, "")


def test_run_key_changes_with_params_data_and_runtime(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    cpu = torch.device("cpu")
    key = resume.run_key({"train": {"lr": 1}, "seed": 0}, manifest, cpu, 1)
    assert key == resume.run_key({"seed": 0, "train": {"lr": 1}}, manifest, cpu, 1)
    assert key != resume.run_key({"train": {"lr": 2}, "seed": 0}, manifest, cpu, 1)
    assert key != resume.run_key({"train": {"lr": 1}, "seed": 0}, manifest, cpu, 2)
    manifest.write_text('{"splits": {}}')
    assert key["data"] != resume.run_key({"train": {"lr": 1}, "seed": 0}, manifest, cpu, 1)["data"]


# --- the train stage, killed with SIGKILL and started again ----------------------------------

STAGE_PARAMS = """
seed: 5
model: {{name: mlp, hidden_sizes: [16], dropout: 0.2}}
train: {{device: cpu, epochs: 5, batch_size: 50, threads: 1, lr: 0.003,
         schedule: onecycle, manual_mlp_step: {manual}, early_stopping_patience: 3}}
"""


def _stage_argv(tmp_path: Path, prepared: Path, out_name: str, manual: bool) -> list[str]:
    params = tmp_path / "params.yaml"
    params.write_text(complete_params(STAGE_PARAMS.format(manual=str(manual).lower())))
    out = tmp_path / out_name
    return [
        str(REPO / "stages/train.py"),
        "--params",
        str(params),
        "--data",
        str(prepared),
        "--model",
        str(out / "model.pt"),
        "--log-dir",
        str(out / "log"),
        "--state-dir",
        str(tmp_path / "state"),
    ]


def _env() -> dict[str, str]:
    return python_env(PYTHONUNBUFFERED="1")


def _kill_after_epoch(cmd: list[str], epoch: int, env: dict[str, str], cwd: Path | None = None):
    """Start `cmd`, which holds after the line of `epoch` (mnist_pipeline.testing.holds),
    and SIGKILL it and every process below it once that line is out; return it (ended).
    Whatever happens, nothing is left running: a held process never goes on by itself."""
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if line.startswith(f"epoch {epoch:>3}:"):
                    break
        finally:
            _freeze_and_kill(proc.pid)
            proc.wait(timeout=60)
    return proc


def _freeze_and_kill(pid: int) -> None:
    """SIGKILL `pid` and every process below it, all frozen first, top down: a parent
    killed after its child could react to the child's death meanwhile (`dvc repro`
    would release its lock, and die mid-write: an empty `.dvc/tmp/rwlock`). A stopped
    process cannot start another, so the list taken after the stops is complete."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    frozen = [pid]
    for child in _descendants(pid):  # parents before their children
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGSTOP)
            frozen.append(child)
    for stopped in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGKILL)


def _run_until_epoch(argv: list[str], epoch: int) -> None:
    """Run the stage and SIGKILL it right after the line of `epoch`: its state is that
    epoch's, however fast the machine is."""
    proc = _kill_after_epoch([sys.executable, "-c", hold_after_epoch(epoch), *argv], epoch, _env())
    assert proc.returncode == -signal.SIGKILL


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *argv], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def _tsv_values(live: Path) -> dict[str, list[list[str]]]:
    """Every curve of the training log (epoch column included)."""
    tables = {}
    for path in sorted(live.rglob("*.tsv")):
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        keep = [i for i, name in enumerate(rows[0]) if name not in ("timestamp", "epoch_seconds")]
        tables[str(path.relative_to(live))] = [[row[i] for i in keep] for row in rows]
    return tables


def _summary(live: Path) -> dict[str, object]:
    summary = json.loads((live / "metrics.json").read_text())
    return {k: v for k, v in summary.items() if not k.endswith("seconds")}


@pytest.mark.slow
@pytest.mark.parametrize(("manual", "kill_after"), [(True, 2), (False, 4)])
def test_the_train_stage_killed_after_an_epoch_resumes_bit_for_bit(
    tmp_path, prepared, manual, kill_after
):
    killed = _stage_argv(tmp_path, prepared, "killed", manual)
    # The uninterrupted reference: the same stage, params and data, run in this process.
    a = tmp_path / "uninterrupted"
    params = load_params(tmp_path / "params.yaml")
    outputs = TrainOutputs(a / "model.pt", a / "log", tmp_path / "reference_state")
    train_stage(params, prepared, outputs, torch.device("cpu"))
    assert not outputs.state_dir.exists()  # a completed run deletes its state

    _run_until_epoch(killed, kill_after)
    assert (tmp_path / "state/state.pt").is_file()
    assert not (tmp_path / "killed/model.pt").exists()
    resumed = _run(killed)
    assert f"train: resuming after epoch {kill_after} from " in resumed.stdout
    assert not (tmp_path / "state").exists()

    b = tmp_path / "killed"
    assert (a / "model.pt").read_bytes() == (b / "model.pt").read_bytes()
    assert _summary(a / "log") == _summary(b / "log")
    assert _tsv_values(a / "log") == _tsv_values(b / "log")  # no step missing or twice


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts each rank in a session of its own, so a
    process group kill would miss them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


@pytest.mark.slow
def test_two_processes_killed_after_an_epoch_resume_bit_for_bit(tmp_path, prepared):
    """torchrun with 2 ranks: each rank draws its own dropout masks, so each one's torch
    generator is saved. The launcher and both ranks are killed."""
    # Every process (the launcher, both ranks) holds after the line of epoch 2.
    (tmp_path / "hold").mkdir()
    (tmp_path / "hold/sitecustomize.py").write_text(hold_after_epoch_sitecustomize(2))
    env = python_env(tmp_path / "hold", PYTHONUNBUFFERED="1")
    text = STAGE_PARAMS.format(manual="false") + "distributed: {nproc_per_node: 2}\n"
    runs = {}
    for name in ("uninterrupted", "killed"):
        argv = _stage_argv(tmp_path, prepared, name, manual=False)
        (tmp_path / "params.yaml").write_text(complete_params(text))
        runs[name] = argv
    _run(runs["uninterrupted"])
    _kill_after_epoch([sys.executable, *runs["killed"]], 2, env)
    assert (tmp_path / "state/state.pt").is_file()
    resumed = _run(runs["killed"])
    assert "train: resuming after epoch 2 from " in resumed.stdout, resumed.stdout
    assert not (tmp_path / "state").exists()
    a, b = tmp_path / "uninterrupted", tmp_path / "killed"
    assert (a / "model.pt").read_bytes() == (b / "model.pt").read_bytes()
    assert _tsv_values(a / "log") == _tsv_values(b / "log")


# Runs the stage and holds it right after the line of epoch 2 (reading stdin, which the
# test never writes), so that the test's signal lands there: an event, not a delay.
HOLD_AFTER_EPOCH_2 = """
import runpy, sys
from mnist_pipeline.train import training_log
print_epoch = training_log.print_epoch
def hold(log):
    print_epoch(log)
    if log["epoch"] == 2:
        sys.stdin.readline()
training_log.print_epoch = hold
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_ctrl_c_in_train_says_where_the_progress_is_and_the_next_run_resumes(tmp_path, prepared):
    argv = _stage_argv(tmp_path, prepared, "interrupted", manual=True)
    cmd = [sys.executable, "-c", HOLD_AFTER_EPOCH_2, *argv]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    # A shell without job control starts background commands (a CI script run with `&`)
    # with SIGINT ignored, and children inherit that: Python then installs no Ctrl-C
    # handler. The stage must see SIGINT as a terminal's Ctrl-C delivers it.
    restore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    with subprocess.Popen(cmd, env=_env(), text=True, preexec_fn=restore_sigint, **pipes) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("epoch   2:"):
                proc.send_signal(signal.SIGINT)
                break
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert stderr == (
        f"train.py: interrupted; the last complete epoch is saved in {tmp_path / 'state'}/; "
        "the next `dvc repro` resumes from it (changed train params, data or code start "
        "afresh)\n"
    )
    assert "train: resuming after epoch 2 from" in _run(argv).stdout


@pytest.mark.slow
def test_the_train_stage_starts_fresh_after_a_params_change(tmp_path, prepared):
    argv = _stage_argv(tmp_path, prepared, "killed", manual=True)
    _run_until_epoch(argv, 2)
    params = tmp_path / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.003", "lr: 0.002"))
    result = _run(argv)
    assert "train: resuming" not in result.stdout
    assert "is from another run (params train differ); starting fresh" in result.stdout
    assert not (tmp_path / "state").exists()


@pytest.mark.e2e
def test_dvc_repro_after_a_killed_train_stage_resumes_it(reproduced_copy):
    """`dvc repro` killed (with its train stage) after epoch 2; the next `dvc repro`
    resumes, and a forced uninterrupted re-run of train gives the same checkpoint."""
    repo = reproduced_copy("resume")  # tests/conftest.py: data prepared, 1 epoch trained
    set_params(repo, {"train": {"epochs": 4}})
    # The stages run with PYTHONPATH=src (dvc.yaml): the hold goes in as src's
    # sitecustomize, which Python imports at start.
    (repo / "src/sitecustomize.py").write_text(hold_after_epoch_sitecustomize(2))
    env = env_for(repo)
    env["PYTHONUNBUFFERED"] = "1"
    _kill_after_epoch(["dvc", "repro"], 2, env, cwd=repo)
    (repo / "src/sitecustomize.py").unlink()  # the next runs go on past epoch 2
    assert (repo / ".train_state/state.pt").is_file()

    resumed = run(repo, "dvc", "repro")
    assert "train: resuming after epoch 2 from .train_state" in resumed.stdout
    assert stages_run(resumed.stdout) == ["train", "evaluate", "export"]
    assert not (repo / ".train_state").exists()
    assert "train_state" not in run(repo, "git", "status", "--porcelain").stdout
    commit_all(repo, "resumed run")
    model_md5 = lock_out_md5(repo, "train", "models/model.pt")
    summary = read_json(repo / "metrics/train/metrics.json")
    curves = (repo / "metrics/train/plots/loss.tsv").read_text()
    run(repo, "dvc", "repro", "--force", "--single-item", "train")
    assert (repo / "logs/train/timings.json").is_file()  # for benchmarks, outside git and DVC
    # The uninterrupted run changes nothing that git tracks, dvc.lock included.
    assert run(repo, "git", "status", "--porcelain").stdout == ""
    assert lock_out_md5(repo, "train", "models/model.pt") == model_md5
    assert read_json(repo / "metrics/train/metrics.json") == summary
    assert (repo / "metrics/train/plots/loss.tsv").read_text() == curves  # no epoch twice
    assert summary["epochs_run"] == 4 and curves.count("\n") == 1 + 4
