"""Fixed sizes of the official MEGA / Mesh-VQ-VAE models.

These numbers are properties of the released checkpoints and assets (SMPL topology,
dfaust2 connection matrices, ``mesh_vqvae_54``). They live here so that modules can
share them without importing torch.
"""

from __future__ import annotations

NUM_VERTICES = 6890
"""Vertices of an SMPL-topology body mesh (rows of ``template.ply``, input/output of the Mesh-VQ-VAE)."""

NUM_FACES = 13776
"""Triangles of the SMPL-topology mesh in ``template.ply``."""

NUM_TOKENS = 54
"""Mesh tokens per body: points of the Mesh-VQ-VAE latent (rows of ``_pool6.npy``)."""

CODEBOOK_SIZE = 512
"""Entries of the Mesh-VQ-VAE codebook (``vq_vae._embedding.weight`` rows)."""

TOKEN_DIM = 9
"""Channels of one latent token (``vq_vae._embedding.weight`` columns)."""

NUM_JOINTS = 24
"""Joints of the SMPL skeleton (pelvis first), as in a user-supplied SMPL model's ``kintree_table``."""

NUM_BODY_JOINTS = 23
"""SMPL joints below the pelvis: the rows of ``body_pose``."""

NUM_BETAS = 10
"""SMPL shape coefficients fitted per person."""

CHECKPOINT_CONFIG_FILE = "config.json"
"""Model sizes of non-official (e.g. seeded test) checkpoints, beside them in their folder; absent for the official."""
