"""The graph autoencoder of the Mesh-VQ-VAE (official ``FullyConvAE`` in test mode), computed sparsely.

Each layer maps ``in_points`` x ``in_channels`` to ``out_points`` x ``out_channels``. Its connection
matrix gives every output point p up to ``max_neighbours`` input points ``nb[p, m]``; ids equal
to ``in_points`` are padding (``mask[p, m] = 0``). With ``K = weight_num`` basis matrices
``W_k = weights.view(K, out, in)[k]`` the official layer computes (test mode)::

    conv[p]  = sum_m (sum_k w_weights[p, m, k] * mask[p, m] * W_k) @ x[nb[p, m]] + bias      # ELU unless last layer
    res[p]   = sum_m P[p, m] * x[nb[p, m]],  P = |p_neighbours| * mask / (row sum + 1e-8)    # or x if points unchanged
    out      = conv * sqrt(1 - rate) + res * sqrt(rate)

The official ``init_test_mode()`` materialises the per-point kernel ``sum_k w_weights * W_k``
(out_points x max_neighbours x out x in floats, 330 MB for one layer) and has to be re-run after
every weight load. This module never stores derived weights. Per call it rearranges the sum as

* ``out_channels <= in_channels``: ``y_k = x @ W_k^T`` first (narrow), then ``conv = sum_k A_k @ y_k``,
* ``out_channels >  in_channels``: ``z_k = A_k @ x`` first (narrow), then ``conv = sum_k z_k @ W_k^T``,

where ``A_k`` is the sparse (out_points, in_points) matrix with entries ``w_weights[p, m, k]`` at
``(p, nb[p, m])`` for unmasked neighbours. The pooling matrix ``P`` is sparse the same way.
Activations travel point-major, (points, batch * channels), so every product is one 2-D
matmul or sparse-dense matmul over the whole batch.

Two evaluations of the neighbour sums, same numbers to float32 rounding (summation order):

* ``csr``: ``A_k`` and ``P`` as ``torch.sparse_csr_tensor`` (fast on CPU; PyTorch cannot build CSR
  tensors on every device, e.g. Apple MPS);
* ``gather``: the padded neighbour ids ``nb`` (padding redirected to point 0 with weight 0): the
  neighbour rows of a block of output points are gathered with ``index_select`` and weighted with a
  batched matmul, then the bases are applied in one matmul — only dense ops, so it runs everywhere.

``graph_path="auto"`` (the default) takes ``$MEGA_GRAPH_PATH`` if set, else ``csr`` where
:func:`sparse_csr_supported` finds CSR working on the input's device type in the compute dtype
(float32 for narrower models on the CPU), else ``gather``.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mega_runtime.errors import AssetError, ConfigError

__all__ = [
    "ENV_GRAPH_PATH",
    "GRAPH_PATHS",
    "FullyConvAE",
    "GraphLayerSpec",
    "resolve_graph_path",
    "sparse_csr_supported",
]

log = logging.getLogger(__name__)

#: How the neighbour sums are evaluated: ``auto`` (probe the device), ``csr`` or ``gather``.
GRAPH_PATHS = ("auto", "csr", "gather")
#: Environment variable that overrides ``auto`` (``csr`` or ``gather``), e.g. to compare the paths.
ENV_GRAPH_PATH = "MEGA_GRAPH_PATH"

# Probe results per (device type, dtype): whether sparse CSR @ dense works there.
_CSR_SUPPORT: dict[tuple[str, torch.dtype], bool] = {}

# The gather path gathers neighbour rows in blocks of at most this many elements (64 MB of float32).
_GATHER_ELEMENTS = 1 << 24

# CPU sparse (MKL) matmul exists for float32/float64 only; narrower floats are computed in float32 there.
_CPU_SPARSE_DTYPES = (torch.float32, torch.float64)


def sparse_csr_supported(device: torch.device | str, dtype: torch.dtype = torch.float32) -> bool:
    """Whether PyTorch can build a sparse CSR matrix of ``dtype`` on ``device`` and multiply it with a dense one.

    Probed once per (device type, dtype) (``cpu``, ``cuda``, ``mps``, ...) with a 2x2 int32-indexed
    CSR matrix: ``A @ x`` and ``out.addmm_(A, x)``, the two products the ``csr`` path uses, checked
    against their known values (exact in every float dtype). Backends without CSR support raise
    ``NotImplementedError`` (no kernel for the dispatch key) or ``RuntimeError`` (e.g. a dtype the
    sparse library lacks); both mean "not supported", anything else propagates. The answer is
    cached for the process.
    """
    device = torch.device(device)
    key = (device.type, dtype)
    if key not in _CSR_SUPPORT:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # CSR is "beta"
                crow = torch.tensor([0, 1, 2], dtype=torch.int32, device=device)
                col = torch.tensor([1, 0], dtype=torch.int32, device=device)
                values = torch.tensor([2.0, 3.0], dtype=dtype, device=device)
                matrix = torch.sparse_csr_tensor(crow, col, values, (2, 2))
                dense = torch.tensor([[1.0], [4.0]], dtype=dtype, device=device)
                out = matrix @ dense
                out.addmm_(matrix, dense)
                supported = torch.equal(out.cpu().float(), torch.tensor([[16.0], [6.0]]))
        except (NotImplementedError, RuntimeError) as exc:
            log.debug("sparse CSR (%s) is not usable on %s: %s", dtype, device.type, exc)
            supported = False
        log.debug("sparse CSR (%s) on %s: %s", dtype, device.type, "supported" if supported else "not supported")
        _CSR_SUPPORT[key] = supported
    return _CSR_SUPPORT[key]


def resolve_graph_path(requested: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> str:
    """``csr`` or ``gather`` for evaluating the graph layers on ``device`` with CSR values of ``dtype``.

    ``requested`` ``csr``/``gather`` is taken as is (``csr`` on a device without CSR support is a
    ConfigError); ``auto`` takes ``$MEGA_GRAPH_PATH`` when set, else ``csr`` where
    :func:`sparse_csr_supported`, else ``gather``.
    """
    if requested not in GRAPH_PATHS:
        raise ConfigError(f"unknown graph path {requested!r}", hint=f"use one of {', '.join(GRAPH_PATHS)}")
    source = "argument"
    if requested == "auto":
        env = os.environ.get(ENV_GRAPH_PATH, "").strip().lower()
        if env and env not in GRAPH_PATHS:
            raise ConfigError(
                f"${ENV_GRAPH_PATH} is {env!r}, not a graph path", hint="set it to auto, csr or gather, or unset it"
            )
        requested, source = env or "auto", f"${ENV_GRAPH_PATH}"
    if requested == "auto":
        return "csr" if sparse_csr_supported(device, dtype) else "gather"
    if requested == "csr" and not sparse_csr_supported(device, dtype):
        raise ConfigError(
            f"graph path csr was asked for ({source}), but PyTorch cannot use sparse CSR tensors "
            f"({str(dtype).removeprefix('torch.')}) on {torch.device(device).type}",
            hint=f"use graph path gather or auto (unset ${ENV_GRAPH_PATH})",
        )
    return requested


@dataclass(frozen=True)
class GraphLayerSpec:
    """Static description of one graph layer (everything except its learned tensors)."""

    index: int
    connection: str
    in_points: int
    out_points: int
    in_channels: int
    out_channels: int
    weight_num: int
    residual_rate: float
    max_neighbours: int
    is_final: bool

    @property
    def has_conv(self) -> bool:
        """The layer owns ``weights``/``bias``/``w_weights`` (residual rate below 1)."""
        return self.residual_rate < 1

    @property
    def has_residual(self) -> bool:
        """The layer owns ``p_neighbors`` (residual rate above 0)."""
        return self.residual_rate > 0


def _neighbour_structure(spec: GraphLayerSpec, matrix: np.ndarray) -> tuple[np.ndarray, ...]:
    """CSR and padded structure of the layer's unmasked neighbours.

    Returns ``(crow, col, gather, mask, ids)``: int32 row pointers (out_points + 1), int32 column
    ids (nnz), int64 positions of each entry in the flattened (out_points * max_neighbours) grid,
    the float32 (out_points, max_neighbours) neighbour mask, and the int64 (out_points,
    max_neighbours) neighbour ids with padding replaced by 0 (the mask zeroes its weight).
    CSR entries are sorted by column per row.
    """
    ids = matrix[:, 1::2]
    valid = ids != spec.in_points
    if ids.max() > spec.in_points or np.any(valid.sum(1) != matrix[:, 0]):
        raise AssetError(
            f"connection matrix _{spec.connection}.npy (layer {spec.index}) does not fit a layer with "
            f"{spec.in_points} input points (ids must be < {spec.in_points}, padding = {spec.in_points}, "
            "and each row's count must equal its number of non-padding ids)",
            hint="the connection files do not match the layer order; use the official dfaust2 matrices",
        )
    rows, slots = np.nonzero(valid)
    cols = ids[rows, slots]
    order = np.lexsort((cols, rows))
    rows, slots, cols = rows[order], slots[order], cols[order]
    if np.any((rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])):
        raise AssetError(
            f"connection matrix _{spec.connection}.npy (layer {spec.index}) lists a neighbour twice in one row",
            hint="use the official dfaust2 connection matrices",
        )
    crow = np.zeros(spec.out_points + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=spec.out_points), out=crow[1:])
    gather = rows * spec.max_neighbours + slots
    padded = np.where(valid, ids, 0).astype(np.int64)
    return crow.astype(np.int32), cols.astype(np.int32), gather.astype(np.int64), valid.astype(np.float32), padded


def _sum_of_bases(out: torch.Tensor | None, spec: GraphLayerSpec) -> torch.Tensor:
    """The conv sum over a layer's weight bases; None means the layer had none (its spec is inconsistent)."""
    if out is None:
        raise ConfigError(f"layer {spec.index}: a conv layer needs weight_num >= 1, got {spec.weight_num}")
    return out


class FullyConvAE(nn.Module):
    """Mesh graph autoencoder with the official parameter names and shapes.

    Parameters (per layer ``l``, in the official registration order): ``weights<l>`` (K, out*in),
    ``bias<l>`` (out,), ``w_weights<l>`` (out_points, max_neighbours, K) for conv layers and
    ``p_neighbors<l>`` (out_points, max_neighbours) for residual/pooling layers. The connection
    structure lives in non-persistent buffers, so it follows ``.to(device)`` but is not saved.
    Both evaluations (see the module docstring) are always available; ``graph_path`` picks one per
    call from the input's device.

    Args:
        connection_layers: connection matrix name of each layer, e.g. ``("pool0", ..., "unpool0")``.
        channels: output channels of each layer.
        weight_nums: number of basis matrices K of each layer (0 for pure pooling layers).
        residual_rates: mixing rate of each layer, in [0, 1].
        connections: ``{name: int matrix (out_points, 1 + 2 * max_neighbours)}`` (see ``mega_runtime.models.assets``).
        in_points: points of the input mesh (6890).
        in_channels: channels of the input mesh (3: xyz).
        graph_path: ``auto`` (default), ``csr`` or ``gather``; the attribute of the same name may be changed later.
    """

    def __init__(
        self,
        connection_layers: Sequence[str],
        channels: Sequence[int],
        weight_nums: Sequence[int],
        residual_rates: Sequence[float],
        connections: Mapping[str, np.ndarray],
        *,
        in_points: int,
        in_channels: int = 3,
        graph_path: str = "auto",
    ) -> None:
        super().__init__()
        if graph_path not in GRAPH_PATHS:
            raise ConfigError(f"unknown graph path {graph_path!r}", hint=f"use one of {', '.join(GRAPH_PATHS)}")
        self.graph_path = graph_path
        num_layers = len(connection_layers)
        if {len(channels), len(weight_nums), len(residual_rates)} != {num_layers}:
            raise ConfigError("connection_layers, channels, weight_nums and residual_rates need the same length")
        specs: list[GraphLayerSpec] = []
        points, chans = in_points, in_channels
        for index, name in enumerate(connection_layers):
            if name not in connections:
                raise AssetError(
                    f"no connection matrix for layer {index} ({name!r})",
                    hint="load all connection files with mega_runtime.models.assets.load_connection_matrices",
                )
            matrix = np.asarray(connections[name])
            if matrix.ndim != 2 or matrix.shape[1] < 3 or matrix.shape[1] % 2 == 0 or matrix.dtype.kind not in "iu":
                raise AssetError(
                    f"connection matrix _{name}.npy is not an integer (points, 1 + 2 * neighbours) matrix",
                    hint="use the official dfaust2 connection matrices",
                )
            spec = GraphLayerSpec(
                index=index,
                connection=name,
                in_points=points,
                out_points=int(matrix.shape[0]),
                in_channels=chans,
                out_channels=int(channels[index]),
                weight_num=int(weight_nums[index]),
                residual_rate=float(residual_rates[index]),
                max_neighbours=int(matrix.shape[1] // 2),
                is_final=index == num_layers - 1,
            )
            if spec.has_conv and spec.weight_num < 1:
                raise ConfigError(f"layer {index}: residual rate {spec.residual_rate} < 1 needs weight_num >= 1")
            if spec.has_residual and spec.in_channels != spec.out_channels:
                raise ConfigError(
                    f"layer {index}: a residual layer that changes channels "
                    f"({spec.in_channels} -> {spec.out_channels}) needs the official weight_res, "
                    "which this runtime does not implement"
                )
            self._register_layer(spec, matrix)
            specs.append(spec)
            points, chans = spec.out_points, spec.out_channels
        self.layers: tuple[GraphLayerSpec, ...] = tuple(specs)

    def _register_layer(self, spec: GraphLayerSpec, matrix: np.ndarray) -> None:
        out_pn, max_nb, li = spec.out_points, spec.max_neighbours, spec.index
        if spec.has_conv:
            k = spec.weight_num
            self.register_parameter(f"weights{li}", nn.Parameter(torch.zeros(k, spec.out_channels * spec.in_channels)))
            self.register_parameter(f"bias{li}", nn.Parameter(torch.zeros(spec.out_channels)))
            self.register_parameter(f"w_weights{li}", nn.Parameter(torch.zeros(out_pn, max_nb, k)))
        if spec.has_residual:
            self.register_parameter(f"p_neighbors{li}", nn.Parameter(torch.zeros(out_pn, max_nb)))
        crow, col, gather, mask, padded = _neighbour_structure(spec, matrix)
        self.register_buffer(f"_crow{li}", torch.from_numpy(crow), persistent=False)
        self.register_buffer(f"_col{li}", torch.from_numpy(col), persistent=False)
        self.register_buffer(f"_gather{li}", torch.from_numpy(gather), persistent=False)
        self.register_buffer(f"_mask{li}", torch.from_numpy(mask), persistent=False)
        self.register_buffer(f"_nb{li}", torch.from_numpy(padded), persistent=False)
        with warnings.catch_warnings():
            # torch warns once per process that sparse CSR is "beta"; take that warning here, silently.
            warnings.simplefilter("ignore", UserWarning)
            self._sparse(spec, torch.zeros(col.shape[0]))

    def _sparse(self, spec: GraphLayerSpec, values: torch.Tensor) -> torch.Tensor:
        """Sparse CSR (out_points, in_points) matrix with the layer's neighbour structure and ``values`` (nnz,)."""
        li = spec.index
        return torch.sparse_csr_tensor(
            getattr(self, f"_crow{li}"),
            getattr(self, f"_col{li}"),
            values,
            (spec.out_points, spec.in_points),
            check_invariants=False,
        )

    def _conv(self, spec: GraphLayerSpec, h: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """Conv part of a layer, CSR path. h: (in_points, batch*in_ch) -> (out_points, batch*out_ch), ELU applied."""
        li, k_num = spec.index, spec.weight_num
        in_ch, out_ch, in_pn, out_pn = spec.in_channels, spec.out_channels, spec.in_points, spec.out_points
        basis = getattr(self, f"weights{li}").to(dtype).view(k_num, out_ch, in_ch)
        w_weights = getattr(self, f"w_weights{li}").to(dtype)
        values = w_weights.reshape(out_pn * spec.max_neighbours, k_num)[getattr(self, f"_gather{li}")].t().contiguous()
        out: torch.Tensor | None = None
        if out_ch > in_ch:
            # aggregate neighbours on the narrow input side, then mix channels: sum_k (A_k @ x) @ W_k^T
            for k in range(k_num):
                z = (self._sparse(spec, values[k]) @ h).view(out_pn * batch, in_ch)
                if out is None:
                    out = z @ basis[k].t()
                else:
                    out.addmm_(z, basis[k].t())
            out = _sum_of_bases(out, spec).view(out_pn, batch * out_ch)
        else:
            # mix channels first (narrow output side), then aggregate neighbours: sum_k A_k @ (x @ W_k^T)
            flat = h.view(in_pn * batch, in_ch)
            stacked = None
            if k_num * out_ch <= in_ch:  # one matmul for all bases is cheaper than re-reading x per basis
                stacked = (flat @ basis.reshape(k_num * out_ch, in_ch).t()).view(in_pn, batch, k_num, out_ch)
            for k in range(k_num):
                if stacked is None:
                    y = (flat @ basis[k].t()).view(in_pn, batch * out_ch)
                else:
                    y = stacked[:, :, k].reshape(in_pn, batch * out_ch)
                if out is None:
                    out = self._sparse(spec, values[k]) @ y
                else:
                    out.addmm_(self._sparse(spec, values[k]), y)
            out = _sum_of_bases(out, spec)
        out.view(out_pn, batch, out_ch).add_(getattr(self, f"bias{li}").to(dtype))
        if not spec.is_final:
            out = F.elu(out, inplace=True)
        return out

    def _residual(self, spec: GraphLayerSpec, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Residual part of a layer, CSR path. h: (in_points, batch * ch) -> (out_points, batch * ch)."""
        if spec.in_points == spec.out_points:
            return h
        li = spec.index
        weights = getattr(self, f"p_neighbors{li}").to(dtype).abs() * getattr(self, f"_mask{li}").to(dtype)
        weights = weights / (weights.sum(1, keepdim=True) + 1e-8)
        return self._sparse(spec, weights.reshape(-1)[getattr(self, f"_gather{li}")]) @ h

    def _gather_chunks(self, spec: GraphLayerSpec, h: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
        """Neighbour rows of ``h`` for consecutive blocks of output points, ``_GATHER_ELEMENTS`` floats at a time.

        h: (in_points, D). Yields ``(points, x)``: a slice of output points and x (len, max_neighbours, D)
        with ``x[i, m] = h[nb[p, m]]`` (padding slots read point 0; their weight is 0).
        """
        nb = getattr(self, f"_nb{spec.index}")
        step = max(1, _GATHER_ELEMENTS // max(1, spec.max_neighbours * h.shape[1]))
        for first in range(0, spec.out_points, step):
            points = slice(first, min(first + step, spec.out_points))
            rows = nb[points]
            yield points, h.index_select(0, rows.reshape(-1)).view(rows.shape[0], spec.max_neighbours, h.shape[1])

    def _conv_gather(self, spec: GraphLayerSpec, h: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """Conv part of a layer, gather path. h: (in_points, batch*in_ch) -> (out_points, batch*out_ch), ELU applied.

        Same sums as :meth:`_conv` with dense ops only, per block of output points: gather the
        neighbour rows x (n, max_nb, batch*in_ch), ``z = (w_weights * mask)^T @ x`` per point
        (n, K, batch*in_ch), then one matmul with the stacked bases: ``sum_k z_k @ W_k^T``.
        """
        li, k_num = spec.index, spec.weight_num
        in_ch, out_ch, out_pn = spec.in_channels, spec.out_channels, spec.out_points
        stacked = getattr(self, f"weights{li}").to(dtype).view(k_num, out_ch, in_ch).transpose(1, 2)
        stacked = stacked.reshape(k_num * in_ch, out_ch)
        weights = getattr(self, f"w_weights{li}").to(dtype) * getattr(self, f"_mask{li}").to(dtype)[..., None]
        weights = weights.transpose(1, 2)  # (out_pn, K, max_nb)
        blocks = []
        for points, x in self._gather_chunks(spec, h):
            z = torch.bmm(weights[points], x)  # (n, K, batch * in_ch)
            n = z.shape[0]
            z = z.view(n, k_num, batch, in_ch).transpose(1, 2).reshape(n * batch, k_num * in_ch)
            blocks.append((z @ stacked).view(n, batch * out_ch))
        out = torch.cat(blocks)
        out.view(out_pn, batch, out_ch).add_(getattr(self, f"bias{li}").to(dtype))
        if not spec.is_final:
            out = F.elu(out, inplace=True)
        return out

    def _residual_gather(self, spec: GraphLayerSpec, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Residual part of a layer, gather path. h: (in_points, batch * ch) -> (out_points, batch * ch)."""
        if spec.in_points == spec.out_points:
            return h
        li = spec.index
        weights = getattr(self, f"p_neighbors{li}").to(dtype).abs() * getattr(self, f"_mask{li}").to(dtype)
        weights = (weights / (weights.sum(1, keepdim=True) + 1e-8))[:, None, :]  # (out_pn, 1, max_nb)
        blocks = [torch.bmm(weights[points], x)[:, 0] for points, x in self._gather_chunks(spec, h)]
        return torch.cat(blocks)

    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Apply layers ``start`` .. ``stop - 1``.

        Args:
            x: (B, layers[start].in_points, layers[start].in_channels) floating tensor.

        Returns:
            (B, layers[stop - 1].out_points, layers[stop - 1].out_channels), dtype of the parameters.

        The evaluation (``csr`` or ``gather``) is :func:`resolve_graph_path` of ``self.graph_path`` and
        ``x.device``; the CSR path computes float16/bfloat16 models in float32 on the CPU.
        """
        stop = len(self.layers) if stop is None else stop
        first = self.layers[start]
        if x.ndim != 3 or x.shape[1:] != (first.in_points, first.in_channels):
            raise ValueError(
                f"layer {start} expects input (batch, {first.in_points}, {first.in_channels}), got {tuple(x.shape)}"
            )
        param_dtype = next(self.parameters()).dtype
        csr_dtype = param_dtype
        if x.device.type == "cpu" and csr_dtype not in _CPU_SPARSE_DTYPES:
            csr_dtype = torch.float32
        if resolve_graph_path(self.graph_path, x.device, csr_dtype) == "csr":
            conv, residual, dtype = self._conv, self._residual, csr_dtype
        else:
            conv, residual, dtype = self._conv_gather, self._residual_gather, param_dtype
        batch = x.shape[0]
        h = x.to(dtype).transpose(0, 1).reshape(first.in_points, batch * first.in_channels)
        for spec in self.layers[start:stop]:
            if spec.residual_rate == 0:
                h = conv(spec, h, batch, dtype)
            elif spec.residual_rate == 1:
                h = residual(spec, h, dtype)
            else:
                h = conv(spec, h, batch, dtype) * math.sqrt(1 - spec.residual_rate) + residual(
                    spec, h, dtype
                ) * math.sqrt(spec.residual_rate)
        last = self.layers[stop - 1]
        return h.view(last.out_points, batch, last.out_channels).transpose(0, 1).to(param_dtype).contiguous()
