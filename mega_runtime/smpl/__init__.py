"""SMPL fitting and skeleton helpers for user-supplied SMPL model files (never bundled)."""
