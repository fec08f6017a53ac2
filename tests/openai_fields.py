"""A corpus of batch lines, one per body field OpenAI accepts (and vLLM's extras).

Used by the format tests (every line validates; the fields a local engine cannot honour
are noted) and by the server's vLLM test (every line runs: mapped fields change the
request, noted ones are accepted without effect, unsupported semantics are that line's
error).
"""

from __future__ import annotations

from typing import Any

CHAT, CMPL = "/v1/chat/completions", "/v1/completions"
TOOL = {"type": "function", "function": {"name": "score", "description": "score a profile",
                                         "parameters": {"type": "object", "properties": {
                                             "score": {"type": "integer"}}}}}
#: field → extra body (chat unless the name starts with "cmpl_")
FIELDS: dict[str, dict[str, Any]] = {
    "logit_bias": {"logit_bias": {"5": 100}},
    "logprobs": {"logprobs": True, "top_logprobs": 3},
    "tools_none": {"tools": [TOOL], "tool_choice": "none"},
    "tools_auto": {"tools": [TOOL]},
    "tools_named": {"tools": [TOOL], "tool_choice": {"type": "function",
                                                     "function": {"name": "score"}}},
    "functions": {"functions": [TOOL["function"]], "function_call": "none"},
    "parallel_tool_calls": {"tools": [TOOL], "tool_choice": "none", "parallel_tool_calls": False},
    "stream_options": {"stream_options": {"include_usage": True}},
    "reasoning_effort": {"reasoning_effort": "low"},
    "service_tier": {"service_tier": "flex"},
    "prediction": {"prediction": {"type": "content", "content": "Candidate"}},
    "modalities": {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
    "verbosity": {"verbosity": "low"},
    "web_search_options": {"web_search_options": {}},
    "prompt_cache_key": {"prompt_cache_key": "k1"},
    "safety_identifier": {"safety_identifier": "user-1"},
    "store_metadata_user": {"store": True, "metadata": {"a": "b"}, "user": "u1"},
    "n_seed_penalties": {"n": 2, "seed": 3, "presence_penalty": 0.5, "frequency_penalty": 0.5,
                         "temperature": 0.7, "top_p": 0.9},
    "max_completion_tokens": {"max_completion_tokens": 3},
    "stop": {"stop": ["\n", "."]},
    "vllm_extras": {"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "min_tokens": 2,
                    "stop_token_ids": [2], "bad_words": ["zzz"], "skip_special_tokens": True,
                    "include_stop_str_in_output": False},
    "response_format": {"response_format": {"type": "json_object"}},
    "stream_false": {"stream": False},
    "cmpl_echo_best_of": {"echo": False, "best_of": 1},
    "cmpl_suffix": {"suffix": " end"},
    "cmpl_logit_bias": {"logit_bias": {"7": -100}},
    "cmpl_logprobs": {"logprobs": 2},
}
#: the fields the report notes as "no effect on a local engine"
NOTED = {"stream_options", "service_tier", "prediction", "modalities", "audio", "verbosity",
         "web_search_options", "prompt_cache_key", "safety_identifier", "store", "metadata",
         "user", "parallel_tool_calls", "best_of"}
#: lines whose semantics the offline engine cannot serve: that line's 400 error (vLLM's server
#: without a tool parser answers tool_choice auto/named the same way; suffix needs FIM)
LINE_ERRORS = {"tools_auto", "tools_named", "cmpl_suffix"}


def field_lines(max_tokens: int = 4) -> list[dict[str, Any]]:
    out = []
    for name, extra in FIELDS.items():
        cmpl = name.startswith("cmpl_")
        body: dict[str, Any] = ({"prompt": "Candidate profile: data engineer"} if cmpl else
                                {"messages": [{"role": "user", "content": "Candidate profile"}]})
        body.update(max_tokens=max_tokens, temperature=0)
        body.update(extra)
        out.append({"custom_id": name, "method": "POST", "url": CMPL if cmpl else CHAT,
                    "body": body})
    return out
