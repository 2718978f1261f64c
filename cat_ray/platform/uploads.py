"""Uploading a trial's best checkpoint off the training thread, newest first.

A paper-sized checkpoint is about 950 MB; through a cluster's MLflow server one upload takes
seconds (4-6 s on loopback here), and early in training nearly every epoch improves. So the upload
runs on a thread while training goes on, and only the newest best is worth sending: one that is
superseded before its upload started is dropped (latest wins). ``close()`` waits for the last one.
"""
from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from cat_ray.checkpoints import linked_copy


class LatestWinsUploader:
    """``upload(folder, epoch)`` for the newest submitted folder, one at a time, on a background thread.

    ``submit`` takes a private copy of the folder made of hard links (no bytes written; the caller may
    delete its folder at once). An upload error is raised by the next ``submit`` or by ``close``.
    """

    def __init__(self, upload: Callable[[Path, int], None]):
        self._upload = upload
        self._lock = threading.Condition()
        self._pending: tuple[Path, int] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, folder: Path, epoch: int) -> None:
        self._raise_error()
        private = linked_copy(folder, "upload-")
        with self._lock:
            if self._pending is not None:  # superseded before its upload began
                shutil.rmtree(self._pending[0], ignore_errors=True)
            self._pending = (private, epoch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cat-ray-upload", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._pending is None or self._error is not None:
                    self._thread = None
                    self._lock.notify_all()
                    return
                folder, epoch = self._pending
                self._pending = None
            try:
                self._upload(folder, epoch)
            except BaseException as err:  # handed to the training thread
                with self._lock:
                    self._error = err
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Wait until the newest submitted folder is uploaded; raise an upload's error, if any."""
        with self._lock:
            while self._thread is not None:
                self._lock.wait()
            if self._pending is not None:  # left by an upload that failed
                shutil.rmtree(self._pending[0], ignore_errors=True)
                self._pending = None
        self._raise_error()

    def _raise_error(self) -> None:
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error
