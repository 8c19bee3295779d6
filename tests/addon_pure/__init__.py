"""Tests of the add-on modules that run in plain CPython (no bpy)."""
