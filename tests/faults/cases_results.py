"""Fault cases of the result readers: ``fit-smpl`` (the runtime's reader) and the add-on's batch (its own reader,
and collisions between its report, its export and its input)."""

from __future__ import annotations

import pytest

from tests.faults import builders as b
from tests.faults.harness import BATCH, FIT, IMPORT, Case
from tests.faults.setups import both, deep_result, result, sparse_json, video, write

CASES: list[Case] = [
    # --- fit-smpl: the runtime's result reader -----------------------------------------------------------------------
    Case("fit-smpl-json-400k-deep", FIT, 2, "nests deeper than the result limit", deep_result),
    Case("fit-smpl-npy-header-147-PiB", FIT, 2, "would need more than", lambda tmp: b.result_with_huge_header(tmp)),
    Case(
        "fit-smpl-npy-header-differs-from-json",
        FIT,
        2,
        "the .json declares",
        lambda tmp: b.result_with_huge_header(tmp, declare_in_json=False),
    ),
    Case("fit-smpl-zip-bomb", FIT, 2, "would need more than", None, needs=frozenset({"bomb"})),
    Case("fit-smpl-nan-cam-t", FIT, 2, "NaN or infinite", result(b.nan_cam_t)),
    Case("fit-smpl-inf-vertices", FIT, 2, "NaN or infinite", result(b.inf_vertices)),
    Case("fit-smpl-nan-literal-in-json", FIT, 2, "NaN is not allowed", lambda tmp: b.nan_literal_json(tmp / "r.json")),
    Case(
        "fit-smpl-pickle-in-npz",
        FIT,
        2,
        "holds Python objects",
        lambda tmp: b.result_with_pickle(tmp),
        absent=("PWNED", "r.smpl.json"),
    ),
    Case("fit-smpl-json-is-a-list", FIT, 2, "is not a MEGA result", write("r.json", "[1]", result())),
    Case("fit-smpl-json-too-large", FIT, 2, "more than the result limit", sparse_json),
    Case(
        "fit-smpl-out-is-its-input",
        (*FIT, "--out", "{tmp}/r"),
        2,
        "not overwriting existing",
        result(),
        unchanged=("r.json", "r.npz"),
    ),
    # --- the add-on's batch: collisions, then its own reader ---------------------------------------------------------
    Case(
        "batch-report-is-the-export-with-overwrite",
        (*IMPORT, "--report", "{tmp}/x.blend", "--overwrite"),
        1,
        "name the same file",
        write("x.blend", "user data", result()),
        unchanged=("x.blend",),
    ),
    Case(
        "batch-report-is-the-input-json",
        (*IMPORT, "--report", "{tmp}/r.json", "--overwrite"),
        1,
        "is the result being read",
        result(),
        unchanged=("r.json", "r.npz"),
        absent=("x.blend",),
    ),
    Case(
        "batch-report-is-the-input-npz",
        (*IMPORT, "--report", "{tmp}/r.npz", "--overwrite"),
        1,
        "is the result being read",
        result(),
        unchanged=("r.json", "r.npz"),
    ),
    Case(
        "batch-export-links-to-the-input",
        (*BATCH, "import", "{tmp}/r.json", "--export", "{tmp}/link.blend", "--overwrite"),
        1,
        "is the result being read",
        both(result(), lambda tmp: (tmp / "link.blend").symlink_to(tmp / "r.npz")),
        unchanged=("r.npz",),
    ),
    Case("batch-nan-cam-t", IMPORT, 1, "non-finite value", result(b.nan_cam_t), absent=("x.blend",)),
    Case("batch-json-400k-deep", IMPORT, 1, "nests deeper than the limit", deep_result, absent=("x.blend",)),
    Case("batch-npy-header-147-PiB", IMPORT, 1, "would need more than", lambda tmp: b.result_with_huge_header(tmp)),
    Case("batch-zip-bomb", IMPORT, 1, "would need more than", None, needs=frozenset({"bomb"}), absent=("x.blend",)),
    Case(
        "batch-pickle-in-npz",
        IMPORT,
        1,
        "holds Python objects",
        lambda tmp: b.result_with_pickle(tmp),
        absent=("PWNED",),
    ),
    Case("batch-nan-literal-in-json", IMPORT, 1, "NaN is not allowed", lambda tmp: b.nan_literal_json(tmp / "r.json")),
    Case("batch-json-too-large", IMPORT, 1, "more than the limit", sparse_json, absent=("x.blend",)),
    Case(
        "batch-export-exists",
        IMPORT,
        1,
        "already exists",
        write("x.blend", "user data", result()),
        unchanged=("x.blend",),
    ),
    Case(
        "batch-unknown-export-format",
        (*BATCH, "import", "{tmp}/r.json", "--export", "{tmp}/x.txt"),
        1,
        "cannot export",
        result(),
    ),
    Case("batch-negative-hypothesis", (*IMPORT, "--hypothesis=-1"), 1, "--hypothesis must be 0 or more", result()),
    Case(
        "batch-reconstruct-frames-step-0",
        (*BATCH, "reconstruct", "{tmp}/v.avi", "--export", "{tmp}/x.blend", "--frames", "0:4:0"),
        1,
        "selects no frame",
        video,
        absent=("x.blend", "x results"),
    ),
    Case(
        "batch-reconstruct-missing-media",
        (*BATCH, "reconstruct", "{tmp}/nope.mp4", "--export", "{tmp}/x.blend"),
        1,
        "no such file",
        absent=("x.blend",),
    ),
    Case(
        "batch-overwrite-keeps-blenders-backup",
        (*IMPORT, "--overwrite"),
        0,
        "wrote",
        write("x.blend", "user data", result()),
        exists=("x.blend", "x.blend1"),
        extra=lambda tmp, out: (
            None
            if (tmp / "x.blend1").read_text() == "user data"
            else pytest.fail("x.blend1 does not hold the user's old file")
        ),
    ),
]
