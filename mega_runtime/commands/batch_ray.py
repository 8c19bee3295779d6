"""``mega-runtime batch --ray``: the batch's inputs on Ray actors that each load the model once (docs/batch.md).

``--ray`` starts (or joins, when one is running and ``RAY_ADDRESS`` is set) Ray on this machine; ``--ray-address
ADDR`` joins the cluster at ``ADDR``. ``--workers N`` actors are started, each holding one pipeline: one GPU each
when the cluster has GPUs and ``--device`` is not ``cpu``, else one CPU. An actor decodes, detects and runs the
model for one input at a time and writes the result pair itself (to ``--out``, which every node must see: a
shared folder on a cluster). At most two inputs per actor are in flight (back-pressure: memory stays bounded
whatever the number of inputs). An actor whose process dies is restarted by Ray and its input retried
(``max_restarts``/``max_task_retries``); only an input that fails :data:`MAX_RETRIES` times in a row is failed.

Ray is optional (``pip install mega-blender[ray]``); without it ``--ray`` is refused with that hint.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

from mega_runtime.errors import MegaError

log = logging.getLogger(__name__)

#: Inputs in flight per actor (one running, one queued).
IN_FLIGHT_PER_ACTOR = 2
#: How often Ray restarts a dead actor and retries its task.
MAX_RETRIES = 3


class RayMissingError(MegaError):
    """``--ray`` was asked for but Ray is not installed."""

    code = "ray_missing"


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayMissingError(
            "--ray needs the ray package, which is not installed",
            hint="pip install 'mega-blender[ray]' (or run without --ray, with --workers N local processes)",
        ) from exc
    return ray


class _ModelWorker:
    """A Ray actor: one pipeline, loaded once; :meth:`run` reconstructs one input like ``infer``."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        from mega_runtime.commands.reconstruct import load_pipeline

        threads = getattr(args, "torch_threads", None)  # the driver's: results equal infer's there (see batch.py)
        if threads:
            torch.set_num_threads(threads)
        self.args = args
        self.pipeline = load_pipeline(args)

    def pid(self) -> int:
        import os

        return os.getpid()

    def run(self, job: Any) -> dict:
        from mega_runtime.commands.batch import run_job

        return run_job(self.args, self.pipeline, job)


def _uses_gpu(ray: Any, args: argparse.Namespace) -> bool:
    return args.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1


def run_on_ray(
    args: argparse.Namespace,
    jobs: list,
    started: Callable[[Any], None],
    finished: Callable[[Any, dict], None],
    frames: Callable[[str, int, int | None], None] | None = None,
    on_workers: Callable[[list[int]], None] | None = None,
) -> None:
    """Run ``jobs`` (:class:`mega_runtime.commands.batch.Job`) on ``args.workers`` Ray actors.

    ``started(job)`` is called when a job is handed to an actor, ``finished(job, outcome)`` when its outcome
    (the manifest fields) is back; ``on_workers(pids)`` once the actors are up (tests kill one). ``frames`` is
    not used: video progress stays inside the actors (their log).
    """
    if not jobs:
        return
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=args.ray_address or None, include_dashboard=False, logging_level=logging.WARNING)
    gpu = _uses_gpu(ray, args)
    remote = ray.remote(num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1)(_ModelWorker).options(
        max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES
    )
    actors = [remote.remote(args) for _ in range(min(args.workers, len(jobs)))]
    log.info("running %d input(s) on %d Ray actor(s)%s", len(jobs), len(actors), " with a GPU each" if gpu else "")
    if on_workers is not None:
        on_workers(ray.get([actor.pid.remote() for actor in actors]))
    waiting = list(jobs)
    in_flight: dict[Any, tuple[Any, Any]] = {}  # object ref → (job, actor)
    load = {i: 0 for i in range(len(actors))}
    try:
        while waiting or in_flight:
            while waiting and min(load.values()) < IN_FLIGHT_PER_ACTOR:
                index = min(load, key=lambda i: load[i])
                job = waiting.pop(0)
                started(job)
                in_flight[actors[index].run.remote(job)] = (job, index)
                load[index] += 1
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                job, index = in_flight.pop(ref)
                load[index] -= 1
                try:
                    outcome = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                    outcome = {"status": "failed", "error": f"its Ray worker failed: {type(exc).__name__}"}
                finished(job, outcome)
    finally:
        for actor in actors:
            ray.kill(actor)
