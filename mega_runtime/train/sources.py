"""What ``--data PATH`` or ``--synthetic N`` opens for each training stage: one :class:`BatchSource` per run.

* ``tokenizer``: ``--data`` a folder of AMASS/BEDLAM ``.npz`` sequences (needs ``smpl_model``) → ``MeshBatch``
  (canonical, centred meshes);
* ``pretrain``: the same folder (needs ``smpl_model`` and ``tokenize``) → ``TokenBatch``;
* ``finetune``: an image dataset ``.npz`` or an official mix list ``.txt`` (needs ``smpl_model``, ``tokenize``)
  → ``ImageBatch``.

``--synthetic N`` needs none of them (:mod:`mega_runtime.train.synthetic`; ``tokenize`` is used when given).
Every epoch is drawn from the ``numpy.random.Generator`` the caller passes, so a seeded run repeats exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mega_runtime.train import data
from mega_runtime.train.data import DataError

Stage = Literal["tokenizer", "pretrain", "finetune"]
STAGES: tuple[Stage, ...] = ("tokenizer", "pretrain", "finetune")
Tokenize = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DataOptions:
    """Where a run's data comes from (exactly one of ``data`` and ``synthetic``).

    ``smpl_model``: the user's SMPL model file (real data only); ``images_root``: the folder holding
    ``<dataset stem>/<imgname>`` (default: two levels above each dataset file, the official
    ``datasets/<name>/<name>.npz`` layout); ``assets_dir``: where ``template.ply`` is for ``synthetic``;
    ``seed``: the synthetic items' seed.
    """

    data: Path | None = None
    synthetic: int | None = None
    smpl_model: Path | None = None
    images_root: Path | None = None
    assets_dir: Path | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.data is None) == (self.synthetic is None):
            raise DataError(
                "give exactly one data source", hint="pass --data PATH (your dataset) or --synthetic N (no data needed)"
            )


class BatchSource:
    """Batches of one stage: :meth:`epoch` yields one epoch's batches; ``len()`` is the number per epoch."""

    def __init__(self, stage: Stage, batches: Callable[[np.random.Generator], Iterator[Any]], count: int) -> None:
        self.stage = stage
        self._batches = batches
        self._count = count

    def __len__(self) -> int:
        return self._count

    def epoch(self, generator: np.random.Generator) -> Iterator[Any]:
        """One epoch, its order and random choices drawn from ``generator``."""
        return self._batches(generator)


def _need(value: object, what: str, hint: str) -> None:
    if value is None:
        raise DataError(f"training on real data needs {what}", hint=hint)


def _smpl(options: DataOptions, loaded: object | None) -> object:
    if loaded is not None:
        return loaded
    _need(options.smpl_model, "an SMPL model file", "pass --smpl-model PATH (your SMPL model; see docs/smpl.md)")
    from mega_runtime.smpl.model import load_smpl_model

    return load_smpl_model(options.smpl_model)  # type: ignore[arg-type]


class ImageMix:
    """Image datasets sampled as the official ``MixedDataset``: an epoch as long as the largest dataset; each
    draw picks a dataset with equal probability (or ``ratios``), then row ``index % len(dataset)``; the epoch's
    indices are shuffled (the official ``DataLoader(shuffle=True)``)."""

    def __init__(self, annotations: list[data.ImageAnnotations], ratios: list[float] | None = None) -> None:
        if not annotations:
            raise DataError("no image dataset given", hint="pass a dataset .npz or a list file")
        ratios = ratios or [1.0 / len(annotations)] * len(annotations)
        if len(ratios) != len(annotations):
            raise DataError(f"{len(ratios)} ratios for {len(annotations)} datasets")
        self.annotations = annotations
        self.cumulative = np.cumsum(ratios)
        self.length = max(len(a) for a in annotations)

    def draws(self, generator: np.random.Generator) -> list[tuple[int, int]]:
        """(dataset, row) for one epoch."""
        out = []
        for index in generator.permutation(self.length):
            pick = int(np.searchsorted(self.cumulative, generator.random()))
            pick = min(pick, len(self.annotations) - 1)
            out.append((pick, int(index) % len(self.annotations[pick])))
        return out


def _synthetic(stage: Stage, options: DataOptions, batch_size: int, tokenize: Tokenize | None) -> BatchSource:
    from mega_runtime.train.synthetic import SyntheticSource, load_template

    source = SyntheticSource(int(options.synthetic or 0), options.seed, load_template(options.assets_dir), tokenize)
    method = {"tokenizer": source.mesh_batches, "pretrain": source.token_batches, "finetune": source.image_batches}
    return BatchSource(stage, lambda g: method[stage](batch_size, g), len(source) // batch_size)


def _motion(
    stage: Stage, folder: Path, options: DataOptions, batch_size: int, tokenize: Tokenize | None, smpl: object | None
) -> BatchSource:
    if stage == "pretrain":
        _need(tokenize, "the tokenizer", "pass the trained Mesh-VQ-VAE (--tokenizer / --checkpoint-dir)")
    source = data.MotionMeshSource(data.find_motion_files(folder), _smpl(options, smpl))
    if stage == "tokenizer":
        return BatchSource(stage, lambda g: source.batches(batch_size, g), len(source) // batch_size)

    def tokens(generator: np.random.Generator) -> Iterator[Any]:
        import torch

        from mega_runtime.train.batch import TokenBatch

        for batch in source.batches(batch_size, generator):
            rows = np.asarray(tokenize(batch.meshes.numpy()), dtype=np.int64)  # type: ignore[misc]
            yield TokenBatch(tokens=torch.from_numpy(rows))

    return BatchSource(stage, tokens, len(source) // batch_size)


def _images(
    path: Path, options: DataOptions, batch_size: int, tokenize: Tokenize | None, smpl: object | None
) -> BatchSource:
    _need(tokenize, "the tokenizer", "pass the trained Mesh-VQ-VAE (--tokenizer / --checkpoint-dir)")
    files = data.read_dataset_list(path) if path.suffix == ".txt" else [path]
    mix = ImageMix([data.read_image_annotations(f) for f in files])
    model = _smpl(options, smpl)

    def batches(generator: np.random.Generator) -> Iterator[Any]:
        draws = mix.draws(generator)
        for start in range(0, len(draws) - batch_size + 1, batch_size):
            items = []
            for d, row in draws[start : start + batch_size]:
                ann = mix.annotations[d]
                root = options.images_root or ann.path.parent.parent
                items.append(data.image_item(ann, row, model, root))
            yield data.image_batch(items, tokenize)  # type: ignore[arg-type]

    return BatchSource("finetune", batches, mix.length // batch_size)


def open_batches(
    stage: Stage,
    options: DataOptions,
    batch_size: int,
    tokenize: Tokenize | None = None,
    smpl: object | None = None,
) -> BatchSource:
    """The batches of ``stage`` from ``options`` (see the module docstring); every problem is a
    :class:`DataError` raised here, before training starts, naming the missing file, field or option.

    ``tokenize``: (B, 6890, 3) canonical meshes → (B, 54) tokens (the frozen Mesh-VQ-VAE's ``encode``);
    ``smpl``: an already loaded SMPL model (else ``options.smpl_model`` is loaded)."""
    if stage not in STAGES:
        raise DataError(f"unknown training stage {stage!r}", hint=f"use one of {', '.join(STAGES)}")
    if batch_size < 1:
        raise DataError(f"batch size {batch_size} must be at least 1")
    if options.data is None:
        source = _synthetic(stage, options, batch_size, tokenize)
    elif stage == "finetune":
        source = _images(Path(options.data), options, batch_size, tokenize, smpl)
    else:
        source = _motion(stage, Path(options.data), options, batch_size, tokenize, smpl)
    if len(source) == 0:
        raise DataError(
            f"the data holds fewer items than one batch of {batch_size}",
            hint="use a smaller --batch-size or more data (--synthetic N with N ≥ the batch size)",
        )
    return source
