"""Command-line entry points: ``mega-runtime`` and its sub-commands (infer, generate, serve, verify, weights,
fit-smpl). Start-up modules import no torch at module level."""
