"""OpenAI-compatible Batch API over the workbench store (`workbench serve`, port 4080).

Apps upload a JSONL file (`POST /v1/files`), create a batch from it (`POST /v1/batches`),
poll it and download the output file, exactly as with OpenAI's Batch API, while the
batch runs as an ordinary workbench job: notebooks see it in the dashboard, and jobs
submitted from notebooks are listed here. Models are served by name (`served`); the
jobs API (`jobs`, `routes_jobs`) covers every kind: grids and phased jobs too.
"""

from workbench.server.app import create_app, serve

__all__ = ["create_app", "serve"]
