"""Checkpoint files: written once, linked where the same bytes are needed again, written in the background
without losing an epoch or an error."""
from __future__ import annotations

import json
import os
import threading

import pytest
import torch

from cat_ray.checkpoints import CHECKPOINT_FILE, CheckpointWriter, detached_copy, link_checkpoint, write_checkpoint
from cat_ray.config import build_config
from cat_ray.train_loop import train


def _load(folder):
    return torch.load(folder / CHECKPOINT_FILE, weights_only=False)


def test_a_linked_checkpoint_keeps_its_content_when_the_source_is_written_again(tmp_path):
    last, best = tmp_path / "last", tmp_path / "best"
    write_checkpoint(last, {"w": torch.zeros(3), "epoch": 1}, "epoch: 1\n")
    link_checkpoint(last, best)
    assert os.path.samefile(last / CHECKPOINT_FILE, best / CHECKPOINT_FILE)  # no second copy of the bytes
    write_checkpoint(last, {"w": torch.ones(3), "epoch": 2}, "epoch: 2\n")
    assert _load(best)["epoch"] == 1 and torch.equal(_load(best)["w"], torch.zeros(3))
    assert _load(last)["epoch"] == 2 and (best / "config.yaml").read_text() == "epoch: 1\n"
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_detached_copy_does_not_follow_in_place_updates():
    live = {"model": {"w": torch.zeros(2)}, "moments": [torch.zeros(2)], "epoch": 3}
    copy = detached_copy(live)
    live["model"]["w"].add_(1)
    live["moments"][0].add_(1)
    assert torch.equal(copy["model"]["w"], torch.zeros(2)) and torch.equal(copy["moments"][0], torch.zeros(2))
    assert copy["epoch"] == 3


def test_background_writer_runs_jobs_in_order_off_the_calling_thread_and_raises_their_errors():
    writer = CheckpointWriter(background=True)
    done, threads = [], []
    for epoch in (1, 2, 3):
        writer.submit(lambda e=epoch: (threads.append(threading.current_thread()), done.append(e)))
    writer.wait()
    assert done == [1, 2, 3] and threading.main_thread() not in threads

    def fail() -> None:
        raise OSError("disk full")

    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.wait()
    writer.wait()  # the error is raised once


def test_a_run_links_best_to_last_and_hands_the_reporter_links(tiny_overrides, tmp_path):
    cfg = build_config(None, {**tiny_overrides, "train.epochs": 3})
    run = tmp_path / "run"
    handed = []

    def reporter(epoch, metrics, checkpoint_dir):
        last = run / "checkpoints" / "last" / CHECKPOINT_FILE
        handed.append(os.path.samefile(checkpoint_dir / CHECKPOINT_FILE, last))

    train(cfg, run, reporter=reporter, progress=False)
    assert handed == [True, True, True]
    history = json.loads((run / "metrics.json").read_text())["history"]
    best_epoch = min(history, key=lambda h: h["val_pa_mpjpe"])["epoch"]
    assert _load(run / "best")["state"]["epoch"] == best_epoch  # the best epoch's state, not the last one's
    assert os.path.samefile(run / "best" / CHECKPOINT_FILE, run / "checkpoints" / "last" / CHECKPOINT_FILE) \
        == (best_epoch == 3)
    assert not list((run / "checkpoints").glob("report-*"))  # the reporter's folders are gone


def test_a_run_without_reporter_has_its_last_epoch_on_disk_when_train_returns(tiny_overrides, tmp_path):
    """cat-ray train writes checkpoints in the background: train() waits for the last one."""
    cfg = build_config(None, {**tiny_overrides, "train.epochs": 2})
    metrics = train(cfg, tmp_path / "run", progress=False)
    last = _load(tmp_path / "run" / "checkpoints" / "last")
    assert last["state"]["epoch"] == 2 and last["state"]["history"][-1]["val_pa_mpjpe"] == metrics["val_pa_mpjpe"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epoch"] == 2


def test_a_run_clears_folders_of_links_that_a_crash_left_behind(tiny_overrides, tmp_path):
    """Each holds an old checkpoint's bytes alive; nothing reads them after the process that made them."""
    stale = [tmp_path / "run" / "checkpoints" / name for name in ("report-abc", "upload-def")]
    for folder in stale:
        folder.mkdir(parents=True)
        (folder / CHECKPOINT_FILE).write_text("old")
    train(build_config(None, {**tiny_overrides, "train.epochs": 1}), tmp_path / "run", progress=False)
    assert not any(folder.exists() for folder in stale)
