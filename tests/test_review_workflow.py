"""The review workflow (.github/workflows/review.yml): the pull request's base reaches the
report, the comment is the self-contained one, the artifact has the figures, the data
check comes first, and no `${{ }}` value is pasted into a shell script."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _steps() -> dict[str, dict]:
    workflow = yaml.safe_load((REPO / ".github/workflows/review.yml").read_text())
    steps = workflow["jobs"]["review"]["steps"]
    return {step.get("name", step.get("uses")): step for step in steps}


def test_the_report_compares_with_the_pull_requests_base_and_links_to_the_run():
    report = _steps()["Report"]
    # Through env: no `${{ }}` value pasted into any shell script.
    scripts = [step["run"] for step in _steps().values() if "run" in step]
    assert scripts and not [script for script in scripts if "${{" in script]
    assert report["env"]["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    assert report["env"]["RUN_URL"] == (
        "${{ github.server_url }}/${{ github.repository }}/actions/runs/${{ github.run_id }}"
    )
    assert report["run"] == 'make report REV="$BASE_SHA" FIGURES_URL="$RUN_URL"'
    # The Makefile turns FIGURES_URL into the comment, where the next step takes it.
    makefile = (REPO / "Makefile").read_text()
    assert '--comment-out report/comment.md --figures-url "$$FIGURES_URL"' in makefile
    assert '--rev "$$REV"' in makefile
    comment = _steps()["Comment on the pull request"]
    assert comment["run"] == 'gh pr comment "$PR_NUMBER" --body-file report/comment.md'


def test_the_artifact_holds_the_report_its_figures_and_the_metrics():
    paths = _steps()["Keep the report and figures"]["with"]["path"].split()
    assert paths == ["report.md", "report/", "metrics/", "figures/"]


def test_the_data_check_runs_before_the_pipeline():
    names = list(_steps())
    check = names.index("Check that the data is reachable")
    assert names.index("Install") < check < names.index("Data, models and metrics")
    assert _steps()[names[check]]["run"].startswith(".venv/bin/python scripts/check_ci_data.py")
