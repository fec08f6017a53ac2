"""Batch inference: OpenAI Batch API JSONL in and out, on a local vLLM or any OpenAI server."""
