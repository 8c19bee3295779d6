"""How result pairs reach the disk: permissions, fsync and rename order, crashes and never overwriting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mega_runtime.io import result as result_mod
from mega_runtime.io.result import OutputExistsError, ResultFormatError, read_result, write_result
from tests.addon_pure.helpers import load_pure_module
from tests.runtime.test_result_tracking import make_result

REPO = Path(__file__).resolve().parents[2]
posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX permissions and directory fsync")


def visible_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@posix_only
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027], ids=lambda u: f"umask_{u:03o}")
def test_written_files_get_the_mode_the_users_umask_allows(tmp_path, umask):
    previous = os.umask(umask)
    try:
        paths = write_result(make_result(), tmp_path / "r")
    finally:
        os.umask(previous)
    for path in paths:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


class DiskLog:
    """Records fsync (of files and folders, by inode) and every rename or link that gives a file its name."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str, int]] = []
        real_fsync, real_replace, real_link, real_unlink = os.fsync, os.replace, os.link, os.unlink

        def fsync(fd: int) -> None:
            import stat

            info = os.fstat(fd)
            self.events.append(("fsync", "dir" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino))
            real_fsync(fd)

        def replace(src, dst, *args, **kwargs):
            self.events.append(("publish", Path(dst).name, os.stat(src).st_ino))
            real_replace(src, dst, *args, **kwargs)

        def link(src, dst, *args, **kwargs):
            self.events.append(("publish", Path(dst).name, os.stat(src).st_ino))
            real_link(src, dst, *args, **kwargs)

        def unlink(path, *args, **kwargs):
            if not Path(path).name.startswith("."):
                self.events.append(("unlink", Path(path).name, 0))
            real_unlink(path, *args, **kwargs)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "link", link)
        monkeypatch.setattr(os, "unlink", unlink)

    def index(self, event: tuple[str, str, int]) -> int:
        assert event in self.events, (event, self.events)
        return self.events.index(event)

    def publish_index(self, name: str) -> int:
        found = [i for i, e in enumerate(self.events) if e[:2] == ("publish", name)]
        assert len(found) == 1, self.events
        return found[0]


@posix_only
@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
def test_each_file_is_synced_before_its_rename_and_the_npz_is_named_before_the_json(tmp_path, monkeypatch, overwrite):
    if overwrite:
        write_result(make_result(), tmp_path / "r")
    disk = DiskLog(monkeypatch)
    json_path, npz_path = write_result(make_result(frames=3), tmp_path / "r", overwrite=overwrite)
    monkeypatch.undo()
    npz_ino, json_ino = npz_path.stat().st_ino, json_path.stat().st_ino
    npz_named, json_named = disk.publish_index("r.npz"), disk.publish_index("r.json")
    assert disk.events[npz_named][2] == npz_ino and disk.events[json_named][2] == json_ino
    assert disk.index(("fsync", "file", npz_ino)) < npz_named
    assert disk.index(("fsync", "file", json_ino)) < json_named
    assert npz_named < json_named
    dir_syncs = [i for i, e in enumerate(disk.events) if e[:2] == ("fsync", "dir")]
    assert any(npz_named < i < json_named for i in dir_syncs), disk.events  # the npz's name is durable first
    assert any(i > json_named for i in dir_syncs), disk.events
    if overwrite:  # the old json goes before the new npz arrives: never a json beside a foreign npz
        assert disk.index(("unlink", "r.json", 0)) < npz_named
    assert read_result(json_path).num_frames == 3
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.npz"]


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from mega_runtime.io.result import write_result
    from tests.runtime.test_result_tracking import make_result

    real_replace, real_link = os.replace, os.link

    def crash_at_json(real):
        def publish(src, dst, *args, **kwargs):
            if str(dst).endswith(".json"):
                os._exit(17)  # the process dies: no clean-up, no finally
            return real(src, dst, *args, **kwargs)
        return publish

    os.replace, os.link = crash_at_json(real_replace), crash_at_json(real_link)
    write_result(make_result(frames=4), sys.argv[1], overwrite=sys.argv[2] == "overwrite")
    """
)


@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
def test_a_crash_between_the_two_renames_leaves_no_json_without_its_npz(tmp_path, overwrite):
    rr = load_pure_module("result_reader")
    stem = tmp_path / "clip.partial"
    if overwrite:  # e.g. the partial result of a video, rewritten every few seconds
        write_result(make_result(frames=2), stem)
    mode = "overwrite" if overwrite else "new"
    done = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(stem), mode], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 17, done.stderr
    assert visible_files(tmp_path) == ["clip.partial.npz"]  # the new npz, complete; no json
    with np.load(tmp_path / "clip.partial.npz", allow_pickle=False) as npz:
        assert npz["vertices"].shape[0] == 4
    with pytest.raises(ResultFormatError, match="does not exist"):
        read_result(stem)
    with pytest.raises(rr.ResultFormatError, match=r"metadata file .* is missing"):
        rr.read_result(tmp_path / "clip.partial.npz")


def test_every_json_in_the_folder_matches_its_npz_after_repeated_overwrites(tmp_path):
    for frames in (1, 2, 3):
        json_path, npz_path = write_result(make_result(frames=frames), tmp_path / "clip.partial", overwrite=True)
        assert read_result(json_path).num_frames == frames
        meta = json.loads(json_path.read_text())
        assert meta["arrays_file_size"] == npz_path.stat().st_size
    assert sorted(os.listdir(tmp_path)) == ["clip.partial.json", "clip.partial.npz"]  # no temporary files left


def test_a_file_that_appears_while_writing_is_never_replaced(tmp_path, monkeypatch):
    json_path = tmp_path / "r.json"
    real_link = os.link

    def link(src, dst, *args, **kwargs):
        if str(dst).endswith(".json"):
            json_path.write_text("the user's own file")  # appears after the up-front check
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(OutputExistsError, match=r"r\.json"):
        write_result(make_result(), tmp_path / "r")
    monkeypatch.undo()
    assert json_path.read_text() == "the user's own file"
    assert os.listdir(tmp_path) == ["r.json"]  # our npz and both temporary files are gone


def test_without_hard_links_a_check_then_rename_still_refuses_existing_files(tmp_path, monkeypatch):
    def no_links(src, dst, *args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    json_path, _ = write_result(make_result(), tmp_path / "r")
    assert read_result(json_path).num_frames == 2
    with pytest.raises(OutputExistsError):
        write_result(make_result(), tmp_path / "r")
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.npz"]


def test_a_failure_while_writing_the_arrays_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_savez(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(result_mod.np.lib.format, "write_array", broken_savez)
    with pytest.raises(result_mod.ResultWriteError, match="No space"):
        write_result(make_result(), tmp_path / "r")
    assert os.listdir(tmp_path) == []
