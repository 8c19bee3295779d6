"""Decoding token sequences: reveal schedules, samplers driven by a ``torch.Generator``, and scoring."""
