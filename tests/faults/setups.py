"""Set-ups of the fault catalogue's cases: each writes what its case needs into the case's folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mega_runtime import defaults
from tests.faults import builders as b


def photo(tmp: Path) -> None:
    b.photo(tmp / "p.png")


def video(tmp: Path) -> None:
    b.small_video(tmp / "v.avi", frames=4)


def write(name: str, text: str, then: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        if then is not None:
            then(tmp)
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return setup


def result(tamper=None, name: str = "r") -> Callable[[Path], None]:
    return lambda tmp: b.result(tmp, name, tamper)


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for one in setups:
            one(tmp)

    return setup


def deep_result(tmp: Path) -> None:
    b.result(tmp)
    b.deep_json(tmp / "r.json")


def sparse_json(tmp: Path) -> None:
    b.result(tmp)
    with (tmp / "r.json").open("r+b") as handle:
        handle.truncate(defaults.MAX_RESULT_JSON_BYTES + 1)


def huge_pngs(tmp: Path) -> None:
    b.png_header_only(tmp / "huge.png", 30000, 30000)
    photo(tmp)


def same_stems(tmp: Path) -> None:
    for folder in ("a", "c"):
        (tmp / folder).mkdir()
        b.photo(tmp / folder / "p.png")


def unreadable(tmp: Path) -> None:
    photo(tmp)
    (tmp / "p.png").chmod(0)


def two_photos(tmp: Path) -> None:
    photo(tmp)
    b.photo(tmp / "q.png")


def clip(tmp: Path) -> None:
    """A 120-frame video of a real photo (../shared, read only) scrolling sideways, an eighth of its size."""
    import cv2
    import numpy as np

    from tests.conftest import ASSETS_DIR

    image = cv2.imread(str(ASSETS_DIR / "images" / "pexels-polina-tankilevitch-6739044.jpg"))
    if image is None:
        pytest.skip(f"{ASSETS_DIR / 'images'} is absent")
    small = cv2.resize(image, (image.shape[1] // 8, image.shape[0] // 8))
    writer = cv2.VideoWriter(str(tmp / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, small.shape[1::-1])
    for i in range(120):
        writer.write(np.roll(small, i, axis=1))
    writer.release()
