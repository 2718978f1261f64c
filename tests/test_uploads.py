"""The best checkpoint's background upload: off the training thread, newest first, errors not lost."""
from __future__ import annotations

import threading

import pytest

from cat_ray.platform.uploads import LatestWinsUploader


def _folder(root, epoch):
    folder = root / f"ckpt{epoch}"
    folder.mkdir()
    (folder / "checkpoint.pt").write_text(f"epoch {epoch}")
    return folder


def test_a_best_superseded_while_an_upload_runs_is_never_uploaded(tmp_path):
    started, release, uploaded = threading.Event(), threading.Event(), []

    def upload(folder, epoch):
        uploaded.append((epoch, (folder / "checkpoint.pt").read_text(), threading.current_thread()))
        started.set()
        release.wait(10)

    uploader = LatestWinsUploader(upload)
    uploader.submit(_folder(tmp_path, 1), 1)
    assert started.wait(10)  # epoch 1 is being uploaded; 2 and 3 arrive meanwhile
    for epoch in (2, 3):
        folder = _folder(tmp_path, epoch)
        uploader.submit(folder, epoch)
        (folder / "checkpoint.pt").unlink()  # the caller's folder may go at once: the uploader holds links
    release.set()
    uploader.close()
    assert [(e, text) for e, text, _ in uploaded] == [(1, "epoch 1"), (3, "epoch 3")]
    assert threading.main_thread() not in {t for _, _, t in uploaded}
    assert not list(tmp_path.glob("upload-*"))


def test_an_upload_error_reaches_the_caller(tmp_path):
    def upload(folder, epoch):
        raise ConnectionError("tracking server unreachable")

    uploader = LatestWinsUploader(upload)
    uploader.submit(_folder(tmp_path, 1), 1)
    with pytest.raises(ConnectionError, match="unreachable"):
        uploader.close()
