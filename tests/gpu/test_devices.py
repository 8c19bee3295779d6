"""The fixtures and the Mesh-VQ-VAE's graph paths on every accelerator present (CUDA, Apple MPS).

Skipped, with the reason, on a machine without one. What each precision must meet:

* **fp32** (TF32 off): every fixture through ``verify_folder(device=…)`` with the fixture's own
  tolerances against the official code (integer outputs exactly), like ``mega-runtime verify`` on the CPU.
* **TF32** (CUDA only; matmuls and convolutions with 10-bit mantissas): the ResNet model's logits, rot6d
  and cam within ``TF32_RTOL`` × max|CPU fp32 value|, and meshes within ``TF32_VERTEX_ATOL`` m of the CPU.
* **bf16** (autocast for the transformer, a bf16 copy of the Mesh-VQ-VAE): logits within ``BF16_RTOL`` ×
  max|CPU logits|. Tokens may differ at near-ties, so the agreement metric is: every argmax token on the
  device is *near-optimal* on the CPU (its fp32 logit within ``BF16_RTOL`` × max|logits| of the row's fp32
  maximum); the exact-match fraction is printed, not asserted. Meshes within ``BF16_RTOL`` × max|v|.
* **Graph paths**: each path the device can run (gather always, CSR where :func:`sparse_csr_supported`)
  decodes the fixture tokens and 16 random rows within ``PATH_ATOL`` m of the CPU's CSR path (fp32, TF32 off);
  ``auto`` picks CSR exactly where the probe says it works.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from mega_runtime.constants import CODEBOOK_SIZE, NUM_TOKENS
from mega_runtime.models.graph_conv import resolve_graph_path, sparse_csr_supported

FIXTURES = ("cvqmae_resnet", "cvqmae_hrnet", "cvqmae_vit", "vqmae", "mesh_vqvae")
TF32_RTOL = 1e-2
TF32_VERTEX_ATOL = 2e-3  # metres
BF16_RTOL = 5e-2
PATH_ATOL = 1e-5  # metres: fp32 on the device, other reduction order than the CPU


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


AVAILABLE = {"cuda": torch.cuda.is_available(), "mps": _mps_available()}
DEVICES = [
    pytest.param(name, marks=pytest.mark.skipif(not present, reason=f"no {name.upper()} device on this machine"))
    for name, present in AVAILABLE.items()
]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not any(AVAILABLE.values()), reason="no CUDA or MPS device: the accelerator tests need one"),
]


@pytest.fixture(autouse=True)
def fp32_matmuls() -> Iterator[None]:
    """TF32 off unless a test turns it on; restored afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def cpu_mega(small_checkpoints: Path, assets_dir: Path):
    from mega_runtime.mega import Mega

    return Mega.from_checkpoints(small_checkpoints, "mega_resnet", assets_dir=assets_dir, device="cpu")


def _mega_on(device: str, small_checkpoints: Path, assets_dir: Path):
    from mega_runtime.mega import Mega

    return Mega.from_checkpoints(small_checkpoints, "mega_resnet", assets_dir=assets_dir, device=device)


def _images(fixtures_dir: Path) -> torch.Tensor:
    with np.load(fixtures_dir / "cvqmae_resnet" / "reference.npz") as npz:
        return torch.from_numpy(npz["img"])


def _tokens(fixtures_dir: Path) -> torch.Tensor:
    with np.load(fixtures_dir / "mesh_vqvae" / "reference.npz") as npz:
        fixture = torch.from_numpy(npz["indices"]).long()
    rows = torch.randint(0, CODEBOOK_SIZE, (16, NUM_TOKENS), generator=torch.Generator().manual_seed(0))
    return torch.cat([fixture, rows])


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float().cpu() - ref.float()).abs().max()) / max(float(ref.abs().max()), 1e-12)


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("device", DEVICES)
def test_fixture_verifies_in_fp32_on_the_device(device: str, fixture: str, fixtures_dir: Path, tmp_path) -> None:
    from mega_runtime.verify.inference import verify_folder

    report = verify_folder(fixtures_dir / fixture, tmp_path, device=device)
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    assert report.status == "passed", f"{fixture} on {device}: " + "; ".join(failed)


def test_tf32_stays_close_to_cpu_fp32(cpu_mega, small_checkpoints: Path, assets_dir: Path, fixtures_dir: Path) -> None:
    if not AVAILABLE["cuda"]:
        pytest.skip("TF32 is a CUDA mode; no CUDA device on this machine")
    images, tokens = _images(fixtures_dir), _tokens(fixtures_dir)
    with torch.no_grad():
        ref = cpu_mega.cvqmae(images)
        ref_vertices = cpu_mega.decode_meshes(tokens)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    mega = _mega_on("cuda", small_checkpoints, assets_dir)
    with torch.no_grad():
        got = mega.cvqmae(images.cuda())
        vertices = mega.decode_meshes(tokens.cuda()).cpu()
    for name, g, r in zip(("logits", "rot6d", "cam"), got, ref, strict=True):
        assert _rel_err(g, r) <= TF32_RTOL, name
    assert float((vertices - ref_vertices).abs().max()) <= TF32_VERTEX_ATOL


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_tokens_are_near_optimal_and_meshes_close(
    device: str, cpu_mega, small_checkpoints: Path, assets_dir: Path, fixtures_dir: Path
) -> None:
    images, tokens = _images(fixtures_dir), _tokens(fixtures_dir)
    with torch.no_grad():
        ref_logits = cpu_mega.cvqmae(images)[0]
        ref_vertices = cpu_mega.decode_meshes(tokens)
    mega = _mega_on(device, small_checkpoints, assets_dir)
    try:
        with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16):
            logits = mega.cvqmae(images.to(device))[0].float().cpu()
        mesh = copy.deepcopy(mega.mesh_vqvae).to(torch.bfloat16)
        with torch.no_grad():
            vertices = mesh.decode(tokens.to(device)).float().cpu()
    except (RuntimeError, TypeError) as exc:
        if device == "mps":
            pytest.skip(f"bfloat16 is not usable on this MPS device: {exc}")
        raise
    scale = float(ref_logits.abs().max())
    assert _rel_err(logits, ref_logits) <= BF16_RTOL
    chosen = logits.argmax(-1)
    slack = ref_logits.max(-1).values - ref_logits.gather(-1, chosen[..., None])[..., 0]
    assert float(slack.max()) <= BF16_RTOL * scale, "a bf16 token is not near-optimal under fp32"
    agreement = float((chosen == ref_logits.argmax(-1)).float().mean())
    print(f"{device} bf16: token agreement with CPU fp32 {agreement:.3f}, max slack {float(slack.max()):.3g}")
    assert _rel_err(vertices, ref_vertices) <= BF16_RTOL


@pytest.mark.parametrize("device", DEVICES)
def test_graph_paths_on_the_device_match_the_cpu(device: str, cpu_mega, fixtures_dir: Path) -> None:
    tokens = _tokens(fixtures_dir)
    cpu_model = cpu_mega.mesh_vqvae
    cpu_model.graph_path = "csr"
    with torch.no_grad():
        ref = cpu_model.decode(tokens)
    cpu_model.graph_path = "auto"
    model = copy.deepcopy(cpu_model).to(device)
    paths = ["gather"] + (["csr"] if sparse_csr_supported(device) else [])
    assert resolve_graph_path("auto", device) == ("csr" if "csr" in paths else "gather")
    for path in paths:
        model.graph_path = path
        with torch.no_grad():
            got = model.decode(tokens.to(device)).cpu()
        err = float((got - ref).abs().max())
        print(f"{device} {path}: max |Δv| vs CPU CSR {err:.3g} m")
        assert err <= PATH_ATOL, path
