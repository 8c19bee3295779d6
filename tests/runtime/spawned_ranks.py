"""Stand-ins for ``distributed._run_rank`` that ``test_distributed_shutdown`` spawns (module level, so that
``torch.multiprocessing.spawn`` can import them in the child processes)."""

from __future__ import annotations

import os
from pathlib import Path

from mega_runtime.train.distributed import RUN_FILE


def finish_then_die_shutting_down(rank, settings, world, init_method, timeout_s, done_dir=None):
    """Rank 0 writes the run summary; every rank marks itself done; then rank 1 aborts as gloo's teardown can."""
    if rank == 0:
        Path(settings.out, RUN_FILE).write_text('{"steps": 3}\n')
    Path(done_dir, f"rank{rank}.done").touch()
    if rank == 1:
        os.abort()


def die_during_the_run(rank, settings, world, init_method, timeout_s, done_dir=None):
    """Rank 1 aborts before its work is done (no marker)."""
    if rank == 1:
        os.abort()
    Path(done_dir, f"rank{rank}.done").touch()
