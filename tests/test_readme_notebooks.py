"""The README's pointers into the repository hold: the notebook it says to open first and the
others it names exist, and every image it shows is a real PNG in the repository (the dashboard
screenshot under docs/, taken by tests/test_browser.py)."""

from __future__ import annotations

import re
import struct

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_readme_says_which_notebook_to_open_first() -> None:
    first = re.search(r"Open `(\d\d_\w+\.ipynb)` first", README)
    assert first is not None, "the README does not say which notebook to open first"
    assert first.group(1) == "00_quickstart.ipynb"
    named = set(re.findall(r"`(\d\d_\w+?)(?:\.ipynb)?`", README))
    on_disk = {p.stem for p in (REPO / "notebooks").glob("*.ipynb")}
    assert named and named <= on_disk, named - on_disk
    assert on_disk <= named, f"notebooks the README does not name: {on_disk - named}"


def test_readme_images_are_pngs_in_the_repository() -> None:
    images = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", README)
    assert "docs/dashboard.png" in images
    for rel in images:
        data = (REPO / rel).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{rel} is not a PNG"
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
        assert 400 <= width <= 2000 and 100 <= height <= 2000, (rel, width, height)
