"""`cat-ray report` on a real small sweep (local Ray, real Optuna, a real MLflow store): the files are
written, their numbers are the MLflow runs' metrics, and they are logged to the sweep's parent run."""
from __future__ import annotations

import csv
import math
import os
import statistics
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
from scipy import stats

from cat_ray.cli_report import report
from cat_ray.platform import tracking
from cat_ray.platform.sweep import plan_sweep, run_sweep
from cat_ray.platform.trainer import init_ray
from cat_ray.search_space import load_search_space
from conftest import TINY, isolated_sweep_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two aggregators x two seeds, 2 epochs x 3 steps each, with the weight trace on."""
    root = tmp_path_factory.mktemp("report")
    mp = isolated_sweep_env(root)
    space = {"name": "tiny-report", "base": {"set": {**TINY, "train.weight_trace_every": 1}},
             "params": {"model.aggregator": {"type": "categorical", "choices": ["confidence", "average"]},
                        "train.seed": {"type": "categorical", "choices": [0, 1]}},
             "objective": {"metric": "val_pa_mpjpe", "mode": "min"},
             "search": {"sampler": "grid", "seed": 0, "max_concurrent": 2}, "scheduler": None,
             "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}}
    (root / "space.yaml").write_text(yaml.safe_dump(space))
    import ray

    tracking.prepare_store(os.environ["MLFLOW_TRACKING_URI"])
    init_ray(num_cpus=2)
    try:
        result = run_sweep(plan_sweep(load_search_space(root / "space.yaml"), "rep", root / "ray"))
    finally:
        ray.shutdown()
    assert not result.interrupted
    yield result, root
    mp.undo()


def _value_at_best(client: MlflowClient, run, metric: str) -> float:
    epoch = int(run.data.tags[tracking.BEST_EPOCH_TAG])
    return next(m.value for m in client.get_metric_history(run.info.run_id, metric) if int(m.step) == epoch)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_report_tables_match_the_mlflow_runs_and_land_on_the_parent_run(sweep):
    result, root = sweep
    out = root / "out"
    cli = CliRunner().invoke(report, ["rep", "--out", str(out), "--group-by", "aggregator", "--weight-trace"])
    assert cli.exit_code == 0, cli.output

    for name in ("report.md", "trials.csv", "summary.csv", "paired.csv", "val_pa_mpjpe.png", "weight_trace.png",
                 "weight_trace.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "val_pa_mpjpe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Recompute every summary figure from the runs themselves.
    client = MlflowClient(result.uri)
    runs = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    summary = {(r["model.aggregator"], r["metric"]): r for r in _rows(out / "summary.csv")}
    md = (out / "report.md").read_text()
    per_agg: dict[str, dict[str, float]] = {}
    for aggregator in ("confidence", "average"):
        mine = [r for r in runs if r.data.params["model.aggregator"] == aggregator]
        for metric in ("val_pa_mpjpe", "val_mpjpe", "val_pve", "val_accel_err"):
            values = [_value_at_best(client, r, metric) for r in mine]
            mean = statistics.fmean(values)
            low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
            row = summary[(aggregator, metric)]
            assert int(row["n"]) == 2
            assert math.isclose(float(row["mean"]), mean, rel_tol=1e-9)
            assert math.isclose(float(row["ci_low"]), low, rel_tol=1e-9)
            assert math.isclose(float(row["ci_high"]), high, rel_tol=1e-9)
            assert f"{mean:.1f} ± {(high - low) / 2:.1f}" in md
        per_agg[aggregator] = {r.data.params["train.seed"]: _value_at_best(client, r, "val_pa_mpjpe") for r in mine}

    # The paired test: average against confidence, paired by seed.
    paired = next(r for r in _rows(out / "paired.csv") if r["metric"] == "val_pa_mpjpe")
    assert paired["model.aggregator"] == "average" and int(paired["pairs"]) == 2
    test = stats.ttest_rel([per_agg["average"][s] for s in "01"], [per_agg["confidence"][s] for s in "01"])
    assert math.isclose(float(paired["p"]), test.pvalue, rel_tol=1e-9)
    assert paired["verdict"] == ("significant" if test.pvalue < 0.05 else "not significant")

    # Provenance: the sweep, the commit of its runs and both commands.
    parent = client.get_run(result.parent_run_id)
    commit = runs[0].data.tags.get("mlflow.source.git.commit") or parent.data.tags.get("mlflow.source.git.commit")
    assert "sweep `rep`" in md and "cat-ray report rep" in md and "cat-ray tune" in md
    if commit:
        assert commit[:10] in md

    # Each P_d alone (Table IV), when the training loop reports it.
    offsets_metrics = [k for k in runs[0].data.metrics if k.startswith("val_pa_mpjpe_d")]
    if any(r.data.params["model.aggregator"] == "confidence" and "val_pa_mpjpe_d0" in r.data.metrics for r in runs):
        assert (out / "per_offset.csv").is_file() and "P_0 alone" in md, offsets_metrics

    # The weight trace (Fig. 7) covers the steps of the best epoch of both confidence runs.
    trace = [r for r in _rows(out / "weight_trace.csv") if r["model.aggregator"] == "confidence"]
    assert {r["offset"] for r in trace} == {"-2", "-1", "0", "1", "2"}
    assert all(abs(sum(float(r["mean"]) for r in trace if r["step"] == s) - 1) < 1e-4 for s in {r["step"] for r in trace})

    # The same files are on the parent run.
    logged = {Path(a.path).name for a in client.list_artifacts(result.parent_run_id, "report/out")}
    assert {"report.md", "trials.csv", "summary.csv", "paired.csv", "val_pa_mpjpe.png"} <= logged


def test_report_filters_trials_and_refuses_unknown_names_in_one_line(sweep):
    result, root = sweep
    runner = CliRunner()
    out = root / "only-average"
    cli = runner.invoke(report, ["rep", "--out", str(out), "--where", "aggregator=average", "--no-log"])
    assert cli.exit_code == 0, cli.output
    rows = _rows(out / "trials.csv")
    assert len(rows) == 2 and {r["model.aggregator"] for r in rows} == {"average"}
    assert "No comparison" in (out / "report.md").read_text()  # no confidence trials left to pair with
    # With CR 0 nothing is blocked: the blocking mode and CnSc are reported as "-", whatever the config says.
    cli = runner.invoke(report, ["rep", "--out", str(out), "--where", "CnSc=-", "--group-by", "aggregator,CnSc", "--no-log"])
    assert cli.exit_code == 0, cli.output
    assert {r["data.corruption.consecutive"] for r in _rows(out / "trials.csv")} == {"-"} and len(_rows(out / "trials.csv")) == 4

    bad = runner.invoke(report, ["nope", "--out", str(root / "x")])
    assert bad.exit_code == 1 and "no sweep named 'nope'" in bad.output and "rep" in bad.output
    bad = runner.invoke(report, ["rep", "--out", str(root / "x"), "--metric", "val_nothing"])
    assert bad.exit_code == 1 and "val_nothing" in bad.output and "val_pa_mpjpe" in bad.output
