"""Settings for `pytest --nbmake notebooks/` (CI), not used when you open the notebooks.

Each notebook reads its sizes and places from environment variables in its first cell.
Here they get small defaults (CI runs every notebook top to bottom in a few minutes), a
fresh store per test session, and the repository's model cache (`data/models`, where
`make demo` prepares the embedded demo model), because nbmake starts each kernel in this
folder and a relative `data/models` would prepare a second copy here. Anything already
set in the environment wins.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CI_DEFAULTS = {
    "WORKBENCH_ROOT": tempfile.mkdtemp(prefix="wb-notebooks-"),
    "WORKBENCH_MODELS": str(REPO / "data" / "models"),
    "HF_HUB_OFFLINE": "1",
    "WB_NB_ROWS": "12",          # 00, 01, 04: requests per job
    "WB_NB_LONG_ROWS": "24",     # 00: the job a user would cancel
    "WB_NB_MAX_TOKENS": "24",
    "WB_NB_STUDENTS": "2",       # 02 (one batch: one STT and one LLM phase)
    "WB_NB_BATCH_SIZE": "2",
    "WB_NB_MEDIA": "2",          # 03
    "WB_NB_PROMPTS": "2",
    "WB_NB_WAIT_S": "900",
}
for key, value in CI_DEFAULTS.items():
    os.environ.setdefault(key, value)
