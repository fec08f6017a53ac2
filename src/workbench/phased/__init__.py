"""Phase-locked speech-to-text → LLM evaluation: `wb.phased.submit(files, rubric=...)`.

Recordings are grouped into batches in arrival order. One batch at a time: an STT phase
(faster-whisper loaded, the whole batch transcribed, unloaded, memory checked), then an
evaluation phase (the LLM scores each transcript against the rubric: validated JSON from an
instruction-tuned model or Gemini, token probabilities from a local base model — see
`phased.geval`), then the next batch. Every student can ask where their recording is
(`job.item(id)`); an unreadable upload fails alone, at once (`phased.intake`).
"""
