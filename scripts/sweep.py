"""Sweeps: find the best setting of params.yaml with Optuna, each trial a DVC experiment.

  python scripts/sweep.py run mlp --jobs 2            (make sweep SWEEP=mlp JOBS=2)
  python scripts/sweep.py worker mlp --storage URL    (make sweep-worker ...)
  python scripts/sweep.py report mlp --out DIR        (make sweep-report SWEEP=mlp)

`run` runs the search (sweeps/NAME.yaml: trials, sampler, space) `--jobs` trials at a
time, then re-runs the top-k trials and the baseline with fresh seeds and names the
winner (the best validation mean). Run again after a crash or a kill, it resumes: done
trials are kept, interrupted ones run again. `worker` runs search trials only, on a
shared study (--storage postgresql://...), and pushes each experiment to the git remote.
`report` writes the sweep's Markdown report with its figures.
"""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import run_stage, stage_parser, whole_number
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.sweep.driver import describe_winner, run_confirm, run_search
from mnist_pipeline.sweep.launch import HEARTBEAT_S, Where, open_context
from mnist_pipeline.sweep.study import quiet_optuna

REPO = Path(__file__).resolve().parents[1]

parser = stage_parser(__doc__.split("\n\n")[0])
commands = parser.add_subparsers(dest="command", required=True)
for command in ("run", "worker", "report"):
    sub = commands.add_parser(command)
    sub.add_argument("sweep", help="a file sweeps/SWEEP.yaml")
    sub.add_argument("--storage", default=None, help="Optuna storage URL (.sweeps/SWEEP.db)")
    sub.add_argument("--presets", default="", help="more presets after the sweep file's")
    sub.add_argument("--sweeps-dir", type=Path, default=REPO / "sweeps")
    sub.add_argument("--presets-dir", type=Path, default=REPO / "presets")
    if command == "report":
        sub.add_argument("--out", type=Path, required=True, help="folder for report.md")
        continue
    sub.add_argument("--jobs", default="1", help="trials at a time on this machine (1)")
    sub.add_argument("--heartbeat-s", default=str(HEARTBEAT_S), help=argparse.SUPPRESS)
    if command == "worker":
        sub.add_argument("--remote", default="origin", help="git remote for dvc exp push")


def main(args: argparse.Namespace) -> None:
    quiet_optuna()
    where = Where(Path.cwd(), args.sweeps_dir, args.presets_dir)
    presets = args.presets.split()
    if args.command == "report":
        from mnist_pipeline.sweep.report import write_report

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


if __name__ == "__main__":
    sys.exit(
        run_stage(
            main,
            parser,
            on_interrupt=lambda args: (
                "its running trials were stopped; the same command "
                "resumes the sweep (they run again)"
            ),
        )
    )
