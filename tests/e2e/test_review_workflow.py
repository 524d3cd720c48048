"""The review workflow (.github/workflows/review.yml): the pull request's base reaches the
report, the comment is the self-contained one, the artifact has the figures, the data
check comes first, and no `${{ }}` value is pasted into a shell script; every action is
pinned to a commit, no checkout keeps the token, and the review comment is one per pull
request, found by its marker and edited (the finding tested here against listings)."""

import json
import re
import subprocess
import sys

import pytest
import yaml

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.review.comment import MARKER, comment_to_update
from tests.support import REPO, python_env


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


def test_the_artifact_holds_the_report_its_figures_and_the_metrics():
    paths = _steps()["Keep the report and figures"]["with"]["path"].split()
    assert paths == ["report.md", "report/", "metrics/", "figures/"]


def test_the_data_check_runs_before_the_pipeline():
    names = list(_steps())
    check = names.index("Check that the data is reachable")
    assert names.index("Install") < check < names.index("Data, models and metrics")
    assert _steps()[names[check]]["run"].startswith(".venv/bin/python scripts/check_ci_data.py")


WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.yml"))
PINNED = re.compile(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}")


def _all_steps():
    for path in WORKFLOWS:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            yield from ((path.name, step) for step in job["steps"])


def test_every_action_is_pinned_to_a_commit_with_its_tag_beside_it():
    uses = [(name, step["uses"]) for name, step in _all_steps() if "uses" in step]
    assert len(uses) == 5 and {name for name, _ in uses} == {"review.yml", "test.yml"}
    assert [u for _, u in uses if not PINNED.fullmatch(u)] == []
    for path in WORKFLOWS:  # the tag as a comment: `uses: owner/name@<sha> # v6.1.0`
        for line in path.read_text().splitlines():
            if "uses:" in line:
                assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), line


def test_no_checkout_keeps_the_token_in_git_config():
    checkouts = [s for _, s in _all_steps() if s.get("uses", "").startswith("actions/checkout@")]
    assert len(checkouts) == 2
    assert all(step["with"]["persist-credentials"] is False for step in checkouts)


def test_the_comment_step_edits_the_comment_with_the_marker_else_creates_one():
    step = _steps()["Comment on the pull request"]
    script = step["run"]
    assert step["shell"] == "bash"  # pipefail: a failed listing stops the step
    assert 'gh api --paginate "repos/$REPO/issues/$PR_NUMBER/comments"' in script
    assert "python scripts/find_comment.py --author 'github-actions[bot]'" in script
    assert '--method PATCH "repos/$REPO/issues/comments/$id" -F body=@report/comment.md' in script
    assert '--method POST "repos/$REPO/issues/$PR_NUMBER/comments"' in script
    assert "--edit-last" not in script and "${{" not in script
    assert step["env"]["REPO"] == "${{ github.repository }}"


def _comment(id_, login, body):
    return {"id": id_, "user": {"login": login}, "body": body}


BOT = "github-actions[bot]"


def test_the_comment_to_edit_is_the_bots_with_the_marker_on_any_page():
    first = [_comment(1, "alice", "LGTM"), _comment(2, BOT, "another workflow's comment")]
    second = [
        _comment(3, "mallory", f"{MARKER}\nnot the bot's: it could not be edited"),
        _comment(4, BOT, f"{MARKER}\n## Workspace against ..."),
        _comment(5, BOT, f"{MARKER}\na later one"),
    ]
    listing = json.dumps(first) + "\n" + json.dumps(second)  # gh api --paginate's pages
    assert comment_to_update(listing, BOT) == 4
    assert comment_to_update(json.dumps(first), BOT) is None  # none yet: create one
    assert comment_to_update("[]", BOT) is None and comment_to_update("", BOT) is None


@pytest.mark.parametrize("listing", ["[{", '{"message": "Not Found"}'])
def test_a_listing_that_is_not_pages_of_comments_is_an_error(listing):
    with pytest.raises(PipelineError, match="the comments listing is not"):
        comment_to_update(listing, BOT)


@pytest.mark.slow
def test_find_comment_prints_the_id_or_nothing():
    command = [sys.executable, str(REPO / "scripts/find_comment.py"), "--author", BOT]
    env = python_env()
    listing = json.dumps([_comment(7, BOT, f"{MARKER}\nold")])
    found = subprocess.run(command, input=listing, env=env, capture_output=True, text=True)
    assert (found.returncode, found.stdout, found.stderr) == (0, "7\n", "")
    none = subprocess.run(command, input="[]", env=env, capture_output=True, text=True)
    assert (none.returncode, none.stdout) == (0, "")
    bad = subprocess.run(command, input="oops", env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("find_comment.py: error: the comments")
