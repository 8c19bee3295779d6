"""A rank that dies while shutting down after the run finished does not fail the run; one that dies during it does."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mega_runtime.errors import TrainingError
from mega_runtime.train import distributed
from tests.runtime import spawned_ranks


def _settings(tmp_path):
    return SimpleNamespace(devices=2, accelerator="cpu", out=tmp_path)


def test_a_rank_dying_in_teardown_after_every_rank_finished_leaves_a_complete_run(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(distributed, "_run_rank", spawned_ranks.finish_then_die_shutting_down)
    with caplog.at_level("WARNING"):
        assert distributed.launch(_settings(tmp_path)) == {"steps": 3}
    assert "shutting down after the run had finished" in caplog.text


def test_a_rank_dying_before_its_work_is_done_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "_run_rank", spawned_ranks.die_during_the_run)
    with pytest.raises(TrainingError, match="a training process exited"):
        distributed.launch(_settings(tmp_path))
