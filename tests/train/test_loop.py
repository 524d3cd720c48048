"""The training loop: it learns, it is bit-reproducible on CPU, its options work."""

import dataclasses
import subprocess
import sys

import pytest
import torch

from mnist_pipeline import runtime
from mnist_pipeline.data.prepared import load_splits, read_manifest
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.model.checkpoint import load_checkpoint
from mnist_pipeline.model.networks import InputSpec, build_model, input_spec_from_manifest
from mnist_pipeline.runtime import compiled, configure_torch, resolve_device
from mnist_pipeline.testing.configs import make_params, model_config, train_config
from mnist_pipeline.testing.synthetic import make_images
from mnist_pipeline.train.loop import batch_starts
from mnist_pipeline.train.optim import MAX_LR_POINTS, lr_per_step, make_optimizer, make_scheduler
from mnist_pipeline.train.run import TrainOutputs, run_stage, train
from mnist_pipeline.train.training_log import saved_summary

SPEC = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.2, pixel_std=0.3)
FAST = train_config(
    device="cpu",
    epochs=3,
    batch_size=32,
    optimizer="adamw",
    lr=3e-3,
    schedule="onecycle",
    weight_decay=0.01,
)


@pytest.fixture(scope="module")
def data():
    images, labels = make_images(600, seed=1)
    return (images[:500], labels[:500]), (images[500:], labels[500:])


SMALL_MLP = model_config(hidden_sizes=(32,), dropout=0.1)


def _train(data, model_cfg=SMALL_MLP, cfg=FAST, seed=0):
    """Training as the train stage does it, in this process (train.run.train)."""
    params = make_params(model=model_cfg, train=cfg, seed=seed)
    splits = {"train": data[0], "valid": data[1]}
    trained = train(params, splits, SPEC, "mnist", torch.device("cpu"))
    return trained.model, trained.result


def test_the_stage_writes_the_model_that_in_process_training_returns(tmp_path, prepared):
    """train.run.run_stage (the stage, run here in-process) and train.run.train (what the
    benchmarks call) train the same model from the same params."""
    params = make_params(model=SMALL_MLP, train=dataclasses.replace(FAST, epochs=2), seed=5)
    outputs = TrainOutputs(tmp_path / "model.pt", tmp_path / "log", tmp_path / "state")
    run_stage(params, prepared, outputs, torch.device("cpu"))
    assert not outputs.state_dir.exists()  # a completed run removes its state
    assert (outputs.log_dir / "metrics.json").is_file()
    written, checkpoint = load_checkpoint(outputs.model, torch.device("cpu"))
    assert checkpoint["run"]["epochs_run"] == 2

    manifest = read_manifest(prepared)
    data = load_splits(prepared, ("train", "valid"))
    spec = input_spec_from_manifest(manifest)
    trained = train(params, data, spec, manifest["dataset"], torch.device("cpu"))
    expected = trained.model.state_dict()
    assert written.state_dict().keys() == expected.keys()
    for name, tensor in written.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_the_stage_warns_once_when_bf16_is_emulated_here(tmp_path, prepared, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    cfg = dataclasses.replace(FAST, epochs=1, precision="bf16")
    params = make_params(model=SMALL_MLP, train=cfg, seed=5)
    run_stage(
        params, prepared, TrainOutputs(tmp_path / "model.pt", tmp_path / "log"), torch.device("cpu")
    )
    err = capsys.readouterr().err
    assert err.count("train: warning: train.precision: bf16 on this CPU is emulated") == 1
    assert (tmp_path / "model.pt").is_file()  # a warning: the run still trains in bf16


def test_overfits_one_small_batch():
    images, labels = make_images(32, seed=3)
    cfg = dataclasses.replace(FAST, epochs=60, schedule="constant", weight_decay=0.0)
    _, result = _train(((images, labels), (images, labels)), model_config(hidden_sizes=(64,)), cfg)
    assert result.history[-1]["train/accuracy"] == 1.0
    assert result.history[-1]["valid/loss"] < 0.05


def test_learns_the_synthetic_data(data):
    _, result = _train(data)
    assert result.history[-1]["valid/accuracy"] > 0.6
    assert result.history[-1]["valid/loss"] < result.history[0]["valid/loss"]


@pytest.mark.parametrize(
    "model_cfg",
    [
        model_config(hidden_sizes=(32,), dropout=0.2),
        model_config(name="cnn", conv_channels=(4,), hidden_sizes=(), dropout=0.2),
    ],
)
def test_two_cpu_runs_are_bit_identical(data, model_cfg):
    cfg = dataclasses.replace(FAST, epochs=2)
    model_a, result_a = _train(data, model_cfg, cfg)
    model_b, result_b = _train(data, model_cfg, cfg)
    for (name, a), b in zip(
        model_a.state_dict().items(), model_b.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    strip = [{k: v for k, v in log.items() if k != "epoch_seconds"} for log in result_a.history]
    assert strip == [
        {k: v for k, v in log.items() if k != "epoch_seconds"} for log in result_b.history
    ]


def test_a_different_seed_gives_different_weights(data):
    model_a, _ = _train(data, seed=0, cfg=dataclasses.replace(FAST, epochs=1))
    model_b, _ = _train(data, seed=1, cfg=dataclasses.replace(FAST, epochs=1))
    assert not torch.equal(model_a[2].weight, model_b[2].weight)


@pytest.mark.parametrize(
    ("optimizer", "extra"),
    [("sgd", {"momentum": 0.9, "nesterov": True}), ("adam", {}), ("adamw", {})],
)
def test_optimizers(optimizer, extra):
    model = build_model(model_config(hidden_sizes=(8,)), SPEC)
    cfg = dataclasses.replace(FAST, optimizer=optimizer, weight_decay=0.1, **extra)
    opt = make_optimizer(model.parameters(), cfg)
    assert type(opt).__name__.lower() == optimizer
    assert opt.defaults["weight_decay"] == 0.1
    if optimizer == "sgd":
        assert opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"]


def _lrs(schedule, steps=20, **extra):
    model = build_model(model_config(hidden_sizes=(8,)), SPEC)
    cfg = dataclasses.replace(FAST, schedule=schedule, epochs=4, lr=1.0, **extra)
    opt = make_optimizer(model.parameters(), dataclasses.replace(cfg, optimizer="sgd"))
    scheduler = make_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if scheduler:
            scheduler.step()
    return lrs


def test_schedules():
    assert _lrs("constant") == [1.0] * 20
    step = _lrs("step", step_epochs=2, gamma=0.5)
    assert step[:10] == [1.0] * 10 and step[10:] == [0.5] * 10
    cosine = _lrs("cosine")
    assert cosine[0] == 1.0 and cosine == sorted(cosine, reverse=True) and cosine[-1] < 0.01
    onecycle = _lrs("onecycle")
    peak = onecycle.index(max(onecycle))
    assert 0 < peak < 19 and max(onecycle) == pytest.approx(1.0) and onecycle[-1] < 0.01


def test_early_stopping_restores_the_best_epoch(data):
    # A huge constant lr makes validation loss get worse after the first epoch or two.
    cfg = dataclasses.replace(
        FAST,
        epochs=30,
        lr=0.5,
        optimizer="sgd",
        schedule="constant",
        weight_decay=0.0,
        early_stopping_patience=2,
    )
    _, result = _train(data, cfg=cfg)
    assert result.stopped_early and len(result.history) < 30
    losses = [log["valid/loss"] for log in result.history]
    assert result.best_epoch == losses.index(min(losses)) + 1
    assert result.saved_epoch == result.best_epoch  # its weights were restored
    assert len(result.history) == result.best_epoch + 2


def test_divergence_is_a_clear_error(data):
    cfg = dataclasses.replace(FAST, lr=1e30, optimizer="sgd", schedule="constant", weight_decay=0.0)
    with pytest.raises(PipelineError, match=r"training diverged.*lower train.lr"):
        _train(data, cfg=cfg)


def test_last_batch_of_one_row_is_dropped():
    assert list(batch_starts(65, 64)) == [0]
    assert list(batch_starts(66, 64)) == [0, 64]
    assert list(batch_starts(64, 64)) == [0]


def test_cuda_where_there_is_none_is_refused():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(PipelineError, match=r"train.device: 'cuda' asked for.*0 CUDA device"):
        resolve_device("cuda")
    with pytest.raises(PipelineError, match=r"train\.device: 'cuda:3'"):
        resolve_device("cuda:3")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}


def test_kernels_are_deterministic_without_importing_the_compiler():
    """A fresh process (this one may have imported anything): configure_torch turns on
    deterministic kernels, warning only, and leaves torch.compile's inductor unimported,
    seconds of every stage's start."""
    code = (
        "import sys, torch\n"
        "from mnist_pipeline.runtime import configure_torch\n"
        "configure_torch(0, 1, torch.device('cpu'))\n"
        "print(torch.are_deterministic_algorithms_enabled(),"
        " torch.is_deterministic_algorithms_warn_only_enabled(),"
        " 'torch._inductor' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True", "False"]


def test_a_compiled_model_gets_the_kernels_determinism(monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "deterministic", False)
    configure_torch(0, 1, torch.device("cpu"))
    model = torch.nn.Linear(2, 2)
    assert compiled(model) is not model and inductor_config.deterministic is True


def test_bf16_autocast_trains_on_cpu(data):
    # The same params must work on a CPU-only machine: bf16 autocast runs there too.
    cfg = dataclasses.replace(FAST, precision="bf16")
    model, result = _train(data, cfg=cfg)
    assert result.history[-1]["valid/accuracy"] > 0.5
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


def test_bf16_on_a_cpu_without_bf16_kernels_is_warned_about_not_switched(monkeypatch):
    """Emulated bf16 (AVX2-only CPUs) is many times slower than fp32: the run says so
    and how to fix it, and keeps the precision its params ask for."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    warning = runtime.slow_precision_warning(cpu, "bf16", "train.precision")
    assert warning is not None and "set train.precision: fp32 here" in warning
    assert "\n" not in warning
    assert runtime.slow_precision_warning(cpu, "fp32", "train.precision") is None
    assert runtime.slow_precision_warning(cuda, "bf16", "train.precision") is None
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.slow_precision_warning(cpu, "bf16", "train.precision") is None


@pytest.mark.parametrize(
    "cfg",
    [
        dataclasses.replace(
            FAST,
            optimizer="sgd",
            lr=0.05,
            momentum=0.9,
            schedule="constant",
            weight_decay=0.0,
            label_smoothing=0.1,
        ),
        FAST,
    ],
    ids=["sgd-momentum-smoothing", "adamw-onecycle"],
)
def test_hand_written_gradients_train_like_autograd(data, cfg):
    """The default MLP path (manual_mlp_step) against autograd, dropout included: same masks,
    same maths, so the same run up to float rounding."""
    dropout_mlp = model_config(hidden_sizes=(32, 16), dropout=0.3)
    manual, manual_result = _train(data, dropout_mlp, cfg)
    autograd_cfg = dataclasses.replace(cfg, manual_mlp_step=False)
    autograd, autograd_result = _train(data, dropout_mlp, autograd_cfg)
    for ours, reference in zip(manual_result.history, autograd_result.history, strict=True):
        for key in ("train/loss", "valid/loss"):
            assert ours[key] == pytest.approx(reference[key], rel=1e-4), key
    for name, weight in autograd.state_dict().items():
        assert (manual.state_dict()[name] - weight).norm() <= 1e-4 * weight.norm(), name


def test_hand_written_gradients_only_where_they_are_exact():
    from mnist_pipeline.train.distributed import Rank
    from mnist_pipeline.train.step import uses_manual_step

    mlp, single = build_model(SMALL_MLP, SPEC), Rank()
    assert uses_manual_step(mlp, FAST, single)
    assert not uses_manual_step(mlp, dataclasses.replace(FAST, manual_mlp_step=False), single)
    assert not uses_manual_step(mlp, dataclasses.replace(FAST, precision="bf16"), single)
    assert not uses_manual_step(mlp, dataclasses.replace(FAST, compile=True), single)
    assert not uses_manual_step(mlp, FAST, Rank(0, 0, 2))  # DDP needs autograd's hooks
    assert not uses_manual_step(build_model(model_config(name="cnn"), SPEC), FAST, single)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "step", "constant"])
def test_the_replayed_lr_schedule_matches_what_training_used(data, schedule):
    """The per-step lr plot replays the schedule after training; at each epoch start it
    must give the lr `fit` logged, and its last point the last step's lr."""
    cfg = dataclasses.replace(FAST, schedule=schedule, step_epochs=1, gamma=0.5)
    _, result = _train(data, cfg=cfg)
    steps_per_epoch = len(batch_starts(500, cfg.batch_size))
    points = lr_per_step(cfg, steps_per_epoch, len(result.history))
    assert len(points) == cfg.epochs * steps_per_epoch  # few steps: every one
    by_epoch = dict(points)
    for log in result.history:
        assert by_epoch[log["epoch"] - 1] == log["lr"], log["epoch"]
    assert points[-1][0] == pytest.approx(cfg.epochs - 1 / steps_per_epoch)


def test_a_long_schedule_keeps_at_most_500_points_and_its_shape():
    cfg = dataclasses.replace(FAST, epochs=40, warmup_fraction=0.25)
    points = lr_per_step(cfg, 196, 40)
    assert 400 < len(points) <= MAX_LR_POINTS
    peak_epoch, peak = max(points, key=lambda point: point[1])
    assert peak == pytest.approx(cfg.lr, rel=1e-3) and 9 < peak_epoch < 11  # a quarter in
    assert points[0][1] < cfg.lr / 10 and points[-1][1] < cfg.lr / 1000


def test_without_early_stopping_the_last_epoch_is_saved_and_named_as_such(data):
    # The same diverging setting without early stopping: the checkpoint holds the last
    # epoch, whose validation loss is not the lowest, and the summary must say so.
    cfg = dataclasses.replace(
        FAST, epochs=6, lr=0.5, optimizer="sgd", schedule="constant", weight_decay=0.0
    )
    _, result = _train(data, cfg=cfg)
    losses = [log["valid/loss"] for log in result.history]
    assert result.saved_epoch == 6 and not result.stopped_early
    assert result.best_epoch == losses.index(min(losses)) + 1 < 6
    assert saved_summary(result.history, result.saved_epoch, result.best_epoch) == (
        f"the weights after epoch 6 (the last; valid loss {losses[5]:.4f}); the lowest valid "
        f"loss was {min(losses):.4f}, after epoch {result.best_epoch}"
    )
