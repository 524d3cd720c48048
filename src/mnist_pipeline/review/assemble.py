"""The review report from the files it compares: the base revision chosen (review/git.py),
each file read within its limit at the base and in the workspace (review/inputs.py), the
sections built (review/report.py), the embedded PNGs rendered (review/report_figures.py)
and the PR comment cut to size (review/comment.py). `scripts/report.py` parses its
arguments into a `ReportRequest` and writes what `assemble` returns.

Paths are relative to the current directory, where git runs (the repository).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.review import inputs, report_figures
from mnist_pipeline.review.comment import build_comment
from mnist_pipeline.review.git import resolve_base
from mnist_pipeline.review.report import figure_sections, join_sections, report_sections


@dataclass(frozen=True)
class ReportRequest:
    """What to compare (scripts/report.py's options); None where an option is not given."""

    params: Path
    metrics: list[Path]
    rev: str | None = None  # None: chosen, see review/git.py's `choose_base`
    main_branch: str = "main"
    figures: list[Path] = field(default_factory=list)
    predictions: Path | None = None
    seeds: Path | None = None
    images: Path | None = None  # folder for the embedded PNGs
    curves: list[Path] = field(default_factory=list)
    per_class: Path | None = None
    out: Path | None = None  # where the report goes: links are relative to its folder
    figures_url: str | None = None  # set: also build the PR comment, linking here


@dataclass(frozen=True)
class AssembledReport:
    rev: str  # the base, as the report names it
    title: str  # its short sha and subject
    why: str  # why it is the base (Markdown)
    report: str
    comment: str | None  # None without a figures_url


def figure_links(folders: list[Path], out: Path | None) -> tuple[list[str], list[str]]:
    """The PNGs in `folders`, as paths relative to the report's own directory, so the
    links work wherever `out` puts it; and the folders without any in the workspace (DVC
    caches the figures: a fresh clone has them after `dvc pull`)."""
    found = {folder: sorted(folder.glob("*.png")) if folder.is_dir() else [] for folder in folders}
    missing = [folder.as_posix() for folder, pngs in found.items() if not pngs]
    base = out.parent if out is not None else Path()
    links = [Path(os.path.relpath(p, base)).as_posix() for pngs in found.values() for p in pngs]
    return links, missing


def render_images(
    request: ReportRequest,
    rev: str,
    predictions: tuple[str | None, str | None],
    per_class: tuple[str | None, str | None],
) -> list[tuple[str, str]]:
    """The embedded PNGs into request.images; (title, path relative to the report) of each."""
    if request.images is None:
        return []
    curves = {
        path.stem: inputs.checked_texts(rev, path, inputs.MAX_CURVE_BYTES, inputs.check_curve)
        for path in request.curves
    }
    labels = (rev, "workspace")
    written = report_figures.render_all(request.images, labels, curves, predictions, per_class)
    base = request.out.parent if request.out is not None else Path()
    return [(title, Path(os.path.relpath(path, base)).as_posix()) for title, path in written]


def assemble(request: ReportRequest) -> AssembledReport:
    """The report (and the PR comment with a figures_url) of `request`; the embedded PNGs
    are written into request.images, after every section is built."""
    compared = [request.params, *request.metrics, *request.figures]
    compared += [p for p in (request.predictions, request.seeds) if p is not None]
    rev, title, why = resolve_base(request.rev, request.main_branch, compared)
    new_params = inputs.parse_workspace(request.params, inputs.MAX_PARAMS_BYTES)
    metrics_limit = inputs.MAX_METRICS_BYTES
    new_metrics = {p.as_posix(): inputs.parse_workspace(p, metrics_limit) for p in request.metrics}
    old_metrics = {p.as_posix(): inputs.parse_at(rev, p, metrics_limit) for p in request.metrics}
    old_params = inputs.parse_at(rev, request.params, inputs.MAX_PARAMS_BYTES)
    params = (request.params.as_posix(), old_params, new_params)
    figures, missing_figures = figure_links(request.figures, request.out)
    predicted = inputs.checked_texts(
        rev, request.predictions, inputs.MAX_PREDICTIONS_BYTES, inputs.check_predictions
    )
    per_class = inputs.checked_texts(
        rev, request.per_class, inputs.MAX_PER_CLASS_BYTES, inputs.check_per_class
    )
    seeds = None
    if request.seeds is not None:
        seeds = (
            request.seeds.as_posix(),
            *inputs.parse_both(rev, request.seeds, inputs.MAX_SEEDS_BYTES),
        )
    try:  # the sections first: the figures are files, not to be left by a failure
        sections = report_sections(
            rev,
            title,
            params,
            old_metrics,
            new_metrics,
            None if request.predictions is None else (request.predictions.as_posix(), *predicted),
            seeds,
            why,
            None if request.per_class is None else (request.per_class.as_posix(), *per_class),
        )
        images = render_images(request, rev, predicted, per_class)
    except ValueError as exc:  # a predictions or seeds file of an unknown layout
        raise PipelineError(str(exc)) from exc
    report = join_sections([*sections, *figure_sections(figures, images, missing_figures)])
    comment = None
    if request.figures_url is not None:
        comment = build_comment(sections, request.figures_url)
    return AssembledReport(rev, title, why, report, comment)
