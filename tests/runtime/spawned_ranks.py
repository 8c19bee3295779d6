"""Stand-ins for ``distributed._run_rank`` that ``test_distributed_shutdown`` spawns (module level, so that
``torch.multiprocessing.spawn`` can import them in the child processes)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from mega_runtime.train.distributed import RUN_FILE

#: Seconds a stand-in rank waits for the others' markers (the real ranks' barrier) before giving up.
BARRIER_S = 60.0


def _wait_for_every_marker(done_dir, world) -> None:
    """What the real ranks' barrier after their markers guarantees: every rank's marker exists. Bounded polling;
    on time-out it says on stderr what it waited for (the test then fails: a marker is missing)."""
    markers = [Path(done_dir, f"rank{r}.done") for r in range(world)]
    deadline = time.monotonic() + BARRIER_S
    while not all(m.is_file() for m in markers):
        if time.monotonic() > deadline:
            missing = [m.name for m in markers if not m.is_file()]
            print(f"stand-in rank: waited {BARRIER_S} s for the markers {missing}", file=sys.stderr)
            return
        time.sleep(0.01)


def finish_then_die_shutting_down(rank, settings, world, init_method, timeout_s, done_dir=None):
    """Rank 0 writes the run summary; every rank marks itself done; after the barrier (every marker there) rank 1
    aborts, as gloo's teardown can."""
    if rank == 0:
        Path(settings.out, RUN_FILE).write_text('{"steps": 3}\n')
    Path(done_dir, f"rank{rank}.done").touch()
    _wait_for_every_marker(done_dir, world)
    if rank == 1:
        os.abort()


def die_during_the_run(rank, settings, world, init_method, timeout_s, done_dir=None):
    """Rank 1 aborts before its work is done (no marker)."""
    if rank == 1:
        os.abort()
    Path(done_dir, f"rank{rank}.done").touch()
