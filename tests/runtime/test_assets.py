"""Template mesh and connection matrix readers (mega_runtime.models.assets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mega_runtime.errors import AssetError
from mega_runtime.models.assets import (
    CONNECTION_LAYERS,
    NUM_FACES,
    NUM_VERTICES,
    connection_file_name,
    load_connection_matrices,
    read_template_ply,
)

# Output points of each connection matrix of config_medium (mega-spec §1.4).
EXPECTED_ROWS = {
    "pool0": 6890, "pool1": 1925, "pool2": 1925, "pool3": 400, "pool4": 400, "pool5": 54, "pool6": 54,
    "unpool6": 54, "unpool5": 400, "unpool4": 400, "unpool3": 1925, "unpool2": 1925, "unpool1": 6890, "unpool0": 6890,
}  # fmt: skip


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, fmt: str) -> Path:
    """Write a PLY with x, y, z float vertices plus an ignored uchar colour, and uchar-int face lists."""
    header = (
        f"ply\nformat {fmt} 1.0\ncomment written by test_assets\nelement vertex {len(vertices)}\n"
        "property float x\nproperty float y\nproperty float z\nproperty uchar red\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    if fmt == "ascii":
        rows = [f"{x:.9g} {y:.9g} {z:.9g} 7" for x, y, z in vertices]
        rows += [" ".join(str(v) for v in [len(f), *f]) for f in faces]
        path.write_bytes(header.encode() + ("\n".join(rows) + "\n").encode())
        return path
    order = "<" if fmt == "binary_little_endian" else ">"
    vdtype = np.dtype([("x", order + "f4"), ("y", order + "f4"), ("z", order + "f4"), ("red", "u1")])
    vrows = np.zeros(len(vertices), vdtype)
    for i, axis in enumerate("xyz"):
        vrows[axis] = vertices[:, i]
    vrows["red"] = 7
    fdtype = np.dtype([("n", "u1"), ("idx", order + "i4", (faces.shape[1],))])
    frows = np.zeros(len(faces), fdtype)
    frows["n"] = faces.shape[1]
    frows["idx"] = faces
    path.write_bytes(header.encode() + vrows.tobytes() + frows.tobytes())
    return path


TINY_VERTICES = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.5]], dtype=np.float32)
TINY_FACES = np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int32)


@pytest.fixture(scope="module")
def template(assets_dir: Path):
    return read_template_ply(assets_dir / "template.ply")


def test_template_has_the_reference_vertices_and_13776_triangles(template, fixtures_dir: Path) -> None:
    with np.load(fixtures_dir / "mesh_vqvae" / "reference.npz") as ref:
        expected = ref["template_vertices"]
    assert template.vertices.dtype == np.float32 and template.vertices.shape == (NUM_VERTICES, 3)
    np.testing.assert_array_equal(template.vertices, expected)
    assert template.faces.dtype == np.int32 and template.faces.shape == (NUM_FACES, 3)
    assert template.faces.min() >= 0 and template.faces.max() < NUM_VERTICES
    assert not template.vertices.flags.writeable and not template.faces.flags.writeable


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_every_ply_encoding_gives_the_same_template(template, tmp_path: Path, fmt: str) -> None:
    path = write_ply(tmp_path / f"template_{fmt}.ply", template.vertices, template.faces, fmt)
    mesh = read_template_ply(path)
    np.testing.assert_array_equal(mesh.vertices, template.vertices)
    np.testing.assert_array_equal(mesh.faces, template.faces)


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian"])
def test_small_meshes_load_when_counts_are_not_enforced(tmp_path: Path, fmt: str) -> None:
    path = write_ply(tmp_path / "tiny.ply", TINY_VERTICES, TINY_FACES, fmt)
    mesh = read_template_ply(path, expected_vertices=None, expected_faces=None)
    np.testing.assert_array_equal(mesh.vertices, TINY_VERTICES)
    np.testing.assert_array_equal(mesh.faces, TINY_FACES)


def test_vertex_count_other_than_6890_is_rejected_by_default(tmp_path: Path) -> None:
    path = write_ply(tmp_path / "tiny.ply", TINY_VERTICES, TINY_FACES, "binary_little_endian")
    with pytest.raises(AssetError, match="4 vertices, expected 6890") as info:
        read_template_ply(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian"])
def test_truncated_ply_raises_asset_error_naming_the_file(template, tmp_path: Path, fmt: str) -> None:
    full = write_ply(tmp_path / "full.ply", template.vertices, template.faces, fmt).read_bytes()
    path = tmp_path / "truncated.ply"
    path.write_bytes(full[: len(full) * 2 // 3])
    with pytest.raises(AssetError, match="truncated") as info:
        read_template_ply(path)
    assert str(path) in str(info.value)
    assert "fix:" in str(info.value)


def test_file_that_is_not_a_ply_raises_asset_error(tmp_path: Path) -> None:
    path = tmp_path / "template.ply"
    path.write_bytes(b"solid mesh\nfacet normal 0 0 1\n")
    with pytest.raises(AssetError, match="not a PLY file") as info:
        read_template_ply(path)
    assert str(path) in str(info.value)


def test_unknown_ply_format_raises_asset_error(tmp_path: Path) -> None:
    path = tmp_path / "odd.ply"
    path.write_bytes(b"ply\nformat binary_middle_endian 1.0\nelement vertex 0\nend_header\n")
    with pytest.raises(AssetError, match="unsupported format"):
        read_template_ply(path)


def test_face_index_out_of_range_is_rejected(tmp_path: Path) -> None:
    faces = np.array([[0, 1, 2], [0, 2, 4]], dtype=np.int32)
    path = write_ply(tmp_path / "bad_index.ply", TINY_VERTICES, faces, "binary_little_endian")
    with pytest.raises(AssetError, match="outside"):
        read_template_ply(path, expected_vertices=None, expected_faces=None)


def test_quad_faces_are_rejected(tmp_path: Path) -> None:
    quads = np.array([[0, 1, 2, 3]], dtype=np.int32)
    path = write_ply(tmp_path / "quads.ply", TINY_VERTICES, quads, "ascii")
    with pytest.raises(AssetError, match="only triangles"):
        read_template_ply(path, expected_vertices=None, expected_faces=None)


def test_missing_template_raises_asset_error_with_a_fix(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="MEGA_ASSETS_DIR") as info:
        read_template_ply(tmp_path / "absent.ply")
    assert "absent.ply" in str(info.value)


def test_connection_layers_follow_the_official_layer_order() -> None:
    expected = tuple(f"pool{i}" for i in range(7)) + tuple(f"unpool{i}" for i in range(6, -1, -1))
    assert expected == CONNECTION_LAYERS
    assert connection_file_name("unpool3") == "_unpool3.npy"


def test_all_fourteen_connection_matrices_load(assets_dir: Path) -> None:
    matrices = load_connection_matrices(assets_dir / "connection_matrices")
    assert tuple(matrices) == CONNECTION_LAYERS
    for name, matrix in matrices.items():
        assert matrix.dtype == np.int64 and matrix.ndim == 2
        assert matrix.shape[0] == EXPECTED_ROWS[name]
        assert matrix.shape[1] % 2 == 1


def _copy_connections(src: Path, dst: Path, skip: str | None = None) -> Path:
    dst.mkdir()
    for name in CONNECTION_LAYERS:
        if name != skip:
            (dst / connection_file_name(name)).write_bytes((src / connection_file_name(name)).read_bytes())
    return dst


def test_missing_connection_file_raises_asset_error_naming_it(assets_dir: Path, tmp_path: Path) -> None:
    folder = _copy_connections(assets_dir / "connection_matrices", tmp_path / "conn", skip="unpool3")
    with pytest.raises(AssetError, match=r"_unpool3\.npy") as info:
        load_connection_matrices(folder)
    message = str(info.value)
    assert "MEGA_ASSETS_DIR" in message and "mega-runtime weights fetch" in message
    assert "_pool0.npy" not in message


def test_missing_connection_folder_raises_asset_error(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="does not exist"):
        load_connection_matrices(tmp_path / "nowhere")


def test_float_connection_matrix_is_rejected(assets_dir: Path, tmp_path: Path) -> None:
    folder = _copy_connections(assets_dir / "connection_matrices", tmp_path / "conn")
    np.save(folder / "_pool4.npy", np.zeros((400, 53), dtype=np.float32))
    with pytest.raises(AssetError, match=r"_pool4\.npy.*integer"):
        load_connection_matrices(folder)


def test_pickled_connection_file_is_refused(assets_dir: Path, tmp_path: Path) -> None:
    folder = _copy_connections(assets_dir / "connection_matrices", tmp_path / "conn")
    np.save(folder / "_pool5.npy", np.array([{"ids": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(AssetError, match=r"_pool5\.npy"):
        load_connection_matrices(folder)


def test_corrupt_neighbour_count_is_rejected(assets_dir: Path, tmp_path: Path) -> None:
    folder = _copy_connections(assets_dir / "connection_matrices", tmp_path / "conn")
    matrix = np.load(folder / "_pool6.npy")
    matrix[3, 0] = 99
    np.save(folder / "_pool6.npy", matrix)
    with pytest.raises(AssetError, match="neighbour counts"):
        load_connection_matrices(folder)
