"""The fault catalogue's harness: what a case is, and how its command runs as a limited child.

Every child gets a wall-clock timeout and an address-space limit (``RLIMIT_AS``, set in the child before it starts).

Memory limit: a normal ``infer`` of one photo with the small seeded checkpoints (the largest allowed job:
``--hypotheses 128 --batch-size 256``) needs between 1.2 and 1.5 GiB of address space on CPU (measured by
lowering ``RLIMIT_AS`` until it fails); every child here gets :data:`MEMORY_LIMIT_BYTES` = 4 GiB, ~2.7× that.
The drivers for the server, for signals and for concurrent writers are in ``tests/faults/drivers.py``.
"""

from __future__ import annotations

import os
import resource
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: Address-space limit of every child (see the module docstring for how it was chosen).
MEMORY_LIMIT_BYTES = 4 * 2**30
#: Wall-clock limit of a child that never loads a model, and of one that does.
QUICK_TIMEOUT_S = 60.0
MODEL_TIMEOUT_S = 240.0

REPO_ROOT = Path(__file__).resolve().parents[2]
RT = ("{py}", "-m", "mega_runtime")
BATCH = ("{py}", "-m", "mega_blender.batch")
PHOTO_ARGS = ("infer", "{tmp}/p.png", "--out", "{tmp}/out", "--boxes", "10,10,200,200")
MODEL_ARGS = ("--checkpoint-dir", "{ck}", "--assets-dir", "{assets}", "--model", "resnet", "--device", "cpu")
FIT = (*RT, "fit-smpl", "{tmp}/r.json", "--smpl-model", "{tmp}/no-smpl.pkl")
IMPORT = (*BATCH, "import", "{tmp}/r.json", "--export", "{tmp}/x.blend")
NEEDS_CK = frozenset({"checkpoints"})


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Case:
    """One fault: the command (``{py}``, ``{tmp}``, ``{ck}``, ``{assets}`` are filled in), how to set it up, what
    must come out. ``needs``: ``checkpoints`` (small seeded weights), ``bomb`` (the session's zip bomb),
    ``mount`` (a tmpfs at ``{tmp}/mnt``: ``ro`` or ``full``), ``no-dac`` (the child may not bypass permissions)."""

    id: str
    argv: tuple[str, ...]
    exit: int
    message: str
    setup: Callable[[Path], None] | None = None
    exists: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    empty: tuple[str, ...] = ()
    stdin: str | None = None
    needs: frozenset[str] = frozenset()
    mount: str = ""
    driver: Callable[[Case, Path, dict[str, str]], Outcome] | None = None
    timeout_s: float = QUICK_TIMEOUT_S
    extra: Callable[[Path, Outcome], None] | None = field(default=None, compare=False)


def child_env() -> dict[str, str]:
    """This environment, with the repository on the path (the add-on package is not installed, only found)."""
    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def _fill(text: str, ctx: dict[str, str]) -> str:
    return text.format(**ctx)


def argv_of(case: Case, ctx: dict[str, str]) -> list[str]:
    argv = [_fill(a, ctx) for a in case.argv]
    if "no-dac" in case.needs and os.geteuid() == 0:  # root reads any file: take that power away from the child
        argv = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *argv]
    return argv


def run_command(case: Case, tmp: Path, ctx: dict[str, str]) -> Outcome:
    stdin = _fill(case.stdin, ctx) if case.stdin is not None else None
    try:
        done = subprocess.run(
            argv_of(case, ctx),
            cwd=tmp,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=case.timeout_s,
            preexec_fn=limit_memory,
            env=child_env(),
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{case.id}: hung — no exit within {case.timeout_s} s; stderr: {exc.stderr!r}")
    return Outcome(done.returncode, done.stdout, done.stderr)
