"""Readers for the non-checkpoint assets: the template mesh and the graph connection matrices.

* ``template.ply`` (MeshConvolution): the SMPL-topology template, 6890 vertices and 13776
  triangles. Only its faces are needed at inference (for rendering / export); its vertices
  serve as a reference body in tests.
* ``_pool{i}.npy`` / ``_unpool{i}.npy`` (MeshConvolution ``connections/dfaust2``, called
  ``body_models/ConnectionMatrices`` in the official repos): one integer matrix per graph
  layer of the Mesh-VQ-VAE. Row p is ``[count, id_0, dist_0, id_1, dist_1, ...]`` for output
  point p; ids equal to the layer's input point count are padding.

This module needs numpy only (no torch), so the CLI can validate assets cheaply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mega_runtime.constants import NUM_FACES, NUM_VERTICES
from mega_runtime.errors import AssetError

__all__ = [
    "CONNECTION_LAYERS",
    "NUM_FACES",
    "NUM_VERTICES",
    "TemplateMesh",
    "connection_file_name",
    "load_connection_matrices",
    "read_template_ply",
]

logger = logging.getLogger(__name__)

CONNECTION_LAYERS: tuple[str, ...] = (
    "pool0",
    "pool1",
    "pool2",
    "pool3",
    "pool4",
    "pool5",
    "pool6",
    "unpool6",
    "unpool5",
    "unpool4",
    "unpool3",
    "unpool2",
    "unpool1",
    "unpool0",
)
"""Connection files of the official ``config_medium`` graph, in layer order (encoder, then decoder)."""

_ASSET_HINT = (
    "set MEGA_ASSETS_DIR to a folder with the official assets (template.ply, connection_matrices/) "
    "or run `mega-runtime weights fetch`"
)

# PLY scalar type names (both spellings of the spec) -> numpy type codes without byte order.
_PLY_TYPES: dict[str, str] = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_MAX_HEADER_BYTES = 1 << 16


@dataclass(frozen=True, eq=False)
class TemplateMesh:
    """A triangle mesh read from a PLY file.

    Attributes:
        vertices: float32 array (V, 3), positions in the file's units (metres for the SMPL template).
        faces: int32 array (F, 3), vertex indices of each triangle, each in [0, V).

    Both arrays are read-only.
    """

    vertices: np.ndarray
    faces: np.ndarray


@dataclass(frozen=True)
class _PlyProperty:
    name: str
    code: str  # numpy type code of the value (list items for a list property)
    count_code: str | None = None  # numpy type code of the list length; None for scalars


@dataclass(frozen=True)
class _PlyElement:
    name: str
    count: int
    properties: tuple[_PlyProperty, ...]


def _ply_error(path: Path, problem: str) -> AssetError:
    hint = f"replace it with the official MeshConvolution template.ply; {_ASSET_HINT}"
    return AssetError(f"{path}: {problem}", hint=hint)


def _parse_ply_header(path: Path, data: bytes) -> tuple[str, list[_PlyElement], int]:
    """Return (format name, elements, byte offset of the body)."""
    end = data.find(b"end_header", 0, _MAX_HEADER_BYTES)
    if not data.startswith(b"ply") or end < 0:
        raise _ply_error(path, "not a PLY file (no 'ply' magic line or no 'end_header' in the first 64 KiB)")
    newline = data.find(b"\n", end)
    body_offset = len(data) if newline < 0 else newline + 1
    try:
        header_lines = data[:end].decode("ascii").splitlines()
    except UnicodeDecodeError as exc:
        raise _ply_error(path, "the PLY header is not ASCII text") from exc

    fmt: str | None = None
    elements: list[_PlyElement] = []
    current: tuple[str, int, list[_PlyProperty]] | None = None

    def close_current() -> None:
        if current is not None:
            elements.append(_PlyElement(current[0], current[1], tuple(current[2])))

    for lineno, raw in enumerate(header_lines[1:], start=2):
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        keyword = words[0]
        if keyword == "format":
            if len(words) != 3 or words[1] not in _PLY_FORMATS:
                raise _ply_error(path, f"header line {lineno}: unsupported format line {raw.strip()!r}")
            fmt = words[1]
        elif keyword == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise _ply_error(path, f"header line {lineno}: malformed element line {raw.strip()!r}")
            close_current()
            current = (words[1], int(words[2]), [])
        elif keyword == "property":
            if current is None:
                raise _ply_error(path, f"header line {lineno}: property before any element")
            if len(words) == 5 and words[1] == "list" and words[2] in _PLY_TYPES and words[3] in _PLY_TYPES:
                current[2].append(_PlyProperty(words[4], _PLY_TYPES[words[3]], _PLY_TYPES[words[2]]))
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                current[2].append(_PlyProperty(words[2], _PLY_TYPES[words[1]]))
            else:
                raise _ply_error(path, f"header line {lineno}: unsupported property line {raw.strip()!r}")
        else:
            raise _ply_error(path, f"header line {lineno}: unknown keyword {keyword!r}")
    close_current()
    if fmt is None:
        raise _ply_error(path, "the PLY header has no format line")
    return fmt, elements, body_offset


def _binary_row_layout(path: Path, element: _PlyElement, data: bytes, offset: int, order: str) -> np.dtype:
    """Structured dtype of one row; list lengths are taken from the first row and must be the same in every row."""
    fields: list[tuple] = []
    pos = offset
    for i, prop in enumerate(element.properties):
        if prop.count_code is None:
            fields.append((f"p{i}", order + prop.code))
            pos += np.dtype(prop.code).itemsize
            continue
        count_dtype = np.dtype(order + prop.count_code)
        if element.count == 0:
            length = 0
        else:
            if pos + count_dtype.itemsize > len(data):
                raise _ply_error(path, f"the file is truncated inside element {element.name!r}")
            length = int(np.frombuffer(data, count_dtype, 1, pos)[0])
        fields.append((f"n{i}", count_dtype))
        fields.append((f"p{i}", order + prop.code, (length,)))
        pos += count_dtype.itemsize + length * np.dtype(prop.code).itemsize
    return np.dtype(fields)


def _read_binary_body(path: Path, elements: list[_PlyElement], data: bytes, offset: int, order: str) -> dict[str, list]:
    """Per element name: one array per property ((N,) for scalars, (N, L) for lists)."""
    out: dict[str, list] = {}
    for element in elements:
        dtype = _binary_row_layout(path, element, data, offset, order)
        need = element.count * dtype.itemsize
        if offset + need > len(data):
            raise _ply_error(
                path,
                f"the file is truncated: element {element.name!r} needs {need} bytes at offset {offset}, "
                f"only {len(data) - offset} remain",
            )
        rows = np.frombuffer(data, dtype, element.count, offset)
        columns = []
        for i, prop in enumerate(element.properties):
            if prop.count_code is not None:
                counts = rows[f"n{i}"]
                expected = dtype[f"p{i}"].shape[0]
                if np.any(counts != expected):
                    raise _ply_error(
                        path,
                        f"element {element.name!r} mixes lists of different lengths in {prop.name!r} "
                        "(only meshes whose faces all have the same size are supported; triangulate it)",
                    )
            columns.append(rows[f"p{i}"])
        out[element.name] = columns
        offset += need
    if offset < len(data):
        logger.debug("%s: ignoring %d trailing bytes after the last PLY element", path, len(data) - offset)
    return out


def _read_ascii_body(path: Path, elements: list[_PlyElement], data: bytes, offset: int) -> dict[str, list]:
    try:
        lines = [line for line in data[offset:].decode("ascii").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise _ply_error(path, "the ASCII PLY body contains non-ASCII bytes") from exc
    out: dict[str, list] = {}
    start = 0
    for element in elements:
        rows = lines[start : start + element.count]
        if len(rows) < element.count:
            raise _ply_error(
                path, f"the file is truncated: element {element.name!r} has {len(rows)} of {element.count} rows"
            )
        start += element.count
        width = len(rows[0].split()) if rows else 0
        try:
            values = np.array(" ".join(rows).split(), dtype=np.float64)
        except ValueError as exc:
            raise _ply_error(path, f"element {element.name!r} holds a non-numeric value") from exc
        if values.size != width * element.count:
            raise _ply_error(
                path,
                f"rows of element {element.name!r} have different numbers of values "
                "(only meshes whose faces all have the same size are supported; triangulate it)",
            )
        table = values.reshape(element.count, width)
        columns = []
        col = 0
        for prop in element.properties:
            if prop.count_code is None:
                if col >= width:
                    raise _ply_error(path, f"rows of element {element.name!r} are shorter than its properties")
                columns.append(table[:, col])
                col += 1
                continue
            length = int(table[0, col]) if element.count else 0
            if np.any(table[:, col] != length) or col + 1 + length > width:
                raise _ply_error(
                    path,
                    f"element {element.name!r} mixes lists of different lengths in {prop.name!r} "
                    "(only meshes whose faces all have the same size are supported; triangulate it)",
                )
            columns.append(table[:, col + 1 : col + 1 + length])
            col += 1 + length
        if col != width:
            raise _ply_error(path, f"rows of element {element.name!r} have {width} values, its properties need {col}")
        out[element.name] = columns
    return out


def read_template_ply(
    path: Path | str,
    *,
    expected_vertices: int | None = NUM_VERTICES,
    expected_faces: int | None = NUM_FACES,
) -> TemplateMesh:
    """Read a triangle mesh from an ASCII or binary PLY file.

    The vertex element must have float (or any numeric) ``x``, ``y``, ``z`` properties; other
    properties (colours, normals, ...) are ignored. The face element must have one list property
    (``vertex_indices`` or ``vertex_index``) whose rows all hold 3 indices.

    Args:
        path: the ``.ply`` file (``ascii``, ``binary_little_endian`` or ``binary_big_endian``).
        expected_vertices: required vertex count (default 6890, the SMPL template); None accepts any.
        expected_faces: required triangle count (default 13776); None accepts any.

    Returns:
        A :class:`TemplateMesh` with float32 (V, 3) vertices and int32 (F, 3) faces.

    Raises:
        AssetError: the file is missing, truncated or malformed, the counts differ from the
            expected ones, or a face index is out of range. The message names the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AssetError(f"{path}: cannot read the template mesh ({exc.strerror or exc})", hint=_ASSET_HINT) from exc

    fmt, elements, body_offset = _parse_ply_header(path, data)
    by_name = {element.name: element for element in elements}
    if "vertex" not in by_name or "face" not in by_name:
        raise _ply_error(path, "the PLY file needs both a 'vertex' and a 'face' element")
    order = _PLY_FORMATS[fmt]
    if order is None:
        columns = _read_ascii_body(path, elements, data, body_offset)
    else:
        columns = _read_binary_body(path, elements, data, body_offset, order)

    vertex, face = by_name["vertex"], by_name["face"]
    vertex_props = {prop.name: i for i, prop in enumerate(vertex.properties) if prop.count_code is None}
    if not {"x", "y", "z"} <= vertex_props.keys():
        raise _ply_error(path, "the vertex element lacks scalar x, y and z properties")
    vertices = np.stack([columns["vertex"][vertex_props[axis]] for axis in "xyz"], axis=1).astype(np.float32)

    list_props = [i for i, prop in enumerate(face.properties) if prop.count_code is not None]
    named = [i for i in list_props if face.properties[i].name in ("vertex_indices", "vertex_index")]
    if not named and len(list_props) != 1:
        raise _ply_error(path, "the face element has no 'vertex_indices' list property")
    faces64 = np.asarray(columns["face"][(named or list_props)[0]]).astype(np.int64)

    if expected_vertices is not None and vertices.shape[0] != expected_vertices:
        raise _ply_error(path, f"has {vertices.shape[0]} vertices, expected {expected_vertices}")
    if expected_faces is not None and faces64.shape[0] != expected_faces:
        raise _ply_error(path, f"has {faces64.shape[0]} faces, expected {expected_faces}")
    if faces64.shape[0] and faces64.shape[1] != 3:
        raise _ply_error(path, f"faces have {faces64.shape[1]} vertices each; only triangles are supported")
    faces64 = faces64.reshape(-1, 3)
    if faces64.size and (faces64.min() < 0 or faces64.max() >= vertices.shape[0]):
        raise _ply_error(
            path, f"face indices span [{faces64.min()}, {faces64.max()}], outside [0, {vertices.shape[0]})"
        )
    if not np.all(np.isfinite(vertices)):
        raise _ply_error(path, "vertex positions contain NaN or infinity")

    faces = faces64.astype(np.int32)
    vertices.setflags(write=False)
    faces.setflags(write=False)
    return TemplateMesh(vertices=vertices, faces=faces)


def connection_file_name(layer: str) -> str:
    """File name of one connection matrix, e.g. ``"pool0"`` -> ``"_pool0.npy"``."""
    return f"_{layer}.npy"


def load_connection_matrices(folder: Path | str, layers: tuple[str, ...] = CONNECTION_LAYERS) -> dict[str, np.ndarray]:
    """Read the graph connection matrices of the Mesh-VQ-VAE.

    Args:
        folder: directory holding ``_<layer>.npy`` for every layer name in ``layers``.
        layers: the layer names to read (default: the 14 files of ``config_medium``).

    Returns:
        ``{layer: int64 array (out_points, 1 + 2 * max_neighbours)}`` in ``layers`` order. Row p is
        ``[count, id_0, dist_0, id_1, dist_1, ...]``; the model checks ids against each layer's
        input point count.

    Raises:
        AssetError: the folder or a file is missing (all missing files are named), a file is not
            a plain integer ``.npy`` matrix, or its neighbour counts or ids are out of range.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AssetError(f"{folder}: the connection matrix folder does not exist", hint=_ASSET_HINT)
    missing = [connection_file_name(layer) for layer in layers if not (folder / connection_file_name(layer)).is_file()]
    if missing:
        raise AssetError(f"{folder}: missing connection matrix file(s): {', '.join(missing)}", hint=_ASSET_HINT)

    out: dict[str, np.ndarray] = {}
    for layer in layers:
        path = folder / connection_file_name(layer)
        try:
            matrix = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise AssetError(f"{path}: not a readable .npy matrix ({exc})", hint=_ASSET_HINT) from exc
        if matrix.ndim != 2 or matrix.dtype.kind not in "iu":
            raise AssetError(
                f"{path}: expected a 2-D integer matrix, found {matrix.dtype} {matrix.shape}", hint=_ASSET_HINT
            )
        rows, cols = matrix.shape
        if rows < 1 or cols < 3 or cols % 2 == 0:
            raise AssetError(f"{path}: shape {matrix.shape} is not (points, 1 + 2 * max_neighbours)", hint=_ASSET_HINT)
        matrix = np.ascontiguousarray(matrix, dtype=np.int64)
        counts, ids = matrix[:, 0], matrix[:, 1::2]
        if counts.min() < 0 or counts.max() > ids.shape[1]:
            raise AssetError(
                f"{path}: neighbour counts span [{counts.min()}, {counts.max()}], outside [0, {ids.shape[1]}]",
                hint=_ASSET_HINT,
            )
        if ids.min() < 0:
            raise AssetError(f"{path}: holds negative neighbour ids", hint=_ASSET_HINT)
        out[layer] = matrix
    return out
