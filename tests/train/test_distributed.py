"""Data-parallel training with torchrun on CPU (gloo, 127.0.0.1 only): two ranks train
exactly like one process with the global batch, only rank 0 writes, and a failing
rank ends the run at once with its own error."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_pipeline.config.params import load_params
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.model.checkpoint import load_checkpoint
from mnist_pipeline.testing.configs import complete_params, distributed_config
from mnist_pipeline.testing.dvc_repo import read_json, run, set_params, stages_run
from mnist_pipeline.train.distributed import Rank, current_rank, rank_device, torchrun_args
from mnist_pipeline.train.loop import batch_starts
from mnist_pipeline.train.run import TrainOutputs
from mnist_pipeline.train.run import run_stage as train_stage
from tests.support import REPO, SRC, python_env

# 300 train rows in batches of 64: four full batches and one of 44, split 22/22.
BASE = {
    "seed": 5,
    "model": {"name": "mlp", "hidden_sizes": [16], "dropout": 0.0},
    "train": {"device": "cpu", "epochs": 3, "batch_size": 64, "threads": 1},
}
SGD = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}
CPU = torch.device("cpu")
# With shifts: each rank applies its slice of the global batch's draws.
ADAMW = {
    "optimizer": "adamw",
    "lr": 0.01,
    "schedule": "onecycle",
    "label_smoothing": 0.1,
    "augment": {"shift_px": 2},
}


def _train(tmp_path: Path, data: Path, params: dict, out: str = "out", env_extra=None):
    params_file = tmp_path / f"{out}.yaml"
    params_file.write_text(complete_params(params))
    model, live = tmp_path / out / "model.pt", tmp_path / out / "live"
    argv = [
        sys.executable,
        str(REPO / "stages" / "train.py"),
        "--params",
        str(params_file),
        "--data",
        str(data),
        "--model",
        str(model),
        "--log-dir",
        str(live),
    ]
    env = python_env(**(env_extra or {}))
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    return subprocess.Popen(argv, env=env, cwd=tmp_path, **pipes), model, live


def _finish(process: subprocess.Popen, timeout_s: float = 240) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=timeout_s)  # a hang fails the test here
    return process.returncode, stdout, stderr


def _leftovers(tmpdir: Path) -> list[str]:
    """What a run left in its TMPDIR, bar torch's compile cache (shared, reused)."""
    return [p.name for p in tmpdir.iterdir() if not p.name.startswith("torchinductor_")]


def _params(train: dict, **distributed) -> dict:
    params = {**BASE, "train": {**BASE["train"], **train}}
    return {**params, "distributed": distributed} if distributed else params


@pytest.mark.parametrize("num_rows", [0, 1, 7, 64, 101])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_rank_rows_cover_every_row_once(num_rows, world_size):
    shares = [Rank(r, r, world_size).rows(num_rows) for r in range(world_size)]
    rows = [i for share in shares for i in range(num_rows)[share]]
    assert rows == list(range(num_rows))
    assert (
        max(map(len, [range(num_rows)[s] for s in shares]))
        - min(len(range(num_rows)[s]) for s in shares)
        <= 1
    )


def test_batch_starts_drop_a_last_batch_smaller_than_the_world():
    assert list(batch_starts(130, 64, world_size=1)) == [0, 64, 128]
    assert list(batch_starts(129, 64, world_size=1)) == [0, 64]  # one row: dropped
    assert list(batch_starts(130, 64, world_size=4)) == [0, 64]  # 2 rows for 4 ranks
    assert list(batch_starts(132, 64, world_size=4)) == [0, 64, 128]


def test_torchrun_args_for_one_machine_and_for_several():
    one = torchrun_args(distributed_config(nproc_per_node=4), ["train.py", "--x"])
    assert "--standalone" in one and "--nproc-per-node=4" in one and one[-2:] == ["train.py", "--x"]
    cfg = distributed_config(nproc_per_node=2, nnodes=3, rdzv_endpoint="node0:29400", rdzv_id="r7")
    several = torchrun_args(cfg, ["train.py"])
    assert "--standalone" not in several and "--nnodes=3" in several
    assert {"--rdzv-backend=c10d", "--rdzv-endpoint=node0:29400", "--rdzv-id=r7"} <= set(several)


@pytest.mark.parametrize(("threads", "expected"), [(0, "1"), (3, "3")])
def test_launch_sets_the_threads_per_rank_and_a_log_dir(monkeypatch, threads, expected):
    from mnist_pipeline.train import distributed

    calls = []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(distributed.LAUNCHER_PID_ENV, raising=False)
    monkeypatch.setattr(distributed, "usable_cpus", lambda: 2)
    monkeypatch.setattr(distributed, "_run_torchrun", lambda args, world: calls.append(args))
    distributed.launch(distributed_config(nproc_per_node=2), threads, ["train.py"], CPU)
    assert os.environ["OMP_NUM_THREADS"] == expected  # what the workers inherit
    assert os.environ[distributed.LAUNCHER_PID_ENV] == str(os.getpid())
    assert calls[0][0].startswith("--log-dir=") and calls[0][-1] == "train.py"


def test_launch_refuses_more_cpu_processes_than_cores(monkeypatch):
    from mnist_pipeline.train import distributed

    monkeypatch.setattr(distributed, "usable_cpus", lambda: 2)
    monkeypatch.setattr(distributed, "_run_torchrun", lambda args, world: None)
    with pytest.raises(PipelineError, match=r"^distributed.nproc_per_node: 3 processes > the 2 "):
        distributed.launch(distributed_config(nproc_per_node=3), 1, ["train.py"], CPU)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"nproc_per_node": 0}, "nproc_per_node: must be >= 1"),
        ({"nnodes": 2}, "rdzv_endpoint: nnodes is 2, so it must be host:port"),
        ({"nnodes": 2, "rdzv_endpoint": "node0"}, "must be host:port, got 'node0'"),
        ({"rdzv_id": "a b"}, "rdzv_id: letters, digits"),
    ],
)
def test_bad_distributed_config_is_refused(cfg, message):
    with pytest.raises(PipelineError, match=message):
        distributed_config(**cfg)


def test_global_batch_must_split_over_the_ranks(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(complete_params(_params({"batch_size": 63}, nproc_per_node=2)))
    with pytest.raises(PipelineError, match="batch 63 must split evenly over the 2 processes"):
        load_params(path)


def test_rank_comes_from_torchrun_and_must_match_params(monkeypatch):
    assert current_rank(distributed_config(nproc_per_node=2)) == Rank()  # not under torchrun
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert current_rank(distributed_config(nproc_per_node=2)) == Rank(1, 1, 2)
    with pytest.raises(PipelineError, match=r"torchrun started 2 processes, but .* = 4"):
        current_rank(distributed_config(nproc_per_node=4))


def test_rank_device_gives_each_rank_its_own_gpu_or_the_cpu(committed_params):
    two = Rank(1, 1, 2)
    assert rank_device(torch.device("cpu"), two) == torch.device("cpu")
    assert rank_device(torch.device("cuda", 3), Rank()) == torch.device("cuda", 3)  # one process
    with pytest.raises(PipelineError, match="names one GPU, but each of the 2 processes"):
        rank_device(torch.device("cuda", 1), two)
    with pytest.raises(PipelineError, match="mps cannot train with several processes"):
        rank_device(torch.device("mps"), two)
    # The committed global batch splits over 2 ranks (presets/two-processes.yaml).
    assert load_params(committed_params).train.batch_size % 2 == 0


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", [SGD, ADAMW], ids=["sgd-momentum", "adamw-ls-shifts"])
def test_two_ranks_train_like_one_process_with_the_global_batch(tmp_path, prepared, optimizer):
    scratch = tmp_path / "scratch"  # TMPDIR of the run: torchrun must leave nothing there
    scratch.mkdir()
    params = _params(optimizer, nproc_per_node=2)
    two, model2, live2 = _train(tmp_path, prepared, params, "two", {"TMPDIR": str(scratch)})
    # Meanwhile the one-process reference: the train stage in this process.
    (tmp_path / "one.yaml").write_text(complete_params(_params(optimizer)))
    one = TrainOutputs(tmp_path / "one" / "model.pt", tmp_path / "one" / "live")
    train_stage(load_params(tmp_path / "one.yaml"), prepared, one, torch.device("cpu"))
    code2, out2, err2 = _finish(two)
    assert code2 == 0, err2
    assert _leftovers(scratch) == []
    assert out2.count("valid loss") == 4  # rank 0 alone prints: 3 epochs + the last line
    one_model, one_payload = load_checkpoint(tmp_path / "one" / "model.pt")
    two_model, two_payload = load_checkpoint(model2)
    assert two_payload["run"]["world_size"] == 2 and one_payload["run"]["world_size"] == 1
    assert not any(key.startswith("module.") for key in two_payload["state_dict"])
    for name, weight in one_model.state_dict().items():
        other = two_model.state_dict()[name]
        assert (other - weight).norm() <= 1e-5 * weight.norm(), name
    # Every epoch's train and valid loss and accuracy (the curves the log plots).
    for metric in ("loss", "accuracy"):
        one_curve = _curve(tmp_path / "one" / "live" / "plots" / f"{metric}.tsv")
        two_curve = _curve(live2 / "plots" / f"{metric}.tsv")
        assert two_curve == pytest.approx(one_curve, rel=1e-5)


def _curve(path: Path) -> list[float]:
    """The numbers of a training-log TSV (epoch, train, valid), row after row."""
    rows = path.read_text().splitlines()[1:]
    return [float(value) for row in rows for value in row.split("\t")]


@pytest.mark.slow
def test_a_failing_rank_ends_the_run_with_its_error(tmp_path, prepared):
    inject = tmp_path / "inject"
    inject.mkdir()
    # Loaded by every Python process at start-up: rank 1 fails in its first epoch, while
    # rank 0 waits for it in the gradient all-reduce and must not hang there.
    (inject / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    from mnist_pipeline.train import loop\n"
        "    def broken(*args, **kwargs):\n"
        "        raise ValueError('rank 1 ran out of luck')\n"
        "    loop.train_one_epoch = broken\n"
    )
    params = _params({**SGD, "epochs": 500}, nproc_per_node=2)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {"PYTHONPATH": f"{inject}{os.pathsep}{SRC}", "TMPDIR": str(scratch)}
    process, _, _ = _train(tmp_path, prepared, params, env_extra=env)
    code, _, stderr = _finish(process, timeout_s=120)
    assert code == 1 and _leftovers(scratch) == []
    last_line = stderr.strip().splitlines()[-1]
    assert last_line == "train.py: error: rank 1 of 2 failed: ValueError: rank 1 ran out of luck"
    assert not list((tmp_path / "out").rglob("*"))  # not even temporary files


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_machines_meet_at_the_c10d_rendezvous(tmp_path, prepared):
    """Two launchers (one per "machine", here both on 127.0.0.1) with nnodes 2; each is
    given its own output paths so we can see that only the rank-0 machine writes."""
    endpoint = f"127.0.0.1:{_free_port()}"
    params = _params(SGD, nnodes=2, rdzv_endpoint=endpoint, timeout_s=60)
    first = _train(tmp_path, prepared, params, "first")
    second = _train(tmp_path, prepared, params, "second")
    results = [_finish(first[0]), _finish(second[0])]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    written = [model.exists() and live.exists() for _, model, live in (first, second)]
    assert sorted(written) == [False, True]
    _, payload = load_checkpoint(first[1] if written[0] else second[1])
    assert payload["run"]["world_size"] == 2


@pytest.mark.e2e
def test_dvc_repro_with_two_processes_then_evaluate(reproduced_copy):
    repo = reproduced_copy("distributed")  # tests/conftest.py: data prepared, one process
    set_params(repo, {"distributed": {"nproc_per_node": 2}})
    result = run(repo, "dvc", "repro")
    assert stages_run(result.stdout) == ["train", "evaluate", "export"]
    assert "torchrun --nproc-per-node=2" in result.stdout
    _, payload = load_checkpoint(repo / "models" / "model.pt")
    assert payload["run"]["world_size"] == 2
    assert read_json(repo / "metrics" / "evaluate.json")["test"]["accuracy"] > 0.5
