"""The user's SMPL model file, loaded into ``smplx`` (an optional dependency; the file is licensed, never bundled)."""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mega_runtime.constants import NUM_BETAS, NUM_JOINTS
from mega_runtime.errors import SmplError
from mega_runtime.smpl.skeleton import PARENTS, SmplModelArrays, read_smpl_model

log = logging.getLogger(__name__)

SMPLX_HINT = "install the optional SMPL support: pip install --no-deps smplx==0.1.28 (or pip install -e '.[smpl]')"


@dataclass(frozen=True)
class SmplModel:
    """An SMPL model from the user's file: its arrays, the ``smplx`` layer built from them, float32 tensors."""

    arrays: SmplModelArrays
    layer: torch.nn.Module = field(repr=False)

    @property
    def path(self) -> Path:
        return self.arrays.path

    @torch.inference_mode()
    def forward(
        self, betas: np.ndarray, global_orient: np.ndarray, body_pose: np.ndarray, transl: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pose the model with ``smplx``: (B, 6890, 3) vertices and (B, 24, 3) joints, float32 metres.

        ``betas`` (10,) or (B, 10); ``global_orient`` (B, 3), ``body_pose`` (B, 23, 3) axis-angle; ``transl`` (B, 3).
        """
        from smplx.lbs import batch_rodrigues

        go = torch.as_tensor(np.asarray(global_orient, dtype=np.float32)).reshape(-1, 3)
        batch = go.shape[0]
        bp = torch.as_tensor(np.asarray(body_pose, dtype=np.float32)).reshape(batch * (NUM_JOINTS - 1), 3)
        b = torch.as_tensor(np.asarray(betas, dtype=np.float32)).reshape(-1, NUM_BETAS).expand(batch, -1)
        t = torch.zeros(batch, 3) if transl is None else torch.as_tensor(np.asarray(transl, np.float32)).reshape(-1, 3)
        out = self.layer(
            betas=b,
            global_orient=batch_rodrigues(go).reshape(batch, 1, 3, 3),
            body_pose=batch_rodrigues(bp).reshape(batch, NUM_JOINTS - 1, 3, 3),
            transl=t,
        )
        return out.vertices.numpy(), out.joints[:, :NUM_JOINTS].numpy()


def load_smpl_model(path: Path | str) -> SmplModel:
    """Load the user's SMPL model file (``.pkl`` or ``.npz``, see :func:`read_smpl_model`) into ``smplx``.

    Raises :class:`SmplError` (with the fix) when ``smplx`` is not installed or the file is missing or malformed.
    """
    try:
        import smplx
        from smplx.utils import Struct
    except ImportError as exc:
        raise SmplError(f"SMPL fitting needs the smplx package ({exc})", hint=SMPLX_HINT) from exc
    arrays = read_smpl_model(path)
    struct = Struct(
        v_template=arrays.v_template,
        shapedirs=arrays.shapedirs,
        posedirs=arrays.posedirs,
        J_regressor=arrays.J_regressor,
        weights=arrays.weights,
        kintree_table=np.stack([np.array(PARENTS), np.arange(NUM_JOINTS)]),
        f=arrays.faces,
    )
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):  # smplx prints a warning for every 10-beta model
        layer = smplx.SMPLLayer(model_path=str(arrays.path), data_struct=struct, num_betas=NUM_BETAS)
    if chatter.getvalue().strip():
        log.debug("smplx: %s", chatter.getvalue().strip())
    log.info("loaded SMPL model %s", arrays.path)
    return SmplModel(arrays=arrays, layer=layer.eval())
