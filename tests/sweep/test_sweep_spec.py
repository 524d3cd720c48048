"""The sweep file (sweeps/NAME.yaml) is validated at load like params.yaml: each mistake
is one line naming the file and the key; the shipped sweeps load; the study's plans
(the grid, the confirmation runs, who counts toward the trial count) are as documented."""

import json

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.sweep import study as st
from mnist_pipeline.sweep.experiment import error_line, select_valid
from mnist_pipeline.sweep.spec import load_sweep, sweep_path
from mnist_pipeline.testing.dvc_repo import committed_text
from tests.support import REPO

HEAD_PARAMS = committed_text(REPO, "params.yaml")  # never the user's working copy

BASE = {
    "objective": {"metric": "valid.accuracy", "direction": "maximize"},
    "trials": 4,
    "space": {"train.lr": {"low": 0.001, "high": 0.01, "log": True}},
}


def load(tmp_path, document, name="s", presets=()):
    path = tmp_path / f"{name}.yaml"
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    path.write_text(text)
    return load_sweep(path, HEAD_PARAMS, REPO / "presets", presets)


def with_(**changes):
    return {**BASE, **changes}


@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn_fast"])
def test_the_shipped_sweeps_load(name):
    path = sweep_path(REPO / "sweeps", name)
    sweep = load_sweep(path, HEAD_PARAMS, REPO / "presets")
    assert sweep.name == name and sweep.objective.metric == "valid.accuracy"
    assert len(sweep.dimensions) == len(yaml.safe_load(path.read_text())["space"])
    assert sweep.file.trials >= 3 * len(sweep.dimensions)  # TPE needs trials to learn from


def test_every_shipped_sweep_is_loaded_above():
    shipped = sorted(path.stem for path in (REPO / "sweeps").glob("*.yaml"))
    assert shipped == ["cnn", "cnn_fast", "mlp"]


def test_a_sweep_loads_its_presets_and_kinds(tmp_path):
    sweep = load(
        tmp_path,
        with_(
            presets=["cnn-fast"],
            space={
                "train.lr": {"low": 0.001, "high": 0.01, "log": True},
                "train.epochs": {"low": 2, "high": 6, "step": 2},
                "model.conv_channels": {"choices": [[8, 16], [16, 32]]},
                "train.label_smoothing": {"low": 0, "high": 0.1},  # a float key given ints
            },
        ),
    )
    assert sweep.base_overrides["model.name"] == "cnn"
    assert [d.kind for d in sweep.dimensions] == ["float", "int", "choice", "float"]
    assert sweep.dimensions[1].grid_points() == [2, 4, 6]


# A broken sweep file -> the words its one-line error must hold.
BAD = {
    "unknown top key": (with_(trails=3), "unknown key(s) trails"),
    "missing trials": ({k: v for k, v in BASE.items() if k != "trials"}, "trials: missing"),
    "test objective": (
        with_(objective={"metric": "test.accuracy", "direction": "maximize"}),
        "selects on the validation split only",
    ),
    "unknown metric": (
        with_(objective={"metric": "valid.speed", "direction": "maximize"}),
        "'valid.speed' is not one of",
    ),
    "direction against the metric": (
        with_(objective={"metric": "valid.loss", "direction": "maximize"}),
        "direction: minimize",
    ),
    "key not in params": (
        with_(space={"train.lrate": {"choices": [1]}}),
        "train.lrate is not in params.yaml; section train has: device",
    ),
    "a section": (with_(space={"train": {"choices": [1]}}), "is a section of params.yaml"),
    "reserved seed": (with_(space={"seed": {"low": 0, "high": 9}}), "set by the sweep itself"),
    "empty range": (
        with_(space={"train.lr": {"low": 0.01, "high": 0.01}}),
        "empty range (low 0.01 is not below high 0.01)",
    ),
    "log from zero": (
        with_(space={"model.dropout": {"low": 0.0, "high": 0.5, "log": True}}),
        "a log range needs low > 0",
    ),
    "float bounds on an int": (
        with_(space={"train.epochs": {"low": 1.5, "high": 4}}),
        "train.epochs is an integer",
    ),
    "range of a string": (
        with_(space={"train.optimizer": {"low": 1, "high": 2}}),
        "search it with choices",
    ),
    "value the stages refuse": (
        with_(space={"model.dropout": {"low": 0.0, "high": 1.5}}),
        "space.model.dropout: 1.5 is refused: model.dropout: must be in [0, 1)",
    ),
    "bad choice": (
        with_(space={"train.optimizer": {"choices": ["adamw", "lbfgs"]}}),
        "'lbfgs' is refused",
    ),
    "empty choices": (with_(space={"train.optimizer": {"choices": []}}), "non-empty list"),
    "repeated choice": (
        with_(space={"train.batch_size": {"choices": [64, 64]}}),
        "64 is listed twice",
    ),
    "empty space": (with_(space={}), "space: empty"),
    "too many trials": (with_(trials=100_000), "trials: must be in [1, 1000]"),
    "too few seeds": (with_(confirm={"top_k": 3, "seeds": 1}), "seeds: must be in [2, 10]"),
    "grid without steps": (
        with_(sampler={"name": "grid"}, space={"model.dropout": {"low": 0.0, "high": 0.5}}),
        "a grid needs a step",
    ),
    "grid smaller than trials": (
        with_(
            sampler={"name": "grid"}, trials=5, space={"train.batch_size": {"choices": [32, 64]}}
        ),
        "trials: 5, but the grid has only 2 points",
    ),
    "grid too large": (
        with_(
            sampler={"name": "grid"},
            space={
                "train.epochs": {"low": 1, "high": 200},
                "train.batch_size": {"low": 1, "high": 100},
            },
        ),
        "the grid has over 10000 points",
    ),
    "unknown sampler": (with_(sampler={"name": "cmaes"}), "'cmaes' is not one of: tpe"),
    "timeout": (with_(trial_timeout_min=0), "trial_timeout_min: must be in (0, 1440]"),
    "aliases": ("a: &x 1\nb: *x\n", "anchors and aliases"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_broken_sweep_file_is_one_line_naming_it(tmp_path, case):
    document, words = BAD[case]
    with pytest.raises(PipelineError) as caught:
        load(tmp_path, document)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 's.yaml'}: ") and "\n" not in message
    assert words in message


def test_an_unknown_preset_or_sweep_name_is_named(tmp_path):
    with pytest.raises(PipelineError, match="unknown preset 'nope'"):
        load(tmp_path, BASE, presets=["nope"])
    with pytest.raises(
        PipelineError, match="unknown sweep 'nope'; valid sweeps: cnn, cnn_fast, mlp"
    ):
        sweep_path(REPO / "sweeps", "nope")
    (tmp_path / "Bad-Name.yaml").write_text("{}")
    with pytest.raises(PipelineError, match="lowercase letters, digits and _"):
        sweep_path(tmp_path, "Bad-Name")


def test_the_selection_reads_the_validation_split_and_nothing_else():
    class NoTest(dict):
        def __getitem__(self, key):
            assert key != "test", "the test split was read"
            return super().__getitem__(key)

        def get(self, key, default=None):
            assert key != "test", "the test split was read"
            return super().get(key, default)

    document = NoTest(valid={"accuracy": 0.9, "loss": 0.3, "note": "x"}, test={"accuracy": 1.0})
    assert select_valid(document) == {"accuracy": 0.9, "loss": 0.3}
    with pytest.raises(PipelineError, match="no valid section"):
        select_valid({"test": {"accuracy": 1.0}})


def test_a_failed_trial_is_summed_up_by_its_stage_error_line():
    log = "Running stage 'train':\ntrain.py: error: train.lr: must be > 0\nERROR: failed\n"
    assert error_line(log, 1) == "train.py: error: train.lr: must be > 0"
    assert error_line("ERROR: failed \x1b[2J to run\n", 1) == "ERROR: failed \\x1b[2J to run"
    assert error_line("", 137) == "dvc exp run exited with 137"


def test_list_choices_travel_through_optuna_as_json_and_come_back(tmp_path):
    sweep = load(tmp_path, with_(space={"model.hidden_sizes": {"choices": [[32], [64, 32]]}}))
    (distribution,) = st.distributions(sweep).values()
    assert distribution.choices == ("[32]", "[64, 32]")
    assert st.overrides_of(sweep, {"model.hidden_sizes": "[64, 32]"}) == {
        "model.hidden_sizes": [64, 32]
    }


def test_a_grid_is_queued_once_in_a_seeded_order(tmp_path):
    sweep = load(
        tmp_path,
        with_(
            trials=4,
            sampler={"name": "grid", "seed": 3},
            space={
                "train.batch_size": {"choices": [32, 64]},
                "train.epochs": {"low": 1, "high": 3},
            },
        ),
    )
    plan = st.grid_plan(sweep)
    assert len(plan) == 4 and len({json.dumps(p, sort_keys=True) for p in plan}) == 4
    assert plan == st.grid_plan(sweep)
    study = optuna.create_study(direction="maximize")
    assert st.enqueue_grid(study, sweep) == 4
    assert st.enqueue_grid(study, sweep) == 0  # resumed: nothing queued twice


def test_the_confirmation_plan_reruns_candidates_and_the_baseline_with_fresh_seeds(tmp_path):
    sweep = load(tmp_path, with_(confirm={"top_k": 2, "seeds": 2}))
    study = optuna.create_study(direction="maximize")
    for value in (0.5, 0.9, 0.7):
        trial = study.ask(st.distributions(sweep))
        study.tell(trial, value)
    top = st.top_trials(study, 2)
    assert [t.number for t in top] == [1, 2]
    plan = st.confirm_plan(sweep, top)
    assert [(r[st.CANDIDATE], r[st.SEED]) for r in plan] == [
        (1, 1),
        (2, 1),
        ("baseline", 1),
        (1, 2),
        (2, 2),
        ("baseline", 2),
    ]
    assert plan[2][st.OVERRIDES] == {} and plan[0][st.EXPERIMENT] == "s-c1-s1"
    confirm = optuna.create_study(direction="maximize")
    assert st.enqueue_missing(confirm, plan) == 6
    assert st.enqueue_missing(confirm, plan) == 0


def test_crashed_trials_do_not_count_and_a_racing_ask_is_surplus():
    study = optuna.create_study()
    done = study.ask()
    study.tell(done, 1.0)
    crashed = study.ask()
    study.tell(crashed, state=TrialState.FAIL)  # no error attr: its process died
    failed = study.ask()
    failed.set_user_attr(st.ERROR, "train.py: error: ...")
    study.tell(failed, state=TrialState.FAIL)
    running = study.ask()
    trials = study.get_trials()
    assert st.tally(trials) == st.Tally(complete=1, failed=1, running=1, waiting=0)
    late = study.ask()
    assert not st.is_surplus(study.get_trials(), running.number, count=4)
    assert st.is_surplus(study.get_trials(), late.number, count=3)


def test_storage_urls_are_checked_and_passwords_never_shown():
    assert st.redact("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    with pytest.raises(PipelineError, match="expected sqlite:///PATH or postgresql"):
        st.check_url("mysql://bob:s3cret@db/x")
    with pytest.raises(PipelineError) as caught:
        st.check_url("http://bob:s3cret@db/x")
    assert "s3cret" not in str(caught.value)


def test_the_worker_templates_parse_and_start_a_worker():
    """docs/sweeps/: the Slurm script is valid bash and the Kubernetes Job valid YAML,
    each running `make sweep-worker` with the shared STORAGE at a fixed commit."""
    import subprocess

    slurm = REPO / "docs/sweeps/slurm.sbatch"
    assert subprocess.run(["bash", "-n", str(slurm)], capture_output=True).returncode == 0
    job = yaml.safe_load((REPO / "docs/sweeps/k8s-job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    script = container["args"][0]
    for text in (slurm.read_text(), script):
        assert 'git checkout --quiet "$COMMIT"' in text
        assert 'make sweep-worker SWEEP="$SWEEP" STORAGE="$STORAGE" JOBS="$JOBS"' in text
    env = {item["name"] for item in container["env"]}
    assert {"REPO_URL", "COMMIT", "SWEEP", "STORAGE", "JOBS"} <= env


def test_the_cli_and_the_script_are_one_command(capsys):
    from mnist_pipeline.__main__ import main

    status = main(["sweep", "run", "nope", "--sweeps-dir", str(REPO / "sweeps")])
    assert status == 1
    assert capsys.readouterr().err == (
        "mnist-pipeline sweep: error: unknown sweep 'nope'; valid sweeps: cnn, cnn_fast, mlp\n"
    )
    status = main(["sweep", "worker", "mlp", "--sweeps-dir", str(REPO / "sweeps")])
    assert status == 1 and "a worker needs --storage" in capsys.readouterr().err
