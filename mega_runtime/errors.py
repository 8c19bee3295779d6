"""Errors raised by the runtime.

Every error carries a stable ``code`` (used by the CLI exit path and, later, the
protocol) and an optional ``hint`` that tells the user how to fix the problem.
This module imports nothing heavy, so the CLI can use it at start-up.
"""

from __future__ import annotations


class MegaError(Exception):
    """Base class for every error the runtime reports to a user."""

    code = "mega_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  fix: {self.hint}"
        return self.message


class CheckpointError(MegaError):
    """A checkpoint file is missing, unreadable, unsafe or does not fit the model."""

    code = "checkpoint_invalid"


class AssetError(MegaError):
    """A required asset (template mesh, connection matrices) is missing or malformed."""

    code = "asset_invalid"


class ConfigError(MegaError):
    """A model or sampling configuration is inconsistent."""

    code = "config_invalid"


class FixtureError(MegaError):
    """A reference fixture folder is incomplete or inconsistent."""

    code = "fixture_invalid"


class WeightsError(MegaError):
    """A model file or asset is missing, could not be downloaded, or does not match its published hash."""

    code = "weights_unavailable"


class DetectorError(MegaError):
    """A person detector cannot run: its package or model files are missing or unusable."""

    code = "detector_unavailable"


class DetectionInputError(MegaError):
    """An image or caller-given boxes handed to a person detector are malformed."""

    code = "detection_input_invalid"


class SmplError(MegaError):
    """An SMPL body model cannot be used: ``smplx`` is missing, or the user's model file is missing or malformed."""

    code = "smpl_invalid"


class TrainingError(MegaError):
    """A training batch, configuration or checkpoint handed to the trainers is malformed."""

    code = "training_invalid"
