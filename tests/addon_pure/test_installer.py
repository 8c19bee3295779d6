"""The private-environment installer without Blender: build choice, commands, pip progress, disk, the job."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest

from tests.addon_pure.helpers import REPO_ROOT, load_pure_module

installer = load_pure_module("installer")
builds = load_pure_module("torch_builds")
pip_progress = load_pure_module("pip_progress")

CU = builds.TORCH_INDEX_BASE


# --- which PyTorch build -------------------------------------------------------------------------------------------

BUILD_TABLE = [
    # platform, machine, driver, override → index URL, kind
    ("linux", "x86_64", None, "AUTO", CU + "cpu", "cpu"),
    ("linux", "x86_64", "580.95.05", "AUTO", CU + "cu130", "cuda"),
    ("linux", "x86_64", "580.65.06", "AUTO", CU + "cu130", "cuda"),
    ("linux", "x86_64", "575.57.08", "AUTO", CU + "cu128", "cuda"),
    ("linux", "x86_64", "570.26", "AUTO", CU + "cu128", "cuda"),
    ("linux", "x86_64", "560.35.05", "AUTO", CU + "cu126", "cuda"),
    ("linux", "x86_64", "535.230.02", "AUTO", CU + "cu126", "cuda"),
    ("linux", "x86_64", "470.256.02", "AUTO", CU + "cpu", "cpu"),
    ("linux", "aarch64", "580.82.07", "AUTO", CU + "cu130", "cuda"),
    ("linux", "aarch64", None, "AUTO", CU + "cpu", "cpu"),
    ("win32", "AMD64", "581.57", "AUTO", CU + "cu130", "cuda"),
    ("win32", "AMD64", "580.65", "AUTO", CU + "cu128", "cuda"),  # Linux's 580.65.06 is not Windows' 580.88
    ("win32", "AMD64", "572.16", "AUTO", CU + "cu128", "cuda"),
    ("win32", "AMD64", "527.41", "AUTO", CU + "cu126", "cuda"),
    ("win32", "AMD64", None, "AUTO", CU + "cpu", "cpu"),
    ("darwin", "arm64", None, "AUTO", None, "default"),
    ("darwin", "arm64", None, "CPU", None, "default"),
    ("linux", "x86_64", "580.95.05", "CPU", CU + "cpu", "cpu"),
    ("linux", "x86_64", None, "cu128", CU + "cu128", "cuda"),
    ("win32", "AMD64", "581.57", "DEFAULT", None, "default"),
]


@pytest.mark.parametrize(("platform", "machine", "driver", "override", "url", "kind"), BUILD_TABLE)
def test_ok_torch_build_per_platform(platform, machine, driver, override, url, kind):
    build = builds.choose_torch_build(platform, machine, driver, override)
    assert (build.index_url, build.kind) == (url, kind)
    assert build.label and build.reason
    if override != "AUTO":
        assert "preferences" in build.reason or platform == "darwin"


def test_ok_an_old_driver_says_to_update_it():
    build = builds.choose_torch_build("linux", "x86_64", "470.256.02", "AUTO")
    assert "470.256.02" in build.reason and "update the driver" in build.reason


@pytest.mark.parametrize(
    ("platform", "machine", "override", "message"),
    [
        ("darwin", "x86_64", "AUTO", "Intel Macs"),
        ("darwin", "arm64", "cu128", "no CUDA PyTorch for macOS"),
        ("linux", "x86_64", "cu999", "unknown PyTorch build"),
    ],
)
def test_ng_torch_build_refuses_what_has_no_wheels(platform, machine, override, message):
    with pytest.raises(builds.InstallerError, match=message):
        builds.choose_torch_build(platform, machine, None, override)


def test_ok_overrides_list_every_cuda_tag():
    assert builds.OVERRIDES == ("AUTO", "DEFAULT", "CPU", "cu130", "cu128", "cu126")


def _completed(stdout: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], code, stdout, "")


def test_ok_driver_from_nvidia_smi(tmp_path):
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        return _completed("570.86.15\n570.86.15\n")

    found = builds.detect_nvidia_driver(lambda name: "/usr/bin/nvidia-smi", run, tmp_path / "none")
    assert found == "570.86.15"
    assert calls[0][1:] == ["--query-gpu=driver_version", "--format=csv,noheader"]


def test_ok_driver_from_the_linux_proc_file_when_nvidia_smi_is_missing_or_fails(tmp_path):
    proc = tmp_path / "version"
    proc.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U16)\n"
        "GCC version:  gcc version 12.3.0\n"
    )
    assert builds.detect_nvidia_driver(lambda name: None, None, proc) == "580.95.05"
    failing = builds.detect_nvidia_driver(lambda name: "smi", lambda c, **k: _completed("", 9), proc)
    assert failing == "580.95.05"


def test_ok_no_driver_without_nvidia_smi_or_proc_file(tmp_path):
    def broken(command, **kwargs):
        raise OSError("exec format error")

    assert builds.detect_nvidia_driver(lambda name: None, None, tmp_path / "none") is None
    assert builds.detect_nvidia_driver(lambda name: "smi", broken, tmp_path / "none") is None


# --- commands --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "python"), [("win32", "Scripts/python.exe"), ("linux", "bin/python"), ("darwin", "bin/python")]
)
def test_ok_commands_use_the_platforms_interpreter(tmp_path, platform, python):
    env = tmp_path / "venv"
    build = builds.choose_torch_build(platform, "arm64" if platform == "darwin" else "x86_64", None, "AUTO")
    plan = installer.plan_install("/base/python", env, REPO_ROOT, build, platform)
    interpreter = str(env / python)
    assert plan.action == "create"
    keys = [step.key for step in plan.steps]
    assert keys == ["environment", "environment", "torch", "runtime", "detector", "detector", "check"]
    assert plan.steps[0].command == ["/base/python", "-m", "venv", str(env)]
    for step in plan.steps[1:]:
        assert step.command[0] == interpreter
    torch_step = plan.steps[2]
    assert torch_step.command[-1] == "torch==2.13.0"
    assert torch_step.command[torch_step.command.index("--progress-bar") + 1] == "raw"
    if build.index_url:
        assert ["--extra-index-url", build.index_url] == torch_step.command[-3:-1]
    else:
        assert "--extra-index-url" not in torch_step.command
    assert plan.steps[3].command[-1] == str(REPO_ROOT)
    assert "--no-deps" in plan.steps[4].command
    assert plan.steps[-1].command[:2] == [interpreter, "-c"]
    for step in plan.steps[-2:]:
        compile(step.command[2], "<step>", "exec")
    assert sum(step.weight for step in plan.steps) == pytest.approx(1.0)


def test_ok_a_half_made_environment_is_recreated_and_a_ready_one_repaired(tmp_path):
    env = tmp_path / "venv"
    build = builds.choose_torch_build("linux", "x86_64", None, "AUTO")
    assert installer.env_state(env, "linux") == "missing"
    installer.incomplete_marker(env).write_text("x")
    assert installer.env_state(env, "linux") == "incomplete"
    plan = installer.plan_install("py", env, REPO_ROOT, build, "linux")
    assert plan.action == "recreate" and plan.steps[0].command == ["py", "-m", "venv", "--clear", str(env)]
    installer.incomplete_marker(env).unlink()
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").write_text("")
    assert installer.env_state(env, "linux") == "ready"
    plan = installer.plan_install("py", env, REPO_ROOT, build, "linux")
    assert plan.action == "repair"
    assert not any("venv" in step.command for step in plan.steps)
    runtime = next(step for step in plan.steps if step.key == "runtime")
    assert "--upgrade" in runtime.command and runtime.command[-1] == str(REPO_ROOT)
    assert installer.plan_install("py", env, REPO_ROOT, build, "linux", "recreate").steps[0].command[3] == "--clear"
    with pytest.raises(builds.InstallerError, match="unknown install action"):
        installer.plan_install("py", env, REPO_ROOT, build, "linux", "reinstall")


def test_ng_runtime_source_without_torch_names_the_fix(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["numpy"]\n')
    with pytest.raises(builds.InstallerError, match="lists no torch dependency; reinstall the extension"):
        installer.torch_requirement(tmp_path)
    with pytest.raises(builds.InstallerError, match="cannot read"):
        installer.torch_requirement(tmp_path / "missing")


# --- disk space ------------------------------------------------------------------------------------------------------

Usage = namedtuple("Usage", "total used free")
GB = 1000**3


def test_ok_disk_estimates_per_build():
    cpu = installer.estimate_disk_bytes(builds.choose_torch_build("linux", "x86_64", None), "linux")
    cuda = installer.estimate_disk_bytes(builds.choose_torch_build("linux", "x86_64", "580.95.05"), "linux")
    mac = installer.estimate_disk_bytes(builds.choose_torch_build("darwin", "arm64", None), "darwin")
    assert mac < cpu < 3 * GB < 10 * GB < cuda < 15 * GB


def test_ng_disk_check_refuses_with_the_sizes_and_a_fix(tmp_path):
    target = tmp_path / "not" / "yet" / "venv"
    seen = []

    def usage(path):
        seen.append(path)
        return Usage(100 * GB, 99 * GB, 1 * GB)

    with pytest.raises(builds.InstallerError, match=r"needs about 3\.0 GB .* 1\.0 GB free; free some space"):
        installer.check_disk_space(target, 3 * GB, usage)
    assert seen == [tmp_path]  # the nearest folder that exists
    assert installer.check_disk_space(target, 1 * GB, lambda p: Usage(0, 0, 2 * GB)) == 2 * GB


# --- pip's output ----------------------------------------------------------------------------------------------------

#: pip 24.1+ with --progress-bar raw (written for these tests after pip's format: one line per update).
PIP_RAW = """\
Looking in indexes: https://pypi.org/simple, https://download.pytorch.org/whl/cpu
Collecting torch==2.13.0
  Downloading https://download.pytorch.org/whl/cpu/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl (190.2 MB)
Progress 0 of 190200000
Progress 47550000 of 190200000
Progress 95100000 of 190200000
Progress 190200000 of 190200000
Collecting filelock (from torch==2.13.0)
  Downloading filelock-3.20.0-py3-none-any.whl.metadata (2.1 kB)
Collecting sympy>=1.13.3 (from torch==2.13.0)
  Downloading sympy-1.14.0-py3-none-any.whl (6.3 MB)
Progress 0 of 6300000
Progress 6300000 of 6300000
Installing collected packages: mpmath, sympy, filelock, torch
Successfully installed filelock-3.20.0 mpmath-1.3.0 sympy-1.14.0 torch-2.13.0+cpu
"""

#: an older pip with --progress-bar off: sizes only in the Downloading lines, cached files counted at once.
PIP_OLD = """\
Collecting torch==2.13.0
  Using cached torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl (120.0 MB)
Collecting numpy>=1.24
  Downloading numpy-2.3.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl (16.9 MB)
Collecting scipy>=1.10
  Downloading scipy-1.16.3-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl (35.9 MB)
Building wheels for collected packages: mega-blender
Installing collected packages: numpy, scipy, torch, mega-blender
Successfully installed mega-blender-0.1.0 numpy-2.3.4 scipy-1.16.3 torch-2.13.0
"""


def _feed(text: str, expected_mb: float) -> tuple[pip_progress.PipProgress, list[float]]:
    progress = pip_progress.PipProgress(int(expected_mb * 1e6))
    fractions = []
    for line in text.splitlines():
        progress.feed(line)
        fractions.append(progress.fraction)
    return progress, fractions


def test_ok_raw_progress_moves_with_the_bytes():
    progress, fractions = _feed(PIP_RAW, 250)
    assert fractions == sorted(fractions)
    assert fractions[6] > fractions[5] > fractions[4] > fractions[3]  # inside the torch download
    half = fractions[5]  # 95 of 250 MB expected
    assert 0.3 < half < 0.45
    assert progress.done_bytes >= 196_000_000
    assert fractions[-1] >= 0.9 and progress.message == "installing packages"


def test_ok_the_message_names_the_file_and_its_megabytes():
    progress = pip_progress.PipProgress(250_000_000)
    for line in PIP_RAW.splitlines()[:5]:
        progress.feed(line)
    assert progress.message == "torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl 48/190 MB"


def test_ok_old_pip_lines_still_move_the_fraction():
    progress, fractions = _feed(PIP_OLD, 200)
    assert fractions == sorted(fractions)
    assert len(set(fractions)) >= 5  # every Collecting / Downloading / cached line moves it
    assert progress.done_bytes == 120_000_000 + 16_900_000 + 35_900_000
    assert fractions[-1] >= 0.9


def test_ok_more_bytes_than_expected_never_exceed_the_download_share():
    _, fractions = _feed(PIP_RAW, 10)  # expected far too small
    assert max(fractions) < 1.0 and fractions == sorted(fractions)


@pytest.mark.parametrize(
    ("number", "unit", "size"),
    [("2.1", "kB", 2100), ("190.2", "MB", 190_200_000), ("1.5", "GB", 1_500_000_000), ("512", "bytes", 512)],
)
def test_ok_pip_sizes(number, unit, size):
    assert pip_progress.parse_size(number, unit) == size


def test_ok_check_output_is_described():
    assert installer.describe_check(
        {"runtime": "0.1.0", "torch": "2.13.0+cu128", "cuda": True, "cuda_device": "NVIDIA H200", "mps": False}
    ) == ("runtime 0.1.0, torch 2.13.0+cu128: CUDA GPU NVIDIA H200")
    assert installer.describe_check({"runtime": "0.1.0", "torch": "2.13.0", "mps": True}).endswith("(MPS)")
    assert installer.describe_check({}).endswith("CPU only")


# --- the job ---------------------------------------------------------------------------------------------------------


def _run(job, timeout_s: float = 30.0) -> list[float]:
    seen = []
    deadline = time.monotonic() + timeout_s
    while job.poll():
        seen.append(job.progress)
        assert time.monotonic() < deadline, job.status
        time.sleep(0.01)
    seen.append(job.progress)
    return seen


def _py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def test_ok_job_runs_the_steps_records_the_check_and_removes_the_marker(tmp_path):
    env = tmp_path / "venv"
    fake_pip = "import sys\nfor line in sys.argv[1].split('|'): print(line, flush=True)"
    check = 'print(\'MEGA-CHECK {"runtime": "0.1.0", "torch": "2.13.0", "cuda": false, "mps": false}\')'
    steps = [
        installer.Step(
            "environment", "Create environment", _py("import os, sys; os.makedirs(sys.argv[1])", str(env)), 0.1
        ),
        installer.Step(
            "torch", "Install PyTorch", _py(fake_pip, PIP_RAW.replace("\n", "|")), 0.7, pip=True, expected_mb=250
        ),
        installer.Step("check", "Check", _py(check), 0.2),
    ]
    build = builds.choose_torch_build("linux", "x86_64", None)
    job = installer.InstallJob(steps, env_dir=env, build=build)
    assert job.poll()
    assert installer.incomplete_marker(env).exists()
    progress = _run(job)
    assert job.error is None, job.status
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert not installer.incomplete_marker(env).exists()
    assert installer.env_state(env, "linux") == "missing"  # (the fake made no interpreter)
    record = installer.read_install_record(env)
    assert record["check"]["torch"] == "2.13.0" and record["build"]["label"] == "CPU"
    assert job.status == "done: runtime 0.1.0, torch 2.13.0: CPU only"


def test_ng_job_stops_at_a_failing_step_and_keeps_the_marker(tmp_path):
    env = tmp_path / "venv"
    job = installer.InstallJob(
        [
            installer.Step(
                "torch",
                "Install PyTorch",
                _py("import sys; print('No matching distribution'); sys.exit(1)"),
                0.5,
                pip=True,
            ),
            installer.Step("check", "Check", _py("open('never', 'w')"), 0.5),
        ],
        env_dir=env,
    )
    _run(job)
    assert job.error is not None and job.index == 0
    assert "Install PyTorch failed (exit status 1): No matching distribution" in job.error
    assert installer.env_state(env, "linux") == "incomplete"


def test_ng_job_reports_a_missing_program():
    job = installer.InstallJob.from_commands([["/no/such/program", "--version"]])
    _run(job)
    assert job.error is not None and "cannot run /no/such/program" in job.error


def test_ok_a_silent_step_creeps_forward_on_the_clock():
    now = [0.0]
    job = installer.InstallJob.from_commands([_py("import time; time.sleep(60)")])
    job.clock = lambda: now[0]
    try:
        assert job.poll()
        first = job.progress
        now[0] = 10.0
        second = job.progress
        now[0] = 1000.0
        third = job.progress
        assert first < second < third < 0.91
    finally:
        job.cancel()


def test_ok_cancel_ends_the_step_and_its_children_and_leaves_the_environment_marked(tmp_path):
    env = tmp_path / "venv"
    pid_file = tmp_path / "child.pid"
    # a "pip" that starts a child of its own (as pip does to build a wheel) and waits forever
    parent = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('Collecting torch', flush=True)\n"
        "time.sleep(600)\n"
    )
    job = installer.InstallJob([installer.Step("torch", "Install PyTorch", _py(parent), 1.0, pip=True)], env_dir=env)
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert job.poll() and time.monotonic() < deadline
        time.sleep(0.01)
    process = job._process
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < installer.CANCEL_WAIT_S + 1
    assert process.poll() is not None
    assert job.done and job.error == "cancelled" and not job.poll()
    assert installer.env_state(env, "linux") == "incomplete"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the step's child process outlived the cancel"
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    if os.name == "nt":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


# --- one real install (minutes; not part of the normal test run) -----------------------------------------------------


def _reachable(url: str) -> bool:
    import socket
    from urllib.parse import urlparse

    host = urlparse(url).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=5):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MEGA_TEST_REAL_INSTALL") != "1",
    reason="the real install downloads PyTorch and takes minutes: set MEGA_TEST_REAL_INSTALL=1",
)
def test_real_install_of_the_bundled_runtime(tmp_path):
    """Creates a real environment and pip-installs the bundled runtime (PyTorch included) into it.

    Takes minutes and downloads hundreds of MB to GBs, so it never runs in the normal test command: it runs only with
    ``MEGA_TEST_REAL_INSTALL=1`` and skips when the package index is not reachable. ``MEGA_TEST_TORCH_BUILD``
    chooses the build (AUTO, DEFAULT, CPU, cu126…; default AUTO; DEFAULT where only PyPI is reachable).
    """
    import platform as platform_module

    if not _reachable("https://pypi.org/simple"):
        pytest.skip("PyPI (pypi.org:443) is not reachable from this machine")
    driver = builds.detect_nvidia_driver()
    build = builds.choose_torch_build(
        sys.platform, platform_module.machine(), driver, os.environ.get("MEGA_TEST_TORCH_BUILD", "AUTO")
    )
    if build.index_url and not _reachable(build.index_url):
        pytest.skip(f"{build.index_url} is not reachable: set MEGA_TEST_TORCH_BUILD=DEFAULT to use PyPI's build")
    env = tmp_path / "venv"
    plan = installer.plan_install(sys.executable, env, REPO_ROOT, build, sys.platform)
    installer.check_disk_space(env, plan.needed_bytes)
    job = installer.InstallJob(plan.steps, env_dir=env, build=build)
    statuses: set[str] = set()
    progress = []
    deadline = time.monotonic() + 3600
    while job.poll():
        progress.append(job.progress)
        statuses.add(job.status.split(":")[0])
        assert time.monotonic() < deadline, job.status
        time.sleep(0.05)
    assert job.error is None, job.status + "\n" + "\n".join(job.tail)
    assert progress == sorted(progress)
    assert len({round(p, 3) for p in progress}) >= 20  # the bar moves
    titles = {step.title for step in plan.steps}
    assert titles <= {status.split(" ", 1)[1].rstrip("…") for status in statuses}, statuses
    assert installer.env_state(env, sys.platform) == "ready"
    assert job.check is not None and job.check["runtime"]
