"""Where the project's training step spends its time: torch.profiler on N steps.

Profiles `loop.train_one_epoch` in the tutorial setting (MLP 784-128-256-10,
SGD lr 0.001, batch 64; hand-written gradients as `fit` uses them, or --autograd)
on synthetic data of steps * batch rows, after one untimed warm-up pass, and
prints the top operators by self CPU time plus the share of the matrix
multiplies (the part no loop can avoid). Best-of-N timings of the same steps,
with and without the profiler's overhead, too.

    .venv/bin/python -m benchmarks.profile_train --steps 100
"""

import argparse
import dataclasses
import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import train_support as ts
from mnist_pipeline.testing import synthetic
from mnist_pipeline.train.distributed import SINGLE_PROCESS
from mnist_pipeline.train.loop import train_one_epoch
from mnist_pipeline.train.optim import make_optimizer
from mnist_pipeline.train.run import new_model
from mnist_pipeline.train.step import make_step

GEMM_OPS = ("aten::mm", "aten::addmm", "aten::_addmm_activation")


def run(
    steps: int = 100,
    batch_size: int = 64,
    repeats: int = 10,
    rows: int = 20,
    autograd: bool = False,
) -> dict:
    """Profile `steps` steps; `repeats` unprofiled passes give the best time per step."""
    load = ts.load_start("profile")
    images, labels = synthetic.make_images(steps * batch_size, seed=0)
    model_cfg, tutorial_cfg = ts.tutorial_configs()
    cfg = dataclasses.replace(tutorial_cfg, batch_size=batch_size, manual_mlp_step=not autograd)
    model = new_model(model_cfg, ts.input_spec(images), 0, torch.get_num_threads(), ts.CPU)
    generator = torch.Generator().manual_seed(0)
    step = make_step(model, cfg, SINGLE_PROCESS)
    optimizer = make_optimizer(step.params, cfg)

    def epoch() -> None:  # as loop.fit runs it
        order = torch.randperm(len(labels), generator=generator)
        train_one_epoch(step, optimizer, None, (images, labels), order, batch_size)

    epoch()  # warm-up
    best_s = min(_timed(epoch) for _ in range(repeats))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        epoch()
    averages = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in averages)
    gemm_us = sum(e.self_cpu_time_total for e in averages if e.key in GEMM_OPS)
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows))
    result = _result(steps, batch_size, best_s, total_us, gemm_us, load)
    print(
        f"{steps} steps of batch {batch_size}, {result['threads']} threads: best "
        f"{result['us_per_step']:.0f} us/step unprofiled; matrix multiplies "
        f"{100 * result['gemm_share']:.0f}% of profiled self CPU time; "
        f"load {result['load_start']} -> {result['load_end']}"
    )
    return result


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _result(steps, batch_size, best_s, total_us, gemm_us, load) -> dict[str, Any]:
    return {
        "steps": steps,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "us_per_step": best_s / steps * 1e6,
        "gemm_share": gemm_us / total_us if total_us else 0.0,
        "load_start": load,
        "load_end": ts.load_now(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10, help="unprofiled passes (best counts)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
    parser.add_argument("--autograd", action="store_true", help="the autograd step instead")
    args = parser.parse_args(argv)
    ts.set_threads(args.threads)
    return run(args.steps, args.batch_size, args.repeats, autograd=args.autograd)


if __name__ == "__main__":
    main()
