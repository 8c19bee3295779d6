"""Fault cases of ``generate`` and ``serve``: refused options, the serve protocol (malformed, oversized or
out-of-range requests), SIGTERM and SIGINT, and serve and infer writers sharing one output name."""

from __future__ import annotations

import signal

from tests.faults.drivers import signal_serve, sigterm_during_video, sigterm_video_kept, two_writers
from tests.faults.harness import MODEL_TIMEOUT_S, NEEDS_CK, RT, Case
from tests.faults.setups import clip, photo

SERVE_END = '{"v": 1, "id": "end", "op": "shutdown"}\n'


def serve_line(payload: str, id_: str = "a") -> str:
    return '{"v": 1, "id": "' + id_ + '", "op": "infer", "source": {"path": "{tmp}/p.png"}' + payload + "}\n"


def serve_case(id_: str, line: str, message: str, args: tuple[str, ...] = ()) -> Case:
    # {tmp} in the request is filled in; braces of the JSON itself are doubled for str.format
    text = line.replace("{", "{{").replace("}", "}}").replace("{{tmp}}", "{tmp}")
    return Case(
        id_,
        (*RT, "serve", *args),
        0,
        message,
        setup=photo,
        stdin=text + SERVE_END.replace("{", "{{").replace("}", "}}"),
    )


CASES: list[Case] = [
    # --- generate and serve options ----------------------------------------------------------------------------------
    Case("generate-steps-0", (*RT, "generate", "--out", "{tmp}/o", "--steps", "0"), 2, "use 1 … 1000"),
    Case("generate-count-0", (*RT, "generate", "--out", "{tmp}/o", "--count", "0"), 2, "use 1 … 1024"),
    Case("generate-count-1e9", (*RT, "generate", "--out", "{tmp}/o", "--count", "1000000000"), 2, "use 1 … 1024"),
    Case("generate-temperature-nan", (*RT, "generate", "--out", "{tmp}/o", "--temperature", "nan"), 2, "finite number"),
    Case(
        "generate-name-with-folders",
        (*RT, "generate", "--out", "{tmp}/o", "--name", "../x"),
        2,
        "not a plain file name",
        absent=("x.json",),
    ),
    Case(
        "serve-checkpoint-every-nan", (*RT, "serve", "--checkpoint-every-s", "nan"), 2, "--checkpoint-every-s must be"
    ),
    # --- serve: the protocol ----------------------------------------------------------------------------------------
    serve_case("serve-malformed-line", "{not json\n", "bad_json"),
    serve_case("serve-temperature-nan", serve_line(', "temperature": NaN'), "'temperature' must be a number"),
    serve_case("serve-seed-2**70", serve_line(f', "seed": {2**70}'), "0 and \\u2264 4294967295"),
    serve_case("serve-hypotheses-100000", serve_line(', "hypotheses": 100000'), "1 and \\u2264 128"),
    serve_case("serve-frames-select-nothing", serve_line(', "frames": {"start": 10, "stop": 5}'), "selects no frame"),
    serve_case(
        "serve-temporal-beta-infinity", serve_line(', "temporal": {"beta": Infinity}'), "'temporal.beta' must be"
    ),
    serve_case("serve-boxes-nan", serve_line(', "boxes": [[NaN, 0, 10, 10]]'), "boxes"),
    serve_case("serve-temporal-zero-cutoff", serve_line(', "temporal": {"min_cutoff": 0}'), "must be a number > 0"),
    serve_case("serve-request-nested-200k-deep", "[" * 200_000 + "]" * 200_000 + "\n", "nests too deeply"),
    serve_case(
        "serve-request-over-the-limit",
        serve_line(', "pad": "' + "x" * 4000 + '"'),
        "longer than the limit",
        ("--max-message-bytes", "2048"),
    ),
    serve_case("serve-request-not-an-object", "[1, 2]\n", "not a JSON object"),
    serve_case(
        "serve-inline-not-base64",
        '{"v": 1, "id": "a", "op": "infer", "source": {"data": "%%%", "name": "a.png"}}\n',
        "base64",
    ),
    Case(
        "serve-sigterm-during-a-video-keeps-its-frames",
        (*RT, "serve", "--checkpoint-dir", "{ck}", "--assets-dir", "{assets}"),
        0,
        "shutting down",
        clip,
        exists=("out/clip.json", "out/clip.npz"),
        needs=NEEDS_CK,
        driver=sigterm_during_video,
        timeout_s=MODEL_TIMEOUT_S,
        extra=sigterm_video_kept,
    ),
    Case("serve-sigterm-stops-like-shutdown", (*RT, "serve"), 0, "shutting down", driver=signal_serve(signal.SIGTERM)),
    Case("serve-sigint-stops-like-shutdown", (*RT, "serve"), 0, "shutting down", driver=signal_serve(signal.SIGINT)),
    Case(
        "two-serve-writers-and-an-infer-writer-share-a-name", ("{py}",), 0, "pairs", driver=two_writers, timeout_s=120
    ),
]
