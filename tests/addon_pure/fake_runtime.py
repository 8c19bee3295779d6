"""A scripted stand-in for ``mega-runtime serve`` used by the transport tests (not a runtime: no model).

It speaks just enough of docs/protocol.md to drive the client's code paths the real runtime cannot be made to
take on demand: exiting before the handshake, a newer protocol, dying in the middle of a job, noise on stdout,
ignoring ``shutdown`` and the end of its input (``ignore-shutdown``), and ignoring SIGTERM as well (``stubborn``).
The real runtime is exercised by tests/contract/test_live_link.py and tests/runtime/test_serve.py.

Usage: python fake_runtime.py MODE serve [args…]
MODE: normal, exit-early, protocol-2, die-mid-job, noise, ignore-shutdown, stubborn
"""

from __future__ import annotations

import base64
import io
import json
import signal
import sys
import threading

import numpy as np


def reply(**fields: object) -> None:
    sys.stdout.write(json.dumps({"v": 1, **fields}) + "\n")
    sys.stdout.flush()


def main() -> int:
    mode = sys.argv[1]
    if mode == "exit-early":
        sys.stderr.write("Traceback (most recent call last):\nModuleNotFoundError: No module named 'torch'\n")
        return 3
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "noise":
        sys.stdout.write("a library printed this\n")
        sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        op, rid = request["op"], request["id"]
        if op == "hello":
            protocol = 2 if mode == "protocol-2" else 1
            reply(
                type="hello", id=rid, protocol=protocol, runtime_version="9.9.9", devices=["cpu"], models=[], missing=[]
            )
        elif op == "infer":
            reply(type="accepted", id=rid, queued=0)
            reply(type="progress", id=rid, stage="model", done=1, total=2, message="people")
            if mode == "die-mid-job":
                sys.stderr.write("Killed while reconstructing\n")
                sys.stderr.flush()
                return 9
            meta = {"schema": "mega-result", "version": "1.0", "source": {"kind": "image"}}
            buffer = io.BytesIO()
            np.savez(buffer, faces=np.zeros((1, 3), np.int32))
            if request.get("return") == "inline":
                npz = base64.b64encode(buffer.getvalue()).decode()
                reply(
                    type="result", id=rid, cancelled=False, num_frames=1, num_people=1, warnings=[], meta=meta, npz=npz
                )
            else:
                reply(
                    type="result",
                    id=rid,
                    cancelled=False,
                    num_frames=1,
                    num_people=1,
                    warnings=["w"],
                    json_path="/r/a.json",
                    npz_path="/r/a.npz",
                )
        elif op == "cancel":
            reply(type="ack", id=rid)
        elif op == "shutdown":
            reply(type="ack", id=rid)
            if mode not in ("ignore-shutdown", "stubborn"):
                return 0
    if mode in ("ignore-shutdown", "stubborn"):
        threading.Event().wait()  # hang on after the end of input, until a signal ends the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
