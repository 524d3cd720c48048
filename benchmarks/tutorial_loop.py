"""The reference: PyTorch's "What is torch.nn really?" training loop, exactly as written.

`loss_batch` and `fit` are the tutorial's code verbatim (the DataLoader over a
TensorDataset, shuffle=True, valid batches of 2 * bs, `loss.item()` after
every step, `print(epoch, val_loss)`). Around them: its MLP 784-128-256-10 on
flat float pixels, its data (mnist.pkl.gz floats: x float32 (N, 784) = k/256),
its SGD, and `run_epochs`, which calls the verbatim `fit` one epoch at a time
(the same as `fit(epochs, ...)`: its only state is the model, the optimizer and
torch's global RNG) so the benchmarks can time each epoch and read the printed
validation loss.
"""

import contextlib
import io
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

PICKLE_PIXEL_SCALE = 256.0  # mnist.pkl.gz stores pixel k as float32 k/256
EpochRecord = dict[str, float]


def tutorial_model() -> nn.Module:
    """784-128-256-10 with ReLUs. The tutorial feeds (N, 784) floats: no Flatten needed."""
    return nn.Sequential(
        nn.Linear(784, 128),
        nn.ReLU(),
        nn.Linear(128, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def tutorial_tensors(images_u8: torch.Tensor, labels: torch.Tensor):
    """uint8 (N, 28, 28) -> the pickle's float32 (N, 784) = k/256, and int64 labels."""
    x = images_u8.reshape(len(images_u8), -1).to(torch.float32) / PICKLE_PIXEL_SCALE
    return x, labels.to(torch.int64)


def get_data(train_ds, valid_ds, bs):
    return (
        DataLoader(train_ds, batch_size=bs, shuffle=True),
        DataLoader(valid_ds, batch_size=bs * 2),
    )


loss_func = F.cross_entropy


def loss_batch(model, loss_func, xb, yb, opt=None):
    loss = loss_func(model(xb), yb)

    if opt is not None:
        loss.backward()
        opt.step()
        opt.zero_grad()

    return loss.item(), len(xb)


def fit(epochs, model, loss_func, opt, train_dl, valid_dl):
    for epoch in range(epochs):
        model.train()
        for xb, yb in train_dl:
            loss_batch(model, loss_func, xb, yb, opt)

        model.eval()
        with torch.no_grad():
            losses, nums = zip(*[loss_batch(model, loss_func, xb, yb) for xb, yb in valid_dl])  # noqa: B905
        val_loss = np.sum(np.multiply(losses, nums)) / np.sum(nums)

        print(epoch, val_loss)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Valid accuracy, for reporting only (outside the timed epochs)."""
    model.eval()
    return (model(x).argmax(dim=1) == y).float().mean().item()


def run_epochs(
    train: tuple[torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    bs: int = 64,
    lr: float = 0.001,
    on_epoch: Callable[[EpochRecord], None] = lambda record: None,
) -> list[EpochRecord]:
    """The tutorial on (images uint8, labels) splits; seed torch beforehand.

    Per epoch: wall and process CPU seconds of `fit(1, ...)` (train pass + valid
    pass, as the tutorial's epoch is), its printed valid loss, the valid accuracy.
    """
    train_ds = TensorDataset(*tutorial_tensors(*train))
    valid_ds = TensorDataset(*tutorial_tensors(*valid))
    train_dl, valid_dl = get_data(train_ds, valid_ds, bs)
    model = tutorial_model()
    opt = optim.SGD(model.parameters(), lr=lr)
    records = []
    for epoch in range(1, epochs + 1):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            started, started_cpu = time.perf_counter(), time.process_time()
            fit(1, model, loss_func, opt, train_dl, valid_dl)
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
        record = {
            "epoch": epoch,
            "epoch_seconds": seconds,
            "epoch_cpu_seconds": cpu_seconds,
            "valid/loss": float(printed.getvalue().split()[1]),
            "valid/accuracy": accuracy(model, *valid_ds.tensors),
        }
        records.append(record)
        on_epoch(record)
    return records
