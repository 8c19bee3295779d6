"""PC2 point caches in plain CPython: round trip, chunked writing, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from tests.addon_pure.helpers import load_pure_module

pc = load_pure_module("pointcache")


def test_ok_round_trip_and_header(tmp_path):
    samples = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(np.float32)
    path = pc.write_pc2(tmp_path / "a.pc2", samples)
    assert path.read_bytes()[:12] == b"POINTCACHE2\0" and path.stat().st_size == 32 + 5 * 7 * 12
    np.testing.assert_array_equal(pc.read_pc2(path), samples)


def test_ok_chunks_add_up(tmp_path):
    chunks = [np.full((2, 4, 3), i, np.float32) for i in range(3)]
    cache = pc.read_pc2(pc.write_pc2_chunks(tmp_path / "c.pc2", 6, 4, iter(chunks)))
    assert cache.shape == (6, 4, 3) and cache[5, 0, 0] == 2


def test_ng_existing_file_is_never_replaced(tmp_path):
    (tmp_path / "a.pc2").write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        pc.write_pc2(tmp_path / "a.pc2", np.zeros((1, 2, 3)))
    assert (tmp_path / "a.pc2").read_bytes() == b"mine"
    assert pc.free_path(tmp_path, "a", ".pc2").name == "a-2.pc2"


def test_ng_wrong_sample_count_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="announced"):
        pc.write_pc2_chunks(tmp_path / "b.pc2", 5, 4, iter([np.zeros((2, 4, 3))]))
    assert not list(tmp_path.iterdir())


def test_ng_truncated_or_foreign_files_are_refused(tmp_path):
    path = pc.write_pc2(tmp_path / "a.pc2", np.zeros((3, 4, 3)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        pc.read_pc2(path)
    (tmp_path / "x.pc2").write_bytes(b"x" * 64)
    with pytest.raises(ValueError, match="not a PC2"):
        pc.read_pc2(tmp_path / "x.pc2")
