"""The README's console samples are what the code prints now.

The samples' numbers come from real runs on Fashion-MNIST (the README says which); here
each sample line must keep the shape (numbers and code spans aside) of a line the code
writes on synthetic data, so a changed message cannot leave a stale sample behind.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_pipeline.experiments.table import Record, format_table
from mnist_pipeline.review.report import significance_section
from mnist_pipeline.testing.configs import complete_params
from tests.support import REPO

README = (REPO / "README.md").read_text()
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")
STAGE_LINES = ("train: ", "epoch ", "evaluate: ", "export: ")


def shape(line: str) -> str:
    """The line with every code span and number replaced, whitespace collapsed."""
    line = re.sub(r"`[^`]*`", "`x`", line)
    return " ".join(NUMBER.sub("<n>", line).split())


def blocks(language: str) -> list[list[str]]:
    """The lines of each fenced block of `language` in the README."""
    found = re.findall(rf"^```{language}\n(.*?)^```$", README, re.S | re.M)
    return [block.splitlines() for block in found]


@pytest.mark.slow
def test_the_quickstart_lines_are_what_the_stages_print(tmp_path, prepared):
    # The stages as dvc.yaml runs them (their own paths in the messages), in a copy of the
    # checkout; SGD at a constant 0.5 overshoots, so the last epoch is not the one with the
    # lowest valid loss and the train stage's last line has both parts.
    for name in ("stages", "src"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__py*"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data/prepared").symlink_to(prepared)
    (tmp_path / "params.yaml").write_text(
        complete_params(
            "model: {hidden_sizes: [16], dropout: 0.2}\n"
            "train: {device: cpu, epochs: 6, batch_size: 32, optimizer: sgd, lr: 0.5, "
            "threads: 1}\n"
            "evaluate: {device: cpu, mc_samples: 3, worst_examples: 4}\n"
        )
    )
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    printed = []
    for stage in ("train", "evaluate", "export"):
        result = subprocess.run(
            ["sh", "-c", stages[stage]["cmd"]],
            cwd=tmp_path,
            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        printed += result.stdout.splitlines()
    samples = [
        line for block in blocks("console") for line in block if line.startswith(STAGE_LINES)
    ]
    assert {line.split(":")[0].split()[0] for line in samples} == {
        "train",
        "epoch",
        "evaluate",
        "export",
    }
    shapes = {shape(line) for line in printed}
    assert [line for line in samples if shape(line) not in shapes] == []


def test_the_report_samples_are_what_the_report_writes():
    # An n.s. change on 1,000 images, as in the README's sample.
    old = np.arange(1000) < 897
    new = old.copy()
    new[:5] = False
    new[900:904] = True
    section = significance_section("HEAD", "p.csv", _csv(old), _csv(new)).splitlines()
    shapes = {shape(line.strip("*")) for line in section}
    samples = [line for block in blocks("text") if "### Is it real?" in block for line in block]
    samples += [line for block in blocks("text") for line in block if "points, 95% CI" in line]
    assert len(samples) >= 8
    assert [line for line in samples if shape(line.strip("*")) not in shapes] == []


def _csv(correct: np.ndarray) -> str:
    rows = [f"{0 if right else 1},0,0.9" for right in correct]
    return "label,predicted,confidence\n" + "\n".join(rows) + "\n"


def test_the_experiments_table_sample_is_what_make_exps_prints():
    (sample,) = [block for block in blocks("text") if block[0].startswith("$ make exps")]
    header, head_row, *rows = sample[1:]
    empty = Record("HEAD", "0" * 40, "done", {}, None)
    assert header == format_table(empty, None, []).splitlines()[0]
    cell = r"\d+\.\d\d% \[\d+\.\d\d, \d+\.\d\d\]"
    assert re.fullmatch(rf"HEAD [0-9a-f]{{7}} {{13}}{cell}", head_row)
    verdict = r"[-+]\d+\.\d\d p(=[\d.]+|<0\.0001) (better|worse|n\.s\.)"
    for row in rows:
        assert len(row) <= 120
        assert re.fullmatch(rf"\S.{{23}} {cell} +{verdict} +\S.*", row), row
