"""Training the three MEGA networks: batches, losses, the LR schedule, masking and one optimisation step each.

Layer 4 (see docs/architecture.md and docs/training.md). ``official`` mode reproduces the released trainers
quirk for quirk; ``default`` mode fixes the clear bugs, each listed in docs/training.md.
"""
