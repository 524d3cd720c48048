"""Hostile inputs at full scale, through the real commands: one row per attack with the
command, its exit status, wall time, peak resident memory and the last line it printed.

    python -m benchmarks.hostile [--only SUBSTRING] [--headers-s 30]

The tests (tests/*/test_hostile_*.py) check the same refusals at small scale with their
bounds; this prints the figures of the README's "Limits and troubleshooting" at the sizes
the issue names. Nothing here needs the network: the slow server is on 127.0.0.1.
Run it on a quiet machine (`uptime`): wall times are the machine's.
"""

import argparse
import gzip
import http.server
import io
import itertools
import os
import struct
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mnist_pipeline.data import prepared
from mnist_pipeline.data.raw_formats import read_raw
from mnist_pipeline.data.registry import DIGIT_NAMES
from mnist_pipeline.model.checkpoint import save_checkpoint
from mnist_pipeline.model.networks import InputSpec, build_model
from mnist_pipeline.testing import synthetic
from mnist_pipeline.testing.bounds import Run, run_measured
from mnist_pipeline.testing.configs import complete_params, make_params, model_config
from mnist_pipeline.testing.holds import kill_train_after_epoch

REPO = Path(__file__).resolve().parents[1]
SPEC = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.1, pixel_std=0.3)


@dataclass(frozen=True)
class Case:
    attack: str
    command: str
    run: Callable[[Path], Run]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose attack contains this")
    args = parser.parse_args()
    print(
        f"uptime: {os.getloadavg()[0]:.2f} load; torch {torch.__version__}; {os.cpu_count()} CPUs"
    )
    print("| attack | command | exit | wall s | peak RSS MB | last line |")
    print("|---|---|---|---|---|---|")
    for case in CASES:
        if args.only not in case.attack:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            run = case.run(Path(tmp))
        line = (run.stderr.strip().splitlines() or run.stdout.strip().splitlines() or [""])[-1]
        line = line.replace(str(tmp), "…").replace("|", "\\|")[:150]
        print(
            f"| {case.attack} | {case.command} | {run.returncode} | {run.seconds:.1f} | "
            f"{run.peak_rss_kb / 1000:.0f} | {line} |",
            flush=True,
        )


# --- inputs -----------------------------------------------------------------------------------


def prepared_data(tmp: Path) -> Path:
    splits = synthetic.make_splits((300, 60, 60), seed=11)
    synthetic.write_raw_dir(tmp / "raw", "pickle", splits)
    parsed, description = read_raw(tmp / "raw")
    prepared.write_prepared(parsed, description["class_names"], "mnist", 100, tmp / "prepared")
    return tmp / "prepared"


def real_checkpoint(path: Path, hidden: tuple[int, ...] = (16,)) -> dict:
    config = model_config(hidden_sizes=hidden, dropout=0.0)
    model = build_model(config, SPEC)
    save_checkpoint(path, model, config, SPEC, list(DIGIT_NAMES), make_params(model=config), {})
    return torch.load(path, weights_only=True)


def mlp_shapes(hidden: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The state dict's shapes of the MLP `build_model` makes (norm, flatten, then Linear
    and ReLU in turn): written out, as a config past the parameter limit cannot be built."""
    widths, shapes = (784, *hidden, 10), {}
    for layer, (inputs, outputs) in enumerate(itertools.pairwise(widths)):
        shapes[f"{2 + 2 * layer}.weight"] = (outputs, inputs)
        shapes[f"{2 + 2 * layer}.bias"] = (outputs,)
    return shapes


def stride0_checkpoint(path: Path, hidden: tuple[int, ...]) -> Path:
    payload = real_checkpoint(path)
    shapes = mlp_shapes(hidden)
    payload["model_config"]["hidden_sizes"] = list(hidden)
    payload["state_dict"] = {k: torch.zeros(1).expand(s) for k, s in shapes.items()}
    torch.save(payload, path)
    return path


def deflated_checkpoint(path: Path) -> Path:
    """The widest MLP params allow (52 M values, 208 MB), its zip entries deflated."""
    shapes = mlp_shapes((65_536,))
    payload = real_checkpoint(path)
    payload["model_config"]["hidden_sizes"] = [65_536]
    payload["state_dict"] = {k: torch.zeros(s) for k, s in shapes.items()}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    del payload
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info), zipfile.ZIP_DEFLATED)
    return path


def nan_checkpoint(path: Path) -> Path:
    payload = real_checkpoint(path)
    payload["state_dict"]["2.weight"][0, 0] = float("nan")
    torch.save(payload, path)
    return path


def npy_image(path: Path) -> Path:
    np.save(path, np.zeros((28, 28), dtype=np.uint8))
    return path


def jpeg_claiming(path: Path, side: int) -> Path:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 0).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    path.write_bytes(bytes(data))
    return path


def gz_idx_bomb(path: Path) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">4i", 0x803, 1, 16384, 16384))
        f.write(bytes(16384 * 16384))
    return path


# --- commands ---------------------------------------------------------------------------------


def predict(model: Path, *args: str) -> Run:
    argv = ["-m", "mnist_pipeline", "predict", "--device", "cpu", "--model", str(model), *args]
    return run_measured(argv, REPO, timeout_s=300)


def stage(name: str, *args: str) -> Run:
    return run_measured([str(REPO / "stages" / f"{name}.py"), *args], REPO, timeout_s=600)


def evaluate(tmp: Path, model: Path) -> Run:
    params = tmp / "params.yaml"
    params.write_text(complete_params("evaluate: {device: cpu}\n"))
    return stage(
        "evaluate",
        *("--params", str(params), "--data", str(prepared_data(tmp)), "--model", str(model)),
        *("--metrics", str(tmp / "m.json"), "--tables", str(tmp / "t")),
        *("--figures", str(tmp / "f")),
    )


def export(tmp: Path, model: Path) -> Run:
    return stage(
        "export",
        *("--data", str(prepared_data(tmp)), "--model", str(model)),
        *("--torchscript", str(tmp / "m.ts"), "--onnx", str(tmp / "m.onnx")),
        *("--metrics", str(tmp / "parity.json")),
    )


def check_params(tmp: Path) -> Run:
    params = tmp / "params.yaml"
    params.write_text(complete_params("model: {hidden_sizes: [65536, 65536, 65536, 65536]}\n"))
    return run_measured([str(REPO / "scripts" / "check_params.py"), str(params)], REPO)


def fifo_input(tmp: Path) -> Run:
    fifo = tmp / "pipe.png"
    os.mkfifo(fifo)
    return predict(real_checkpoint_path(tmp), str(fifo))


def device_link(tmp: Path) -> Run:
    link = tmp / "zero-ubyte"
    link.symlink_to("/dev/zero")
    return predict(real_checkpoint_path(tmp), str(link))


def control_names(tmp: Path) -> Run:
    good = npy_image(tmp / "ok\x1b]0;title\x07.npy")
    bad = tmp / "bad\x1b[2J\nname.png"
    bad.write_bytes(b"not an image")
    return predict(real_checkpoint_path(tmp), "--format", "csv", str(good), str(bad))


def out_link(tmp: Path) -> Run:
    target = tmp / "precious"
    target.write_text("keep")
    (tmp / "out.json").symlink_to(target)
    run = predict(
        real_checkpoint_path(tmp), "--out", str(tmp / "out.json"), str(npy_image(tmp / "a.npy"))
    )
    assert target.read_text() == "keep" and (tmp / "out.json").is_symlink()
    return run


def huge_calibration(tmp: Path) -> Run:
    metrics = tmp / "evaluate.json"
    with open(metrics, "wb") as f:  # sparse: 1 GB claimed, nothing on the disk
        f.truncate(1_000_000_000)
    return predict(
        real_checkpoint_path(tmp), "--calibration", str(metrics), str(npy_image(tmp / "a.npy"))
    )


def fifo_calibration(tmp: Path) -> Run:
    fifo = tmp / "evaluate.json"
    os.mkfifo(fifo)
    return predict(
        real_checkpoint_path(tmp), "--calibration", str(fifo), str(npy_image(tmp / "a.npy"))
    )


def real_checkpoint_path(tmp: Path) -> Path:
    path = tmp / "model.pt"
    real_checkpoint(path)
    return path


def broken_state(change: Callable[[dict], None]) -> Callable[[Path], Run]:
    def run(tmp: Path) -> Run:
        params = tmp / "params.yaml"
        params.write_text(
            complete_params(
                "model: {name: mlp, hidden_sizes: [16], dropout: 0.0}\n"
                "train: {device: cpu, epochs: 3, batch_size: 50, threads: 1, optimizer: adam,"
                " manual_mlp_step: false}\n"
            )
        )
        argv = [
            str(REPO / "stages" / "train.py"),
            *("--params", str(params), "--data", str(prepared_data(tmp))),
            *("--model", str(tmp / "model.pt"), "--log-dir", str(tmp / "log")),
            *("--state-dir", str(tmp / "state")),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1"}
        kill_train_after_epoch(argv, 1, env)
        state_file = tmp / "state" / "state.pt"
        payload = torch.load(state_file, weights_only=True)
        change(payload["state"])
        torch.save(payload, state_file)
        result = run_measured(argv, REPO, timeout_s=600)
        notes = [line for line in result.stdout.splitlines() if "starting fresh" in line]
        return Run(result.returncode, "\n".join(notes), "", result.peak_rss_kb, result.seconds)

    return run


def _stride0_adam(state: dict) -> None:
    for slot in state["optimizer"]["state"].values():
        slot["exp_avg"] = torch.zeros(1).expand(slot["exp_avg"].shape)


def _nan_state(state: dict) -> None:
    state["model"]["2.weight"][0, 0] = float("nan")


def _epoch_99(state: dict) -> None:
    state["epoch"] = 99


def make_seeds(tmp: Path) -> Run:
    return run_measured(
        [
            "-c",
            "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))",
            "make",
            "--no-print-directory",
            "-C",
            str(REPO),
            "seeds",
            "K=100000",
        ],
        REPO,
    )


def make_injection(tmp: Path) -> Run:
    marker = tmp / "pwned"
    run = run_measured(
        [
            "-c",
            "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))",
            "make",
            "--no-print-directory",
            "-C",
            str(REPO),
            "exps",
            f"LIMIT=1; touch {marker}",
        ],
        REPO,
    )
    assert not marker.exists(), "make ran the injected command"
    return run


class _SlowHeaders(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        try:
            for byte in b"HTTP/1.1 200 OK\r\n" * 1000:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


def slow_headers(tmp: Path) -> Run:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHeaders)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/mnist.pkl.gz"
    params = tmp / "params.yaml"
    params.write_text(complete_params(f"fetch: {{dataset: mnist, source: '{url}'}}\n"))
    try:
        return stage("fetch", "--params", str(params), "--out", str(tmp / "raw"))
    finally:
        server.shutdown()


CASES = [
    Case(
        "4 kB checkpoint, stride-0 weights claiming hidden_sizes [32768, 32768]",
        "predict",
        lambda t: predict(
            stride0_checkpoint(t / "m.pt", (32768, 32768)), str(npy_image(t / "a.npy"))
        ),
    ),
    Case(
        "7 kB checkpoint, stride-0 weights of the widest MLP allowed ([65536])",
        "predict",
        lambda t: predict(stride0_checkpoint(t / "m.pt", (65536,)), str(npy_image(t / "a.npy"))),
    ),
    Case("the same", "evaluate", lambda t: evaluate(t, stride0_checkpoint(t / "m.pt", (65536,)))),
    Case("the same", "export", lambda t: export(t, stride0_checkpoint(t / "m.pt", (65536,)))),
    Case(
        "deflated checkpoint: 208 MB of weights in a small zip",
        "predict",
        lambda t: predict(deflated_checkpoint(t / "m.pt"), str(npy_image(t / "a.npy"))),
    ),
    Case(
        "NaN weights",
        "predict",
        lambda t: predict(nan_checkpoint(t / "m.pt"), str(npy_image(t / "a.npy"))),
    ),
    Case("params: a 4 x 65536 MLP (12.9 G parameters)", "check_params.py", check_params),
    Case(
        ".idx.gz of 261 kB holding one 16384x16384 image",
        "predict",
        lambda t: predict(real_checkpoint_path(t), str(gz_idx_bomb(t / "x-ubyte.gz"))),
    ),
    Case("*-ubyte link to /dev/zero", "predict", device_link),
    Case(
        "333-byte JPEG whose header says 13000x13000",
        "predict",
        lambda t: predict(real_checkpoint_path(t), str(jpeg_claiming(t / "x.jpg", 13000))),
    ),
    Case("a FIFO given directly", "predict", fifo_input),
    Case(
        "--mc-samples 1000000",
        "predict",
        lambda t: predict(
            real_checkpoint_path(t), "--mc-samples", "1000000", str(npy_image(t / "a.npy"))
        ),
    ),
    Case("file names with ESC, BEL and a newline", "predict", control_names),
    Case("--out is a symbolic link", "predict", out_link),
    Case(
        "--out in a missing folder",
        "predict",
        lambda t: predict(
            real_checkpoint_path(t), "--out", str(t / "no" / "o.json"), str(npy_image(t / "a.npy"))
        ),
    ),
    Case("--calibration a 1 GB metrics file", "predict", huge_calibration),
    Case("--calibration a FIFO", "predict", fifo_calibration),
    Case("state with stride-0 Adam tensors (was SIGSEGV)", "train", broken_state(_stride0_adam)),
    Case("state with NaN weights", "train", broken_state(_nan_state)),
    Case("state at epoch 99 of 3", "train", broken_state(_epoch_99)),
    Case("make seeds K=100000", "make", make_seeds),
    Case("make exps LIMIT='1; touch pwned'", "make", make_injection),
    Case("server trickling its headers at 1 byte/s", "fetch", slow_headers),
]


if __name__ == "__main__":
    main()
