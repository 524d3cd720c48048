"""Presets (presets/*.yaml) and scripts/exp.py: every committed preset fits params.yaml,
bad names and keys give one-line errors, and the -S arguments read back, through DVC's own
override parser, as exactly the preset's values."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.experiments.presets import (
    combined_overrides,
    format_value,
    load_preset,
    overrides,
    preset_names,
    set_arguments,
)
from mnist_pipeline.testing.dvc_repo import committed_text, env_for
from tests.support import REPO, python_env

PRESETS = REPO / "presets"
PARAMS_TEXT = committed_text(REPO, "params.yaml")  # never the working copy: a user's edits
PARAMS = yaml.safe_load(PARAMS_TEXT)
README_SETTINGS = {
    "tutorial",
    "cnn-fast",
    "cnn-best",
    "gpu",
    "fashion-mnist-debian",
    "two-processes",
}


def dvc_applies(params_file: Path, arguments: list[str]) -> dict:
    """params.yaml after `dvc exp run` would apply these -S arguments (DVC's own code: the
    sweep split that dedupes keys, then the Hydra overrides), without running anything."""
    from dvc.utils.hydra import apply_overrides, get_hydra_sweeps

    assert arguments[::2] == ["-S"] * (len(arguments) // 2)
    (sweep,) = get_hydra_sweeps({"params.yaml": arguments[1::2]})  # one run, not a grid
    apply_overrides(params_file, sweep["params.yaml"])
    return yaml.safe_load(params_file.read_text())


def leaf(params: dict, dotted: str):
    for key in dotted.split("."):
        params = params[key]
    return params


def write_preset(folder: Path, name: str, data) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_readme_settings_are_presets():
    assert set(preset_names(PRESETS)) >= README_SETTINGS


@pytest.mark.parametrize("name", preset_names(PRESETS))
def test_every_preset_fits_params_yaml_and_dvc_reads_back_its_values(name, tmp_path):
    flat = overrides(load_preset(PRESETS, name), PARAMS, name)
    assert flat
    params_file = tmp_path / "params.yaml"
    params_file.write_text(PARAMS_TEXT)
    applied = dvc_applies(params_file, set_arguments(flat))
    for dotted, value in flat.items():
        got = leaf(applied, dotted)
        assert got == value and type(got) is type(value), dotted


def test_the_tutorial_preset_is_the_readme_command():
    flat = overrides(load_preset(PRESETS, "tutorial"), PARAMS, "tutorial")
    assert flat == {
        "model.name": "mlp",
        "model.hidden_sizes": [128, 256],
        "model.dropout": 0,
        "model.input_norm": "unit",
        "train.optimizer": "sgd",
        "train.lr": 0.001,
        "train.momentum": 0,
        "train.batch_size": 64,
        "train.epochs": 25,
        "train.schedule": "constant",
        "train.weight_decay": 0,
    }


def test_set_arguments_for_lists_booleans_null_and_strings(tmp_path):
    preset = {
        "model": {"hidden_sizes": [64, 32], "name": "cnn"},
        "train": {"compile": True, "nesterov": False, "lr": 0.5},
        "fetch": {"source": None},
        "distributed": {"rdzv_endpoint": "node0:29500", "rdzv_id": ""},
    }
    flat = overrides(preset, PARAMS, "test")
    expected = [
        "model.hidden_sizes=[64,32]",
        "model.name=cnn",
        "train.compile=true",
        "train.nesterov=false",
        "train.lr=0.5",
        "fetch.source=null",
        "distributed.rdzv_endpoint='node0:29500'",
        "distributed.rdzv_id=''",
    ]
    assert set_arguments(flat) == [item for value in expected for item in ("-S", value)]


@pytest.mark.parametrize(
    "value",
    [
        "fashion-mnist",
        "/usr/share/datasets/fashion-mnist",
        "https://example.org/a b?x=1&y=2",
        "true",
        "NULL",
        "nan",
        "1e5",
        "42",
        "-3",
        "",
        " padded ",
        "it's",
        'say "hi"',
        "both ' and \"",
        "a,b",
        "[not a list]",
        "C:\\data\\",
        "\\'",
        "${seed}",
        "\\${seed}",
        "cuda:0",
        ["a", "b c", 1, 2.5, None, True],
        [],
        0.001,
        1e-3,
        -0.0,
        10**20,
    ],
)
def test_format_value_reads_back_through_dvc_as_the_same_value(value, tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text("fetch:\n  source: null\n")
    applied = dvc_applies(params_file, ["-S", f"fetch.source={format_value(value)}"])
    assert applied["fetch"]["source"] == value
    assert type(applied["fetch"]["source"]) is type(value)


def test_a_later_preset_and_then_the_command_line_win_on_a_shared_key(tmp_path):
    folder = tmp_path / "presets"
    write_preset(folder, "a", {"train": {"epochs": 5, "lr": 0.1}})
    write_preset(folder, "b", {"train": {"epochs": 7}})
    flat = combined_overrides(folder, ["a", "b"], PARAMS)
    assert flat == {"train.epochs": 7, "train.lr": 0.1}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(PARAMS_TEXT)
    # What exp.py relies on for ARGS: DVC keeps the last -S for a key.
    applied = dvc_applies(params_file, [*set_arguments(flat), "-S", "train.epochs=3"])
    assert applied["train"]["epochs"] == 3 and applied["train"]["lr"] == 0.1


def test_an_unknown_preset_names_the_valid_ones(tmp_path):
    folder = tmp_path / "presets"
    write_preset(folder, "small", {"train": {"epochs": 1}})
    write_preset(folder, "big", {"train": {"epochs": 100}})
    with pytest.raises(PipelineError, match=r"^unknown preset 'huge'; valid presets: big, small$"):
        load_preset(folder, "huge")


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        (
            {"train": {"epoch": 3}},
            "p.yaml: train.epoch is not in params.yaml; section train has: device, epochs,",
        ),
        ({"trian": {"epochs": 3}}, "p.yaml: trian is not in params.yaml; params.yaml has: seed,"),
        ({"train": 3}, "p.yaml: train is a section of params.yaml; give a mapping of its keys"),
        (
            {"fetch": {"checksums": {"mnist.pkl.gz": "0" * 32}}},
            "p.yaml: fetch.checksums: a preset cannot set a mapping; edit params.yaml",
        ),
    ],
)
def test_a_bad_key_is_a_one_line_error_naming_the_valid_keys(preset, message):
    with pytest.raises(PipelineError) as raised:
        overrides(preset, PARAMS, "p.yaml")
    text = str(raised.value)
    assert text.startswith(message) and "\n" not in text


@pytest.mark.parametrize("text", ["", "{}\n", "- a list\n", "train: [unclosed\n"])
def test_a_preset_file_that_is_not_a_mapping_is_an_error(text, tmp_path):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(PipelineError, match=r"bad\.yaml: (expected a mapping|not valid YAML)") as e:
        load_preset(tmp_path, "bad")
    assert "\n" not in str(e.value)  # config/strict.py's loader: the YAML error's first line


def test_a_value_yaml_cannot_pass_to_dvc_is_an_error():
    with pytest.raises(PipelineError, match="cannot write a date"):
        format_value(yaml.safe_load("2026-01-01"))


@pytest.fixture
def checkout(tmp_path):
    """A git repository whose committed params.yaml is this repository's."""
    repo = tmp_path / "checkout"
    repo.mkdir()
    (repo / "params.yaml").write_text(PARAMS_TEXT)
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "c"]):
        subprocess.run(["git", *command], cwd=repo, env=env_for(repo), check=True)
    return repo


def exp_py(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = python_env()
    command = [sys.executable, str(REPO / "scripts/exp.py"), "--presets-dir", str(PRESETS), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_exp_py_dry_run_prints_the_dvc_command(checkout):
    args = ("tutorial", "--queue", "--dry-run", "--", "-S", "train.epochs=3", "-n", "t")
    result = exp_py(checkout, *args)
    assert result.returncode == 0, result.stderr
    expected = "dvc exp run -S model.name=mlp -S 'model.hidden_sizes=[128,256]' -S model.dropout=0"
    assert result.stdout.startswith(expected)
    assert result.stdout.endswith(" --queue -S train.epochs=3 -n t\n")
    assert result.stdout.count("\n") == 1


def test_exp_py_takes_presets_and_args_as_one_string_each_as_make_exp_passes_them(checkout):
    """`make exp PRESET="cnn-fast gpu" ARGS=...`: each a single argument, split by the script
    (ARGS as a shell would, quotes included), nothing in them run."""
    args = ("--presets= cnn-fast  tutorial ", "--args=-S 'model.hidden_sizes=[64, 32]' -n t")
    result = exp_py(checkout, *args, "--dry-run", "--", "-S", "train.epochs=2")
    assert result.returncode == 0, result.stderr
    # Both presets (cnn-fast's channels; tutorial's model, the later one, wins), then ARGS.
    assert result.stdout.startswith("dvc exp run -S model.name=mlp -S 'model.conv_channels=")
    assert result.stdout.endswith(" -S 'model.hidden_sizes=[64, 32]' -n t -S train.epochs=2\n")


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (
            ["--presets=tutorial", "--args=-S 'train.epochs=3"],
            'exp.py: error: --args "-S \'train.epochs=3": cannot split it as a shell would: '
            "No closing quotation\n",
        ),
        (["--presets= ", "--args=-n x"], "exp.py: error: no preset given (PRESET, or --presets"),
        (["--presets=tutorial; touch pwned"], "exp.py: error: unknown preset 'tutorial;'"),
    ],
)
def test_exp_py_bad_presets_or_args_strings_are_one_line(checkout, args, stderr):
    result = exp_py(checkout, *args, "--dry-run")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(stderr) and result.stderr.count("\n") == 1
    assert not (checkout / "pwned").exists()


def test_exp_py_starts_from_the_committed_params_and_names_what_it_sets_aside(checkout):
    # What the last experiment left in the workspace (the tutorial's input scaling, a
    # dropout typed by hand) is not where the next one starts.
    params_file = checkout / "params.yaml"
    edited = PARAMS_TEXT.replace("input_norm: standardize", "input_norm: unit")
    edited = edited.replace("dropout: 0.2 ", "dropout: 0.3 ")
    assert edited.count("unit") > PARAMS_TEXT.count("unit") and "dropout: 0.3" in edited
    params_file.write_text(edited)
    result = exp_py(checkout, "cnn-fast", "--dry-run")
    assert result.returncode == 0, result.stderr
    note, command = result.stdout.splitlines()
    assert note == (
        "exp: params.yaml starts from HEAD's; the workspace's changes are set aside: "
        "model.dropout: 0.3 (HEAD: 0.2), model.input_norm: 'unit' (HEAD: 'standardize') "
        "(to run one, add it to ARGS: -S key=value)"
    )
    assert "input_norm" not in command and command.startswith("dvc exp run -S model.name=cnn")
    assert params_file.read_text() == edited  # a dry run changes nothing


def test_exp_py_validates_the_presets_on_the_committed_params_before_dvc_runs(checkout, tmp_path):
    # The workspace's file is broken (a failed experiment's value): the committed one counts.
    params_file = checkout / "params.yaml"
    params_file.write_text(PARAMS_TEXT.replace("lr: 0.004 ", "lr: -0.001 "))
    assert exp_py(checkout, "cnn-fast", "--dry-run").returncode == 0
    write_preset(tmp_path / "presets", "bad", {"train": {"epochs": 0}})
    result = exp_py(checkout, "--presets-dir", str(tmp_path / "presets"), "bad", "--dry-run")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "exp.py: error: params.yaml at HEAD with preset(s) bad: train.epochs: must be >= 1\n"
    )


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (["no-such-preset"], "exp.py: error: unknown preset 'no-such-preset'; valid presets: "),
        (["--params", "missing.yaml", "cnn-fast"], "exp.py: error: missing.yaml: not in a commit"),
    ],
)
def test_exp_py_bad_input_is_one_line_and_exit_1(checkout, args, stderr):
    result = exp_py(checkout, *args, "--dry-run")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(stderr) and result.stderr.count("\n") == 1


def test_exp_py_names_the_bad_key_of_a_preset(checkout, tmp_path):
    write_preset(tmp_path / "presets", "typo", {"train": {"epoch": 3}})
    result = exp_py(checkout, "--presets-dir", str(tmp_path / "presets"), "typo", "--dry-run")
    assert result.returncode == 1
    assert result.stderr.startswith("exp.py: error: presets/typo.yaml: train.epoch is not in")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        # DVC's own hint would be `+model.droput=0.3`, which adds the typo.
        (
            ["-S", "model.droput=0.3"],
            "exp.py: error: -S model.droput=0.3: model.droput is not in params.yaml; section "
            "model has: name, hidden_sizes, conv_channels, block_convs, dropout, input_norm\n",
        ),
        (
            ["-S", "+model.extra=1"],
            "exp.py: error: -S +model.extra=1: params.yaml's keys are fixed; set an existing "
            "one (key=value)\n",
        ),
        # One bad value in a grid: named before any experiment of it runs.
        (
            ["-S", "train.lr=0.01,-0.1", "--queue"],
            "exp.py: error: params.yaml at HEAD with -S train.lr=-0.1: train.lr: must be > 0, "
            "got -0.1\n",
        ),
        (
            ["--set-param=evaluate.mc_samples=1"],
            "exp.py: error: params.yaml at HEAD with -S evaluate.mc_samples=1: "
            "evaluate.mc_samples: 1 pass has no spread; use 0 or >= 2\n",
        ),
    ],
)
def test_exp_py_checks_the_set_params_it_will_run_before_dvc_starts(checkout, args, stderr):
    result = exp_py(checkout, "cnn-fast", "--dry-run", "--", *args)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == stderr


def test_exp_py_passes_a_valid_grid_on_to_dvc(checkout):
    grid = ["-S", "train.lr=0.01,0.02", "-S", "params.yaml:model.dropout=0.1,0.2", "--queue"]
    result = exp_py(checkout, "tutorial", "--dry-run", "--", *grid)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(shlex.join(grid))
