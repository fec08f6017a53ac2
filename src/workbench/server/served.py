"""The models a server serves, by name: `workbench serve --model NAME=PATH_OR_HF_ID ...`.

Batch lines pick one with `body.model`; the batch object and every output line carry the
name, never the folder path. A bare value (no `NAME=`) is named after its last path part
(`/models/tiny-llama` → `tiny-llama`, `google/gemma-3-4b-it` → `gemma-3-4b-it`,
`embedded:gemma-3-270m` → `gemma-3-270m`). The first model is the default for lines that
name none. No model given: $WORKBENCH_MODEL, else the embedded demo model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from workbench.config import default_model

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")


def name_for(model: str) -> str:
    """The name a bare model folder / id is served under."""
    tail = re.split(r"[/\\:]", model.rstrip("/\\"))[-1]
    return tail if NAME.fullmatch(tail) else "default"


def parse_model_arg(value: str) -> tuple[str, str]:
    """"NAME=PATH_OR_ID" → (NAME, PATH_OR_ID); a bare "PATH" → (name_for(PATH), PATH)."""
    name, sep, model = value.partition("=")
    if not sep:
        return name_for(value), value
    if not NAME.fullmatch(name) or not model:
        raise ValueError(f"--model {value!r}: expected NAME=PATH_OR_HF_ID (NAME: letters, "
                         "digits and . _ - : / @ +, up to 200 characters)")
    return name, model


class Served:
    """name → model (a folder, an id, or engine arguments with a `model` key)."""

    def __init__(self, models: Mapping[str, str | dict[str, Any]] | Sequence[str] | None = None,
                 model: str | None = None) -> None:
        pairs: list[tuple[str, str | dict[str, Any]]]
        if isinstance(models, Mapping):
            pairs = list(models.items())
        elif models:
            pairs = [parse_model_arg(m) for m in models]
        else:
            pairs = [parse_model_arg(model or default_model())]
        self.models: dict[str, str | dict[str, Any]] = {}
        for name, m in pairs:
            if name in self.models:
                raise ValueError(f"model name {name!r} is given twice")
            self.models[name] = m
        self.default = next(iter(self.models))

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def __contains__(self, name: object) -> bool:
        return name in self.models
