"""Job kinds plug in here: a name, a runner the worker calls, and a results reader.

Each job package (batch, phased, grid) registers one `JobKind` when imported; tests
register their own kinds the same way, and `workbench worker --plugin MODULE` imports a
module that registers more before the worker starts.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from workbench.runtime.context import JobContext
    from workbench.store import JobRow, Store


@dataclass(frozen=True)
class JobKind:
    name: str
    run: Callable[[JobContext], None]
    results: Callable[[Store, JobRow], pd.DataFrame] | None = None


_KINDS: dict[str, JobKind] = {}
BUILTIN_MODULES = ("workbench.batch.kind", "workbench.phased.kind", "workbench.grid.kind")


def register(kind: JobKind) -> JobKind:
    _KINDS[kind.name] = kind
    return kind


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> None:
    """Import the built-in kinds that are installed, then any extra plugin modules."""
    extra = [m for m in os.environ.get("WORKBENCH_PLUGINS", "").split(",") if m]
    for mod in BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith(mod.rsplit(".", 1)[0]):
                raise
    for mod in [*modules, *extra]:
        importlib.import_module(mod)


def get(name: str) -> JobKind:
    if name not in _KINDS:
        load_plugins()
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"no job kind {name!r} registered (known: {sorted(_KINDS)})") from None


def names() -> list[str]:
    return sorted(_KINDS)


def describe() -> dict[str, Any]:
    return {k: v.run.__module__ for k, v in _KINDS.items()}
