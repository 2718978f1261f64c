"""A real two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and one more node,
one CPU each): a sweep whose trials train with two DDP workers (TorchTrainer, gloo) must spread each
trial over both nodes, and MLflow must show every trial finished with metrics and a checkpoint."""
from __future__ import annotations

import os

import pytest
from mlflow import MlflowClient

from cat_ray.platform import tracking
from cat_ray.platform.sweep import plan_sweep, run_sweep
from cat_ray.search_space import load_search_space
from test_sweep import write_space

pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes(tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("CAT_RAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_two_worker_trials_run_across_two_nodes_and_are_tracked(two_nodes, tmp_path):
    space_file = write_space(tmp_path, {"optim.lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-3}}, 2,
                             search={"max_concurrent": 2}, resources={"workers": 2, "cpus_per_worker": 1})
    space = load_search_space(space_file)
    result = run_sweep(plan_sweep(space, "two-nodes", tmp_path / "ray"), address=two_nodes.address)
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    assert len(runs) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        assert [int(m.step) for m in client.get_metric_history(run.info.run_id, "val_pa_mpjpe")] == [1, 2]
        assert "best_checkpoint/checkpoint.pt" in [a.path for a in client.list_artifacts(run.info.run_id, "best_checkpoint")]
        # Each of the 2 ranks on its own node: a 1-CPU node cannot hold two 1-CPU workers.
        nodes = run.data.tags[tracking.NODES_TAG].split(",")
        assert len(nodes) == 2 and len(set(nodes)) == 2
