"""Phase-locked speech-to-text → LLM evaluation: `wb.phased.submit(files, rubric=...)`.

Recordings are grouped into batches in arrival order. One batch at a time: an STT phase
(faster-whisper loaded, the whole batch transcribed, unloaded, memory checked), then an
evaluation phase (the LLM scores each transcript against the rubric as validated JSON),
then the next batch. Every student can ask where their recording is.
"""
