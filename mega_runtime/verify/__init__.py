"""Proof against the official code: rebuild seeded reference weights and compare with the fixtures."""
