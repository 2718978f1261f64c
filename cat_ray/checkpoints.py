"""A run's checkpoint files: written once per epoch, linked where the same bytes are needed again, and
written on a background thread when nobody waits for them.

At the paper's sizes a checkpoint (model, Adam's moments, RNG states) is about 950 MB. Writing it
once is unavoidable; writing the same bytes again is not: ``best/`` of an improving epoch and the
folder handed to a sweep's reporter are hard links to ``checkpoints/last`` (the next epoch replaces
``last`` by a new file, so the links keep the old content). Where nothing reads the files right away
(``cat-ray train``), :class:`CheckpointWriter` writes them while the next epoch trains, from a copy of
the state taken at the epoch's end (benchmarks/checkpoint.py).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.yaml"


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2))


def detached_copy(tree: Any) -> Any:
    """``tree`` (dicts, lists, tuples of tensors and plain values) with every tensor copied to the CPU.

    The copy is what a background write saves while training goes on changing the live tensors in place.
    """
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {key: detached_copy(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(detached_copy(value) for value in tree)
    return tree


def write_checkpoint(folder: Path, payload: dict[str, Any], config_text: str) -> None:
    """``folder/checkpoint.pt`` and ``folder/config.yaml``, each replaced atomically (a crash leaves the old one)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (CHECKPOINT_FILE + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, folder / CHECKPOINT_FILE)
    write_text_atomic(folder / CONFIG_FILE, config_text)


def _link_or_copy(source: Path | str, target: Path | str) -> None:
    """``target`` becomes the same file as ``source`` (a hard link; a copy where links are not supported), atomically."""
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, tmp)
    os.replace(tmp, target)


def link_tree(source: Path, target: Path) -> None:
    """``target`` gets every file under ``source`` as hard links (copies where links are not supported);
    a write's leftover ``*.tmp`` is not taken."""
    shutil.copytree(source, target, copy_function=_link_or_copy, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.tmp"))


# The folders of links made next to a checkpoint for its readers (a reporter, an upload); a crash can
# leave them behind, holding old checkpoints' bytes: remove_linked_copies clears them.
LINKED_COPY_PREFIXES = ("report-", "upload-")


def linked_copy(folder: Path, prefix: str) -> Path:
    """A new folder beside ``folder`` (same file system) holding its files as hard links: no bytes written."""
    assert prefix in LINKED_COPY_PREFIXES, prefix
    copy = Path(tempfile.mkdtemp(prefix=prefix, dir=Path(folder).parent))
    link_tree(Path(folder), copy)
    return copy


def remove_linked_copies(parent: Path) -> None:
    for prefix in LINKED_COPY_PREFIXES:
        for stale in Path(parent).glob(prefix + "*"):
            shutil.rmtree(stale, ignore_errors=True)


def link_checkpoint(source: Path, folder: Path) -> None:
    """Make ``folder`` hold the checkpoint of folder ``source`` without writing its bytes again."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (CHECKPOINT_FILE, CONFIG_FILE):
        _link_or_copy(source / name, folder / name)


class CheckpointWriter:
    """Runs each epoch's writes in order, one at a time: inline, or on a background thread.

    ``submit(job)`` first waits for the previous job, so at most one epoch's files are in flight and
    they land in epoch order. An error in a background job is raised by the next ``submit`` or ``wait``.
    """

    def __init__(self, background: bool):
        self.background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], None]) -> None:
        self.wait()
        if not self.background:
            job()
            return

        def run() -> None:
            try:
                job()
            except BaseException as err:  # handed to the training thread at its next wait()
                self._error = err

        self._thread = threading.Thread(target=run, name="cat-ray-checkpoint", daemon=False)
        self._thread.start()

    def wait(self) -> None:
        """Block until the job in flight has finished; raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
