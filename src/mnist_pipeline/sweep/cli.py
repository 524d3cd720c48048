"""Sweeps: find the best setting of params.yaml with Optuna, each trial a DVC experiment.

  mnist-pipeline sweep run mlp --jobs 2            (make sweep SWEEP=mlp JOBS=2)
  mnist-pipeline sweep worker mlp --storage URL    (make sweep-worker ...)
  mnist-pipeline sweep report mlp --out DIR        (make sweep-report SWEEP=mlp)

Run from the repository's root. `run` runs the search (sweeps/NAME.yaml: trials,
sampler, space) `--jobs` trials at a time, then re-runs the top-k trials and the
baseline with fresh seeds and names the winner (the best validation mean). Run again
after a crash or a kill, it resumes: done trials are kept, interrupted ones run again.
`worker` runs search trials only, on a shared study (--storage postgresql://...), and
pushes each experiment to the git remote. `report` writes the sweep's Markdown report
with its figures.
"""

import argparse
from collections.abc import Sequence
from pathlib import Path

from mnist_pipeline.cli import run_stage, whole_number
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.sweep.driver import describe_winner, run_confirm, run_search
from mnist_pipeline.sweep.launch import HEARTBEAT_S, Where, open_context
from mnist_pipeline.sweep.study import quiet_optuna

INTERRUPTED = "its running trials were stopped; the same command resumes the sweep"


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("run", "worker", "report"):
        sub = commands.add_parser(command)
        sub.add_argument("sweep", help="a file sweeps/SWEEP.yaml")
        sub.add_argument("--storage", default=None, help="Optuna storage URL (.sweeps/SWEEP.db)")
        sub.add_argument("--presets", default="", help="more presets after the sweep file's")
        sub.add_argument("--sweeps-dir", type=Path, default=Path("sweeps"))
        sub.add_argument("--presets-dir", type=Path, default=Path("presets"))
        if command == "report":
            sub.add_argument("--out", type=Path, required=True, help="folder for report.md")
            continue
        sub.add_argument("--jobs", default="1", help="trials at a time on this machine (1)")
        sub.add_argument("--heartbeat-s", default=str(HEARTBEAT_S), help=argparse.SUPPRESS)
        if command == "worker":
            sub.add_argument("--remote", default="origin", help="git remote for dvc exp push")
    return parser


def run(args: argparse.Namespace) -> None:
    quiet_optuna()
    where = Where(Path.cwd(), args.sweeps_dir, args.presets_dir)
    presets = args.presets.split()
    if args.command == "report":
        from mnist_pipeline.sweep.report import write_report  # matplotlib: only here

        print(write_report(where, args.sweep, args.storage, presets, args.out))
        return
    if args.command == "worker" and not args.storage:
        raise PipelineError("a worker needs --storage (STORAGE=postgresql://...): the shared study")
    ctx = open_context(
        where,
        args.sweep,
        jobs=whole_number("--jobs", args.jobs),
        storage_url=args.storage,
        extra_presets=presets,
        heartbeat_s=whole_number("--heartbeat-s", args.heartbeat_s),
        say=lambda line: print(line, flush=True),
        worker=args.command == "worker",
        push_remote=args.remote if args.command == "worker" else None,
    )
    tally = run_search(ctx)
    print(
        f"sweep {ctx.sweep.name}: search done: {tally.complete} complete, {tally.failed} failed",
        flush=True,
    )
    if args.command == "worker":
        return
    print(describe_winner(ctx.sweep, run_confirm(ctx)), flush=True)


def main(argv: Sequence[str], prog: str) -> int:
    """Parse, run, and turn a failure into one line (exit 1), Ctrl-C or SIGTERM into one
    line saying the sweep resumes (130, 143)."""
    return run_stage(run, build_parser(prog), argv, on_interrupt=lambda args: INTERRUPTED)
