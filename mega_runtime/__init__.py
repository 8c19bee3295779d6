"""MEGA human mesh recovery runtime.

The public API is imported lazily so that ``import mega_runtime`` (and the CLI's
start-up) stays free of torch.
"""

__version__ = "0.1.0"
