"""Completion of one person of a result: keep the tokens that own a body region, resample the others.

The kept tokens are :func:`mega_runtime.models.token_regions.tokens_covering` of the region's vertices.
When the result comes from a still image that is still on disk, the person is re-cropped from its box exactly as
the pipeline crops (:func:`mega_runtime.pipeline.preprocess.crop_person`) and the image model fills the other
tokens (:meth:`mega_runtime.mega.Mega.complete`); otherwise (generated bodies, videos, a moved image) the
pre-trained unconditional model does (:meth:`mega_runtime.mega.Mega.generate` with fixed tokens). Either way the
new hypotheses are scored by :mod:`mega_runtime.decoding.scoring` and placed with the person's rotation and
translation, so they overlay the source hypothesis.

With ``pin`` (the default) the kept vertices are then set back exactly to the source hypothesis, and the vertices
within ``falloff_m`` of them (measured along the template's surface) blend from the source to the new body with a
smoothstep (:func:`pin_weights`): the locked region does not move at all and no seam appears. Without it, the
locked region moves as much as the kept tokens allow (docs/completion.md has both figures).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mega_runtime import defaults
from mega_runtime.constants import NUM_TOKENS
from mega_runtime.errors import MegaError
from mega_runtime.io.result import Result

__all__ = ["CompletionError", "CompletionRequest", "complete_person", "keep_vertices", "pin_weights"]

logger = logging.getLogger(__name__)


class CompletionError(MegaError):
    """A completion request does not fit its result (person, hypothesis, region)."""


@dataclass(frozen=True)
class CompletionRequest:
    """What to complete.

    person / hypothesis: indices into the result's people and hypotheses (frame 0 of the result).
    keep: int vertex indices (each in [0, 6890)) whose owning tokens are kept.
    count: number of new hypotheses (1 … defaults.MAX_HYPOTHESES).
    seed: seeds the sampler (torch.Generator).
    coverage: share of the kept vertices' influence the kept tokens must give (see tokens_covering).
    pin: set the kept vertices back to the source hypothesis after decoding (see the module doc).
    falloff_m: metres along the surface over which pinned vertices blend into the new body (>= 0).
    use_image: condition on the result's photo when it is still on disk (False: the pre-trained model, no image).
    """

    person: int
    hypothesis: int
    keep: np.ndarray
    count: int
    seed: int = defaults.SEED
    coverage: float = defaults.COMPLETION_COVERAGE
    pin: bool = defaults.COMPLETION_PIN
    falloff_m: float = defaults.COMPLETION_FALLOFF_M
    use_image: bool = True


def keep_vertices(spec: str, assets_dir: Path) -> np.ndarray:
    """The vertex set named by ``spec``: a region name, or a text file of vertex indices (whitespace/commas)."""
    from mega_runtime.models.token_regions import REGION_NAMES, build_token_regions

    if spec in REGION_NAMES:
        return np.asarray(build_token_regions(assets_dir).regions[spec], dtype=np.int64)
    path = Path(spec)
    if not path.is_file():
        raise CompletionError(
            f"--keep {spec!r} is neither a region nor a file", hint=f"use one of {', '.join(REGION_NAMES)} or a file"
        )
    try:
        values = np.array(path.read_text(encoding="utf-8").replace(",", " ").split(), dtype=np.int64)
    except ValueError as exc:
        raise CompletionError(f"{path} holds something other than vertex indices", hint="one integer each") from exc
    if values.size == 0:
        raise CompletionError(f"{path} lists no vertex", hint="list the indices of the vertices to keep")
    return values


def complete_person(
    source: Result,
    request: CompletionRequest,
    checkpoint_dir: Path | str | None = None,
    assets_dir: Path | str | None = None,
    device: str = defaults.DEVICE,
) -> Result:
    """A one-person result with ``request.count`` new hypotheses of ``source``'s person (see the module doc).

    Arrays follow docs/result-format.md: vertices (1, 1, M, 6890, 3) float32 metres in the source's camera frame.
    """
    import torch

    from mega_runtime.mega import Mega, resolve_device
    from mega_runtime.models.assets import read_template_ply
    from mega_runtime.models.token_regions import build_token_regions, tokens_covering
    from mega_runtime.weights import resolve_assets_dir, resolve_checkpoint_dir

    arrays = source.arrays
    if not 0 <= request.person < source.num_people:
        raise CompletionError(f"person {request.person} is not in the result", hint=f"use 0 … {source.num_people - 1}")
    if not 0 <= request.hypothesis < source.num_hypotheses:
        raise CompletionError(
            f"hypothesis {request.hypothesis} is not in the result", hint=f"use 0 … {source.num_hypotheses - 1}"
        )
    if not bool(arrays["valid"][0, request.person]):
        raise CompletionError(f"person {request.person} is not seen in the result's first frame", hint="pick another")
    assets = resolve_assets_dir(assets_dir)
    regions = build_token_regions(assets)
    keep = tokens_covering(regions.weights, request.keep, request.coverage).astype(np.int64)
    tokens = torch.from_numpy(arrays["tokens"][0, request.person, request.hypothesis].astype(np.int64))
    fixed = torch.full((request.count, NUM_TOKENS), -1, dtype=torch.int64)
    fixed[:, keep] = tokens[keep]
    generator = torch.Generator().manual_seed(request.seed)
    image = _source_image(source.meta) if request.use_image else None
    model = source.meta.get("model", {}).get("name") if image is not None else None
    if image is not None and model in defaults.IMAGE_MODELS:
        from mega_runtime.pipeline.preprocess import crop_person

        folder = resolve_checkpoint_dir([model, defaults.TOKENIZER_MODEL], checkpoint_dir, assets_dir=assets)
        mega = Mega.from_checkpoints(folder, model, assets_dir=assets, device=resolve_device(device))
        patch = tuple(mega.cvqmae.config.backbone.input_size)
        crop = crop_person(image, arrays["boxes_xyxy"][0, request.person], patch)
        images = torch.from_numpy(crop.image[None]).repeat(request.count, 1, 1, 1)
        samples, canonical = mega.complete(images, fixed.to(mega.device), generator)
        conditioning = "image"
    else:
        folder = resolve_checkpoint_dir(
            [defaults.PRETRAINED_MODEL, defaults.TOKENIZER_MODEL], checkpoint_dir, assets_dir=assets
        )
        mega = Mega.from_checkpoints(folder, None, assets_dir=assets, device=resolve_device(device), pretrained=True)
        samples, canonical = mega.generate(request.count, generator, fixed=fixed.to(mega.device))
        conditioning = "none"
    if samples.log_likelihood is None:  # both Mega methods score their samples; a None here is a bug
        raise RuntimeError("completion returned unscored samples")
    rotation = arrays["rotation"][0, request.person].astype(np.float32)
    cam_t = arrays["cam_t"][0, request.person, request.hypothesis].astype(np.float32)
    bodies = canonical.cpu().numpy().astype(np.float32)
    if source.meta.get("source", {}).get("kind") == "generated":
        # generate_bodies placed the source body mean-centred: shift the new ones by the same offset, so the kept
        # region stays where it was.
        offset = mega.decode_meshes(tokens[None].to(mega.device)).cpu().numpy().mean(axis=1)
        bodies = bodies - offset.astype(np.float32)
    vertices = bodies @ rotation.T + cam_t
    template = read_template_ply(assets / "template.ply")
    if request.pin:
        weights = pin_weights(template.vertices, template.faces, request.keep, request.falloff_m)[None, :, None]
        source_vertices = arrays["vertices"][0, request.person, request.hypothesis].astype(np.float32)
        vertices = (weights * source_vertices + (1.0 - weights) * vertices).astype(np.float32)
    spread = np.sqrt(np.square(vertices - vertices.mean(axis=0)).sum(axis=-1).mean(axis=0))
    m = request.count
    out = {
        "faces": template.faces,
        "vertices": vertices[None, None].astype(np.float32),
        "cam_t": np.broadcast_to(cam_t, (1, 1, m, 3)).copy(),
        "tokens": samples.tokens.cpu().numpy().astype(np.int16).reshape(1, 1, m, NUM_TOKENS),
        "log_likelihood": samples.log_likelihood.cpu().numpy().astype(np.float32).reshape(1, 1, m),
        "vertex_std": spread[None, None].astype(np.float32),
        "rotation": rotation[None, None],
        "cam_crop": arrays["cam_crop"][:1, request.person : request.person + 1].astype(np.float32),
        "boxes_xyxy": arrays["boxes_xyxy"][:1, request.person : request.person + 1].astype(np.float32),
        "track_ids": arrays["track_ids"][request.person : request.person + 1].astype(np.int32),
        "valid": np.ones((1, 1), bool),
        "frame_indices": arrays["frame_indices"][:1].astype(np.int32),
    }
    meta: dict[str, Any] = copy.deepcopy(source.meta)
    for key in ("arrays", "arrays_file", "arrays_sha256", "arrays_bytes", "schema", "version"):
        meta.pop(key, None)
    meta["sampling"] = {**meta.get("sampling", {}), "num_hypotheses": m, "seed": request.seed}
    meta["completion"] = {
        "person": request.person,
        "hypothesis": request.hypothesis,
        "kept_tokens": [int(t) for t in keep],
        "conditioning": conditioning,
        "pinned": bool(request.pin),
        "falloff_m": float(request.falloff_m) if request.pin else None,
    }
    meta["warnings"] = list(meta.get("warnings", []))
    if request.use_image and conditioning == "none" and source.meta.get("source", {}).get("kind") != "generated":
        meta["warnings"].append("the source image could not be read: the other tokens were sampled without it")
    logger.info("completed person %d: kept %d tokens, %d new hypotheses", request.person, len(keep), m)
    return Result(meta=meta, arrays=out)


def pin_weights(template_vertices: np.ndarray, faces: np.ndarray, keep: np.ndarray, falloff_m: float) -> np.ndarray:
    """How much of the source each vertex keeps: (V,) float32 in [0, 1].

    1 on ``keep``; for the other vertices ``1 - smoothstep(d / falloff_m)``, d = the shortest path (metres) along the
    edges of the template mesh (``template_vertices`` (V, 3) float32 metres, ``faces`` (F, 3) int) to the nearest
    kept vertex; 0 beyond ``falloff_m`` (and everywhere but ``keep`` when ``falloff_m`` is 0).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    if falloff_m < 0:
        raise CompletionError(f"the falloff must be >= 0 metres, got {falloff_m}", hint="use e.g. 0.05")
    count = int(template_vertices.shape[0])
    weights = np.zeros(count, np.float32)
    kept = np.unique(np.asarray(keep, dtype=np.int64))
    weights[kept] = 1.0
    if falloff_m == 0 or kept.size == 0:
        return weights
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    lengths = np.linalg.norm(template_vertices[edges[:, 0]] - template_vertices[edges[:, 1]], axis=1)
    graph = coo_matrix((lengths, (edges[:, 0], edges[:, 1])), shape=(count, count)).tocsr()
    distance = dijkstra(graph, directed=False, indices=kept, min_only=True, limit=falloff_m)
    x = np.clip(np.asarray(distance, dtype=np.float64) / falloff_m, 0.0, 1.0)
    return np.maximum(weights, (1.0 - x * x * (3.0 - 2.0 * x)).astype(np.float32))


def _source_image(meta: dict[str, Any]) -> np.ndarray | None:
    """The result's still image (BGR uint8) when it is one and still readable, else None."""
    from mega_runtime.pipeline.media import read_image

    source = meta.get("source", {})
    path = source.get("path") if isinstance(source, dict) else None
    if not isinstance(source, dict) or source.get("kind") != "image" or not isinstance(path, str):
        return None
    if not Path(path).is_file():
        return None
    try:
        return read_image(path)
    except MegaError as exc:
        logger.warning("cannot read the source image %s: %s", path, exc)
        return None
