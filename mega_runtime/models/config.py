"""Frozen configurations of the models, with the official full-size presets.

Field names follow the official YAML files (``model.*`` in MEGA's configs) so a
configuration can be read from them or from a ``config.json`` written by
``mega-runtime verify --write-checkpoints``. torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from mega_runtime.errors import ConfigError

BACKBONES = ("resnet", "hrnet", "vit")


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of the masked token transformer shared by CVQMAE and VQMAE (official ``model.*``)."""

    seq_length: int = 54
    emb_dim: int = 1024
    encoder_layer: int = 12
    encoder_head: int = 4
    decoder_layer: int = 4
    decoder_head: int = 4
    num_embeddings: int = 512
    dim_tokens: int = 512

    def __post_init__(self) -> None:
        for name in ("encoder_head", "decoder_head"):
            heads = getattr(self, name)
            if heads <= 0 or self.emb_dim % heads:
                raise ConfigError(f"emb_dim {self.emb_dim} is not divisible by {name} {heads}")


@dataclass(frozen=True)
class ViTConfig:
    """The ViTPose-style image backbone (patch 16 with padding 2).

    ``num_positions`` is the length of ``pos_embed`` including its cls slot
    (197 for a 224×224 input, 193 for the repository default 256×192). The
    released checkpoint's value is read from the file before the model is built.
    """

    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_positions: int = 193

    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols) implied by ``num_positions``; see :func:`vit_grid`."""
        return vit_grid(self.num_positions - 1)


def vit_grid(num_patches: int) -> tuple[int, int]:
    """The (rows, cols) patch grid of a known ViT input size for ``num_patches`` tokens.

    196 → 14×14 (224×224 input); 192 → 16×12 (256×192, the ViTPose default).
    Any other square count n² → n×n.
    """
    known = {196: (14, 14), 192: (16, 12)}
    if num_patches in known:
        return known[num_patches]
    side = round(num_patches**0.5)
    if side * side == num_patches:
        return side, side
    raise ConfigError(f"cannot infer the ViT patch grid for {num_patches} position embeddings")


@dataclass(frozen=True)
class BackboneConfig:
    """Which image backbone, and its size where it has one."""

    type: str = "resnet"
    vit: ViTConfig = field(default_factory=ViTConfig)

    def __post_init__(self) -> None:
        if self.type not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.type!r}; expected one of {', '.join(BACKBONES)}")

    @property
    def out_channels(self) -> int:
        return {"resnet": 2048, "hrnet": 720, "vit": self.vit.embed_dim}[self.type]

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input (height, width) in pixels."""
        if self.type != "vit":
            return 224, 224
        rows, cols = self.vit.grid()
        return rows * 16, cols * 16

    @property
    def num_cond_tokens(self) -> int:
        if self.type != "vit":
            return 49
        rows, cols = self.vit.grid()
        return rows * cols


@dataclass(frozen=True)
class CVQMAEConfig:
    """The image-conditioned masked transformer (checkpoint ``CVQMAE/mega_*``)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)

    @property
    def cond_dim(self) -> int:
        return self.backbone.out_channels

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "cvqmae", **asdict(self)}


@dataclass(frozen=True)
class VQMAEConfig:
    """The unconditional pre-trained masked transformer (checkpoint ``VQMAE/mega_pretrained``)."""

    transformer: TransformerConfig = field(default_factory=TransformerConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "vqmae", **asdict(self)}


def _pick(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def transformer_from_official(model: dict[str, Any]) -> TransformerConfig:
    """Read the official ``model:`` YAML section (extra fields such as ``masking`` are ignored)."""
    return TransformerConfig(**_pick(TransformerConfig, model))


def config_from_dict(data: dict[str, Any]) -> CVQMAEConfig | VQMAEConfig:
    """Inverse of ``to_dict`` (the ``config.json`` written beside built checkpoints)."""
    kind = data.get("kind")
    transformer = TransformerConfig(**data.get("transformer", {}))
    if kind == "vqmae":
        return VQMAEConfig(transformer=transformer)
    if kind == "cvqmae":
        bb = dict(data.get("backbone", {}))
        vit = ViTConfig(**bb.pop("vit", {}))
        return CVQMAEConfig(backbone=BackboneConfig(vit=vit, **bb), transformer=transformer)
    raise ConfigError(f"unknown model kind {kind!r} in configuration")


FULL_SIZE = TransformerConfig()

PRESETS: dict[str, CVQMAEConfig | VQMAEConfig] = {
    "mega_resnet": CVQMAEConfig(BackboneConfig("resnet"), FULL_SIZE),
    "mega_hrnet": CVQMAEConfig(BackboneConfig("hrnet"), FULL_SIZE),
    "mega_vit": CVQMAEConfig(BackboneConfig("vit"), FULL_SIZE),
    "mega_pretrained": VQMAEConfig(FULL_SIZE),
}


def with_vit_positions(config: CVQMAEConfig, num_positions: int) -> CVQMAEConfig:
    """Return ``config`` with the ViT ``pos_embed`` length replaced (read from a checkpoint)."""
    vit = replace(config.backbone.vit, num_positions=int(num_positions))
    return replace(config, backbone=replace(config.backbone, vit=vit))
