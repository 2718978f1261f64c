"""The MLflow UI as a user sees it: `mlflow ui` on 127.0.0.1 over a store holding a finished sweep,
loaded in headless Chromium (the UI is a JavaScript app: `--dump-dom` after a virtual-time budget gives
the rendered page). Checks that the experiment, the sweep's parent run, its nested trial runs and their
parameters and metrics are shown, and takes a screenshot of the compare view."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from cat_ray.platform import tracking
from cat_ray.platform.sweep import plan_sweep, run_sweep
from cat_ray.platform.trainer import init_ray
from cat_ray.search_space import load_search_space
from conftest import TINY, isolated_sweep_env

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                                "(apt-get install -y chromium)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--window-size=1400,900", "--virtual-time-budget=20000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium(url: str, profile: Path, *args: str) -> str:
    """Load ``url`` in headless Chromium with a throw-away profile; returns stdout (the DOM with --dump-dom)."""
    out = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, url],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def visible_text(html: str) -> str:
    """The page's text as a reader sees it: scripts, styles and tags removed, white space collapsed."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """The UI's compare view of ``run_ids`` (parameters, metrics and tags side by side)."""
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])})
    return f"{base}/#/compare-runs?{query}"


def start_ui(uri: str, port: int, log: Path) -> subprocess.Popen:
    """``mlflow ui`` over ``uri`` on 127.0.0.1:``port``, one worker; returns once /health answers."""
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise AssertionError(f"mlflow ui did not answer on port {port}: {log.read_text()[-3000:]}")


def api(base: str, endpoint: str, body: dict) -> dict:
    request = urllib.request.Request(f"{base}/ajax-api/2.0/mlflow/{endpoint}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A finished two-trial sweep in a fresh store, and `mlflow ui` serving it."""
    root = tmp_path_factory.mktemp("ui")
    mp = isolated_sweep_env(root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    space = {"name": "ui-check", "base": {"set": dict(TINY)},
             "params": {"model.aggregator": {"type": "categorical", "choices": ["confidence", "gru"]}},
             "objective": {"metric": "val_pa_mpjpe", "mode": "min"},
             "search": {"sampler": "grid", "seed": 0, "max_concurrent": 2}, "scheduler": None,
             "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}}
    (root / "space.yaml").write_text(yaml.safe_dump(space))
    import ray

    tracking.prepare_store(uri)
    init_ray(num_cpus=2)
    try:
        result = run_sweep(plan_sweep(load_search_space(root / "space.yaml"), "ui-sweep", root / "ray"))
    finally:
        ray.shutdown()
    port = free_port()
    proc = start_ui(uri, port, root / "ui.log")
    yield result, f"http://127.0.0.1:{port}", root
    proc.terminate()
    proc.wait(timeout=30)
    mp.undo()


def test_the_server_holds_the_experiment_the_sweep_and_its_nested_trials(ui):
    result, base, _ = ui
    experiments = {e["name"]: e["experiment_id"] for e in api(base, "experiments/search", {"max_results": 100})["experiments"]}
    assert experiments.get("ui-check") == result.experiment_id
    runs = api(base, "runs/search", {"experiment_ids": [result.experiment_id], "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    assert sum(t.get(tracking.ROLE_TAG) == "sweep" for t in tags) == 1
    children = [(r, t) for r, t in zip(runs, tags) if t.get(tracking.PARENT_TAG) == result.parent_run_id]
    assert {t["aggregator"] for _, t in children} == {"confidence", "gru"}
    for run, _ in children:
        assert run["info"]["status"] == "FINISHED"
        assert {"val_pa_mpjpe", "val_mpjpe", "train_loss"} <= {m["key"] for m in run["data"]["metrics"]}


def test_the_runs_page_shows_the_experiment_and_the_sweep_with_its_trials(ui):
    result, base, root = ui
    text = visible_text(chromium(f"{base}/#/experiments/{result.experiment_id}/runs", root / "chromium", "--dump-dom"))
    assert "ui-check" in text  # the experiment
    assert "ui-sweep" in text  # the sweep's parent run; its trials are nested under it
    assert "3 matching runs" in text, text[:3000]


def test_the_compare_view_shows_each_trial_with_its_parameters_and_metrics(ui):
    result, base, root = ui
    from mlflow import MlflowClient

    client = MlflowClient(result.uri)
    children = client.search_runs([result.experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{result.parent_run_id}'")
    url = compare_url(base, result.experiment_id, [r.info.run_id for r in children])
    text = visible_text(chromium(url, root / "chromium", "--dump-dom"))
    assert f"Comparing {len(children)} Runs" in text, text[:3000]
    for run in children:
        assert run.info.run_name in text  # "confidence d=-2..2 seed0 #1": aggregator, offsets and seed at a glance
        # The metrics table shows its first rows (alphabetical) without scrolling: val_mpjpe is among them.
        value = run.data.metrics["val_mpjpe"]
        assert f"{value:.4g}" in text or f"{value:.1f}" in text, (value, text[-4000:])
    for name in ("model.aggregator", "model.offsets", "train.seed", "val_mpjpe", "train_loss", "agg_weight_d0",
                 tracking.SWEEP_TAG, tracking.BEST_EPOCH_TAG, "config.yaml"):
        assert name in text, name

    shot = root / "compare.png"
    chromium(url, root / "chromium", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
