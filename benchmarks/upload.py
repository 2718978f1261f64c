"""The best checkpoint's upload to MLflow per improving epoch, at the paper's size, through a real
tracking server (as on a cluster: ``mlflow server --serve-artifacts`` on the head, trials sending
their artifacts over HTTP).

- **reference**: ``MlflowClient.log_artifacts`` inline, the training waits for the upload;
- **cat_ray**: ``EpochLogger`` (the tags at once, the upload on a background thread, latest wins):
  the time the training thread is held, then the upload's own time (``close()``).

The benchmark starts the server itself (its own SQLite store and artifact folder, a free port on
127.0.0.1) and uploads a 0.95 GB file, the size of a paper checkpoint with Adam's moments.

    python benchmarks/upload.py [--repeats 3] [--size-gb 0.95] [--dir PATH]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from common import goal_line, machine_line

from cat_ray.platform.tracking import EpochLogger, TrackingTarget


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=1)
            return server, uri
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("mlflow server did not start within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="improving epochs per candidate (default 3)")
    parser.add_argument("--size-gb", type=float, default=0.95, help="checkpoint size (default 0.95, the paper's)")
    parser.add_argument("--dir", default=".", help="where the checkpoint and the server's files go (default: here)")
    args = parser.parse_args()
    print(machine_line(torch.device("cpu")), flush=True)
    from mlflow import MlflowClient

    root = Path(tempfile.mkdtemp(prefix="cat-ray-bench-upload-", dir=args.dir))
    server = None
    try:
        server, uri = start_server(root / "server")
        client = MlflowClient(uri)
        experiment = client.create_experiment("upload")
        ckpt = root / "checkpoints" / "epoch"
        ckpt.mkdir(parents=True)
        with open(ckpt / "checkpoint.pt", "wb") as f:
            f.write(os.urandom(int(args.size_gb * 1e9)))
        print(f"tracking server {uri}; a {args.size_gb:.2f} GB checkpoint per improving epoch", flush=True)

        inline, held, background = [], [], []
        for _ in range(args.repeats):  # interleaved: one reference upload, then one of cat_ray's
            run_id = client.create_run(experiment).info.run_id
            start = time.perf_counter()
            client.log_artifacts(run_id, str(ckpt), "best_checkpoint")
            inline.append(time.perf_counter() - start)

            run_id = client.create_run(experiment).info.run_id
            logger = EpochLogger(TrackingTarget(uri, run_id, "val_pa_mpjpe", "min"))
            start = time.perf_counter()
            logger(1, {"val_pa_mpjpe": 50.0}, ckpt)
            held.append(time.perf_counter() - start)
            logger.close()
            background.append(time.perf_counter() - start)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(root, ignore_errors=True)

    for label, values in (("reference: log_artifacts inline", inline), ("cat_ray: training thread held", held),
                          ("cat_ray: until the upload is done", background)):
        print(f"  {label:<40s} best {min(values):7.3f} s   median {statistics.median(values):7.3f} s")
    print(goal_line("reference upload time / time cat_ray holds the training per improving epoch",
                    min(inline) / min(held), None))


if __name__ == "__main__":
    main()
