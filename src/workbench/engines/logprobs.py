"""Token log-probabilities: one engine-neutral record, OpenAI's two output shapes, and scores.

Engines fill `Choice.logprobs` with `TokenLogprob` steps (vLLM in-process from its
`Logprob` dicts, the HTTP engine from a server's JSON); `batch/output.py` writes them in
OpenAI's shape for the request's endpoint. The slicing follows vLLM's own OpenAI server
(vllm/entrypoints/openai/*/serving.py) so a line reads the same whether it came from
`vllm serve` or from workbench: chat keeps the first `top_logprobs` entries of each step,
completions the first `logprobs + 1`, and -inf becomes -9999.0.

`expected_score` turns one step's top log-probabilities into a probability-weighted score
over label tokens (G-Eval): a base model's distribution over "1".."10" says more than the
one digit it happens to sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

FLOOR = -9999.0


class TopLogprob(BaseModel):
    token: str
    logprob: float = FLOOR
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    """One generated token, its log-probability and the alternatives the engine returned."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8", errors="replace"))


def _floor(x: float) -> float:
    return max(float(x), FLOOR)


def requested(endpoint: str, params: Mapping[str, Any]) -> tuple[int | None, int]:
    """(vLLM's SamplingParams.logprobs, alternatives kept per token) for an OpenAI body.

    Chat: `logprobs: true` + `top_logprobs: k` → k (0: only the chosen token's logprob).
    Completions: `logprobs: k` → k, and OpenAI's shape keeps k + 1 alternatives.
    """
    if endpoint == "chat":
        if not params.get("logprobs"):
            return None, 0
        k = int(params.get("top_logprobs") or 0)
        return k, k
    k = params.get("logprobs")
    if k is None or k is False:
        return None, 0
    return int(k), int(k) + 1


def from_vllm(token_ids: Sequence[int], steps: Sequence[Mapping[int, Any] | None] | None,
              n_top: int, decode: Any) -> list[TokenLogprob] | None:
    """vLLM's per-step `{token_id: Logprob}` dicts → steps keeping the first `n_top` entries.

    `decode(token_id)` names a token whose `decoded_token` vLLM left empty.
    """
    if steps is None:
        return None
    out: list[TokenLogprob] = []
    for i, tid in enumerate(token_ids):
        step = steps[i] if i < len(steps) else None
        if not step or step.get(tid) is None:
            tok = decode(tid)
            out.append(TokenLogprob(token=tok, bytes=_bytes(tok)))
            continue
        chosen = step[tid]
        tok = chosen.decoded_token if chosen.decoded_token is not None else decode(tid)
        top = []
        for j, (alt_id, lp) in enumerate(step.items()):
            if j >= n_top:
                break
            alt = lp.decoded_token if lp.decoded_token is not None else decode(alt_id)
            top.append(TopLogprob(token=alt, logprob=_floor(lp.logprob), bytes=_bytes(alt)))
        out.append(TokenLogprob(token=tok, logprob=_floor(chosen.logprob),
                                bytes=None if chosen.decoded_token is None else _bytes(tok),
                                top_logprobs=top))
    return out


def to_chat(steps: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """OpenAI chat shape: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}."""
    if steps is None:
        return None
    return {"content": [s.model_dump() for s in steps]}


def to_completion(steps: list[TokenLogprob] | None, text_offset: int = 0) -> dict[str, Any] | None:
    """OpenAI completions shape: {tokens, token_logprobs, top_logprobs, text_offset}."""
    if steps is None:
        return None
    offsets, pos = [], text_offset
    for s in steps:
        offsets.append(pos)
        pos += len(s.token)
    return {"text_offset": offsets,
            "token_logprobs": [s.logprob if s.top_logprobs else None for s in steps],
            "tokens": [s.token for s in steps],
            "top_logprobs": [{t.token: t.logprob for t in s.top_logprobs} if s.top_logprobs
                             else None for s in steps]}


def from_openai(logprobs: Any, endpoint: str) -> list[TokenLogprob] | None:
    """A server's `choices[].logprobs` JSON (either shape) → steps."""
    if not logprobs:
        return None
    if endpoint == "chat":
        return [TokenLogprob.model_validate(s) for s in logprobs.get("content") or []]
    tops = logprobs.get("top_logprobs") or []
    out = []
    for i, tok in enumerate(logprobs.get("tokens") or []):
        lp = (logprobs.get("token_logprobs") or [])[i]
        alts = tops[i] if i < len(tops) and tops[i] else {}
        out.append(TokenLogprob(token=tok, logprob=FLOOR if lp is None else lp, bytes=_bytes(tok),
                                top_logprobs=[TopLogprob(token=t, logprob=v, bytes=_bytes(t))
                                              for t, v in alts.items()]))
    return out


class Score(BaseModel):
    """A probability-weighted score and how much probability its labels held."""

    value: float | None
    #: probability mass of the label tokens among the returned alternatives (0-1)
    mass: float
    #: normalised probability of each label that appeared
    probs: dict[str, float]


def expected_score(top: Iterable[TopLogprob | tuple[str, float]],
                   labels: Mapping[str, float], *, case: bool = False) -> Score:
    """Σ value·p over the label tokens among `top`, renormalised over those labels.

    Tokens are matched after stripping spaces (" 7" and "7" are one label); several
    tokens mapping to one label add up. `value` is None when no label token appeared.
    """
    norm = (lambda s: s.strip()) if case else (lambda s: s.strip().lower())
    wanted = {norm(k): k for k in labels}
    mass: dict[str, float] = {}
    for t in top:
        tok, lp = (t.token, t.logprob) if isinstance(t, TopLogprob) else t
        key = wanted.get(norm(tok))
        if key is not None and lp > FLOOR:
            mass[key] = mass.get(key, 0.0) + math.exp(lp)
    total = sum(mass.values())
    if total <= 0:
        return Score(value=None, mass=0.0, probs={})
    probs = {k: v / total for k, v in mass.items()}
    return Score(value=sum(labels[k] * p for k, p in probs.items()), mass=min(total, 1.0),
                 probs=probs)


#: after a "1", these mean the score was 1 (the rest of the line ended): whitespace or punctuation
_ENDS = frozenset({"/", ".", ",", ")"})


def digits_score(first: Iterable[TopLogprob | tuple[str, float]], lo: int, hi: int,
                 after_one: Iterable[TopLogprob | tuple[str, float]] | None = None) -> Score:
    """Expected integer score on lo..hi (hi ≤ 10) from a tokenizer that writes digits alone.

    Gemma (and most SentencePiece vocabularies) spell "10" as "1", "0": the first token's
    "1" means 1 *or* 10. For hi == 10 pass `after_one`, the alternatives for the token after
    the prompt + "1": P(10) = P("1")·q and P(1) = P("1")·(1 − q), q = P("0") / (P("0") + P(end)).
    """
    if hi > 10 or lo < 0 or lo > hi:
        raise ValueError("digits_score reads a scale within 0..10")
    labels = {str(k): float(k) for k in range(lo, min(hi, 9) + 1)}
    if hi < 10:
        return expected_score(first, labels)
    if after_one is None:
        raise ValueError("a scale up to 10 needs the alternatives after '1' (after_one)")
    pairs = [(t.token, t.logprob) if isinstance(t, TopLogprob) else t for t in first]
    p = {k: sum(math.exp(lp) for tok, lp in pairs if tok.strip() == k and lp > FLOOR)
         for k in labels}
    nxt = [(t.token, t.logprob) if isinstance(t, TopLogprob) else t for t in after_one]
    zero = sum(math.exp(lp) for tok, lp in nxt if tok.strip() == "0")
    end = sum(math.exp(lp) for tok, lp in nxt if not tok.strip() or tok.strip() in _ENDS)
    q = zero / (zero + end) if zero + end > 0 else 0.0
    p1 = p.get("1", 0.0)
    p["10"] = p1 * q
    if lo <= 1:
        p["1"] = p1 * (1 - q)
    total = sum(p.values())
    if total <= 0:
        return Score(value=None, mass=0.0, probs={})
    probs = {k: v / total for k, v in p.items() if v > 0}
    return Score(value=sum(float(k) * v for k, v in probs.items()), mass=min(total, 1.0),
                 probs=probs)


def top_of(choice_logprobs: list[TokenLogprob] | None, step: int = 0) -> list[TopLogprob]:
    """The alternatives of one generated token (the first by default); [] when absent."""
    if not choice_logprobs or step >= len(choice_logprobs):
        return []
    return choice_logprobs[step].top_logprobs
