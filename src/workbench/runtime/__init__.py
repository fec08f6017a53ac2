"""Worker loop, job context, kind registry, job handle, phases (lock, child engines, memory)."""
