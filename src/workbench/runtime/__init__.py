"""Worker loop, job context, kind registry, phase lock."""
