"""One adapter per real backend, behind small protocols. Engines know nothing about jobs."""
