"""Running a training loop in several processes: ``--devices N`` on one machine, or under ``torchrun``.

Plain ``torch.distributed`` (gloo on the CPU, NCCL on GPUs), no extra dependency: the loop sums gradients with
``all_reduce`` before each update (:class:`~mega_runtime.train.loop.StepGate`). ``--devices N`` spawns N local
processes (``torch.multiprocessing``) that meet through a rendezvous file in a fresh temporary folder; under
``torchrun`` (``WORLD_SIZE`` set) each process joins with ``env://`` and ``--devices`` must be the world size.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from mega_runtime.errors import TrainingError
from mega_runtime.train.settings import TrainSettings

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
"""Summary of a finished run in its ``--out`` folder (steps, epochs, last losses, seconds)."""
JOIN_TIMEOUT_S = 120.0
"""How long a process waits for the others at the rendezvous and at each collective before failing."""


def _backend(settings: TrainSettings) -> str:
    return "nccl" if settings.accelerator == "gpu" else "gloo"


def _run_rank(
    rank: int, settings: TrainSettings, world: int, init_method: str, timeout_s: float, done_dir: str | None = None
) -> None:
    """One process of a multi-process run. done_dir (spawned runs): where this rank leaves ``rank<N>.done`` once its
    work, and rank 0's outputs, are complete — before the ranks meet to shut down (:func:`launch`)."""
    import torch

    from mega_runtime.train.loop import Distributed, train

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    torch.distributed.init_process_group(
        _backend(settings),
        init_method=init_method,
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    try:
        result = train(settings, Distributed(rank, world))
        if rank == 0:
            write_run_file(settings.out, result)
        if done_dir is not None:
            Path(done_dir, f"rank{rank}.done").touch()
        # every rank has finished before any tears its group down: a rank that leaves first closes the connections
        # the others' gloo threads still use, which aborts them (SIGABRT, "terminate called without an active
        # exception")
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def write_run_file(out: Path, result: object) -> None:
    """``out/run.json``: the :class:`~mega_runtime.train.loop.RunResult` as JSON."""
    fields = {"steps": result.steps, "epochs": result.epochs, "losses": result.losses}  # type: ignore[attr-defined]
    fields["seconds"] = round(result.seconds, 3)  # type: ignore[attr-defined]
    (Path(out) / RUN_FILE).write_text(json.dumps(fields, indent=2) + "\n")


def read_run_file(out: Path) -> dict[str, object]:
    """What :func:`write_run_file` wrote."""
    return dict(json.loads((Path(out) / RUN_FILE).read_text()))


def launch(settings: TrainSettings, timeout_s: float = JOIN_TIMEOUT_S) -> dict[str, object]:
    """Run ``settings`` in this process, N spawned ones, or as one rank of a ``torchrun`` job; the summary
    (``run.json`` of rank 0) is returned."""
    from mega_runtime.train.loop import train

    world_env = os.environ.get("WORLD_SIZE")
    if world_env is not None and int(world_env) > 1:
        world = int(world_env)
        if settings.devices not in (1, world):
            raise TrainingError(f"--devices {settings.devices} under torchrun with {world} processes")
        settings = replace(settings, devices=world)
        _run_rank(int(os.environ["RANK"]), settings, world, "env://", timeout_s)
        return read_run_file(settings.out) if int(os.environ["RANK"]) == 0 else {}
    if settings.devices == 1:
        write_run_file(settings.out, train(settings))
        return read_run_file(settings.out)
    import torch.multiprocessing as mp

    if settings.accelerator == "gpu":
        import torch

        if torch.cuda.device_count() < settings.devices:
            raise TrainingError(
                f"--devices {settings.devices} but only {torch.cuda.device_count()} GPU(s) are visible",
                hint="use fewer --devices",
            )
    with tempfile.TemporaryDirectory(prefix="mega-train-") as rendezvous:
        init_method = Path(rendezvous, "rendezvous").as_uri()
        log.info("starting %d processes (%s)", settings.devices, _backend(settings))
        try:
            mp.spawn(
                _run_rank,
                args=(settings, settings.devices, init_method, timeout_s, rendezvous),
                nprocs=settings.devices,
                join=True,
            )
        except mp.ProcessExitedException as exc:
            done = [Path(rendezvous, f"rank{rank}.done").is_file() for rank in range(settings.devices)]
            if not all(done):
                raise TrainingError(
                    f"a training process exited: {exc}", hint="check memory, or use fewer --devices"
                ) from exc
            # Every rank had finished its work (and rank 0 its outputs) when one died shutting down: PyTorch's gloo
            # teardown can abort a process ("terminate called without an active exception", SIGABRT) after the run.
            log.warning(
                "a training process died while shutting down after the run had finished (%s); outputs complete", exc
            )
        except mp.ProcessRaisedException as exc:
            raise TrainingError(
                f"a training process failed: {str(exc).strip().splitlines()[-1]}",
                hint="run with --devices 1 to see the error directly",
            ) from exc
    return read_run_file(settings.out)
