"""docs/result-format.md against the writer: every array and every key it writes is documented, and nothing else."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mega_runtime.constants import NUM_VERTICES
from mega_runtime.io.result import VERSION, write_result
from mega_runtime.io.result_schema import ARRAYS, DETECTION_ARRAYS, OPTIONAL_ARRAYS, VERSION_HISTORY
from tests.runtime.test_result_tracking import make_result

DOC = (Path(__file__).resolve().parents[2] / "docs" / "result-format.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `([a-z0-9_]+)` \| ([a-z0-9]+) \| (\([^)]*\)) \| (\d+\.\d+) \|", re.M)
FIELD_ROW = re.compile(r"^\| (`[^|]+`) \| (\d+\.\d+) \|", re.M)


def shape_text(shape: tuple[str | int, ...]) -> str:
    dims = ["V" if d == NUM_VERTICES else str(d) for d in shape]
    return "(" + ", ".join(dims) + (",)" if len(dims) == 1 else ")")


def test_the_document_is_of_the_version_the_writer_writes():
    assert DOC.splitlines()[0] == f"# Result format (version {VERSION})"
    assert list(VERSION_HISTORY)[-1] == VERSION
    for version in VERSION_HISTORY:
        assert re.search(rf"^\| {re.escape(version)} \|", DOC, re.M), f"version {version} is not in the table"


def test_every_array_the_writer_knows_is_documented_with_its_dtype_shape_and_version():
    documented = {name: (dtype, shape, since) for name, dtype, shape, since in ROW.findall(DOC)}
    known = {**ARRAYS, **OPTIONAL_ARRAYS}
    assert set(documented) == set(known), set(documented) ^ set(known)
    for name, (dtype, shape) in known.items():
        doc_dtype, doc_shape, since = documented[name]
        assert (doc_dtype, doc_shape) == (dtype, shape_text(shape)), name
        assert since == ("1.0" if name in ARRAYS else "1.2" if name in DETECTION_ARRAYS else "1.1"), name
        assert since in VERSION_HISTORY


def test_every_key_the_writer_adds_is_in_the_json_fields_table(tmp_path):
    json_path, _ = write_result(make_result(), tmp_path / "r")
    written = set(json.loads(json_path.read_text())) - {"runtime_version"}  # make_result's own meta
    documented = {key for cell, _ in FIELD_ROW.findall(DOC) for key in re.findall(r"`([a-z0-9_]+)`", cell)}
    assert written <= documented, written - documented
