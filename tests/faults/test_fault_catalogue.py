"""The fault catalogue: hostile and unlucky inputs run through the real CLI, server and batch, each in a child.

Each :class:`~tests.faults.harness.Case` runs one command as a subprocess with a wall-clock timeout and an
address-space limit (``RLIMIT_AS``, set in the child before it starts) and asserts: no Python traceback on stderr,
the exit code, one clear message fragment, and which files must still exist, must not exist, must be unchanged, or
must be empty folders afterwards. docs/reliability.md lists the totals and the limits these cases hold the code to.

The cases are listed by theme: ``cases_infer.py`` (``infer``), ``cases_results.py`` (``fit-smpl`` and the add-on's
batch), ``cases_serve.py`` (``generate`` and ``serve``); ``harness.py`` runs a case's command (the memory limit is
explained there), ``drivers.py`` drives the server, signals and concurrent writers, ``setups.py`` builds inputs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults import builders as b
from tests.faults import cases_infer, cases_results, cases_serve
from tests.faults.harness import Case, run_command
from tests.faults.setups import photo

CASES: list[Case] = [*cases_infer.CASES, *cases_results.CASES, *cases_serve.CASES]


# -- the test --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def zip_bomb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[int, ...]]:
    path = tmp_path_factory.mktemp("zip-bomb") / "bomb.npz"
    return path, b.zip_bomb_npz(path)


def _mount(point: Path, kind: str) -> None:
    point.mkdir()
    options = "ro,size=1m" if kind == "ro" else "size=64k"
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True, capture_output=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); the full-disk and read-only cases need one")


def _snapshot(tmp: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    return {name: (tmp / name).read_bytes() for name in names}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, tmp_path: Path, request: pytest.FixtureRequest, assets_dir: Path) -> None:
    ctx = {"py": sys.executable, "tmp": str(tmp_path), "assets": str(assets_dir), "ck": ""}
    if "checkpoints" in case.needs:
        ctx["ck"] = str(request.getfixturevalue("small_checkpoints"))
    if "no-dac" in case.needs and os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a chmod 000 file stays readable")
    mounted = False
    try:
        if case.mount:
            _mount(tmp_path / "mnt", case.mount)
            mounted = True
        if case.setup is not None:
            case.setup(tmp_path)
        for need in case.needs:
            if need.startswith("config:"):
                photo(tmp_path)
                b.checkpoints_with_config(tmp_path / "ck", Path(ctx["ck"]), need[len("config:") :])
            elif need == "pickle-checkpoint":
                photo(tmp_path)
                b.checkpoints_with_pickle(tmp_path / "ck", Path(ctx["ck"]), tmp_path / "PWNED")
            elif need == "bomb":
                bomb, shape = request.getfixturevalue("zip_bomb")
                b.result_with_bomb(tmp_path, bomb, shape)
        before = _snapshot(tmp_path, case.unchanged)
        started = time.monotonic()
        outcome = (case.driver or run_command)(case, tmp_path, ctx)
        elapsed = time.monotonic() - started
        said = outcome.stdout + outcome.stderr
        assert "Traceback" not in outcome.stderr, f"{case.id} printed a traceback:\n{outcome.stderr[-3000:]}"
        assert outcome.returncode == case.exit, (
            f"{case.id}: exit {outcome.returncode}, expected {case.exit} ({elapsed:.1f} s)\n{said[-3000:]}"
        )
        assert case.message.lower() in said.lower(), f"{case.id}: {case.message!r} not said:\n{said[-3000:]}"
        for name in case.exists:
            assert (tmp_path / name).exists(), f"{case.id}: {name} should exist"
        for name in case.absent:
            assert not (tmp_path / name).exists(), f"{case.id}: {name} should not exist"
        for name, data in before.items():
            assert (tmp_path / name).read_bytes() == data, f"{case.id}: {name} was changed"
        for name in case.empty:
            left = sorted(p.name for p in (tmp_path / name).iterdir())
            assert not left, f"{case.id}: {name} should be empty, holds {left}"
        if case.extra is not None:
            case.extra(tmp_path, outcome)
    finally:
        if mounted:
            subprocess.run(["umount", str(tmp_path / "mnt")], capture_output=True, timeout=30)


def test_the_catalogue_is_large_and_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60
