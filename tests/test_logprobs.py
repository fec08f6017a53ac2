"""Token log-probabilities: request mapping, OpenAI shapes, and the expected score."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from workbench.batch.format import check_line
from workbench.engines import logprobs as lp


@dataclass
class FakeLogprob:  # the shape of vllm.logprobs.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def test_requested_follows_openai_per_endpoint() -> None:
    assert lp.requested("chat", {}) == (None, 0)
    assert lp.requested("chat", {"logprobs": True}) == (0, 0)
    assert lp.requested("chat", {"logprobs": True, "top_logprobs": 5}) == (5, 5)
    assert lp.requested("chat", {"logprobs": False, "top_logprobs": 5}) == (None, 0)
    assert lp.requested("completion", {"logprobs": 3}) == (3, 4)
    assert lp.requested("completion", {"logprobs": 0}) == (0, 1)
    assert lp.requested("completion", {}) == (None, 0)


def test_from_vllm_keeps_first_n_and_decodes_missing_tokens() -> None:
    steps = [{7: FakeLogprob(-0.1, 1, " yes"), 8: FakeLogprob(-2.5, 2, " no"),
              9: FakeLogprob(float("-inf"), 3, None)},
             None]
    out = lp.from_vllm([7, 4], steps, 3, decode=lambda t: f"<{t}>")
    assert out is not None and [s.token for s in out] == [" yes", "<4>"]
    assert [t.token for t in out[0].top_logprobs] == [" yes", " no", "<9>"]
    assert out[0].top_logprobs[2].logprob == lp.FLOOR  # -inf → -9999.0 like vLLM's server
    assert out[1].top_logprobs == [] and out[1].logprob == lp.FLOOR
    chat = lp.to_chat(out)
    assert chat is not None and chat["content"][0]["bytes"] == list(b" yes")
    cmpl = lp.to_completion(out)
    assert cmpl == {"text_offset": [0, 4], "token_logprobs": [-0.1, None],
                    "tokens": [" yes", "<4>"],
                    "top_logprobs": [{" yes": -0.1, " no": -2.5, "<9>": lp.FLOOR}, None]}
    assert lp.from_vllm([1], None, 3, decode=str) is None


def test_from_openai_reads_both_shapes_back() -> None:
    steps = lp.from_vllm([7], [{7: FakeLogprob(-0.1, 1, "a"), 8: FakeLogprob(-1.0, 2, "b")}], 2,
                         decode=str)
    again = lp.from_openai(lp.to_chat(steps), "chat")
    assert again == steps
    back = lp.from_openai(lp.to_completion(steps), "completion")
    assert back is not None and [(t.token, t.logprob) for t in back[0].top_logprobs] == [
        ("a", -0.1), ("b", -1.0)]
    assert lp.from_openai(None, "chat") is None


def test_expected_score_weights_labels_and_ignores_other_tokens() -> None:
    top = [(" 8", math.log(0.5)), ("7", math.log(0.25)), (" the", math.log(0.2)),
           ("8", math.log(0.05))]
    s = lp.expected_score(top, {str(k): k for k in range(1, 11)})
    # 8 holds 0.55, 7 holds 0.25 of the 0.8 that are labels
    assert s.value == pytest.approx((8 * 0.55 + 7 * 0.25) / 0.8)
    assert s.mass == pytest.approx(0.8)
    assert s.probs == pytest.approx({"8": 0.55 / 0.8, "7": 0.25 / 0.8})
    yes = lp.expected_score([(" Yes", math.log(0.6)), (" no", math.log(0.2))],
                            {"yes": 1.0, "no": 0.0})
    assert yes.value == pytest.approx(0.75)
    none = lp.expected_score([(" maybe", -0.1)], {"yes": 1.0, "no": 0.0})
    assert none.value is None and none.mass == 0.0


def test_validation_accepts_logprobs_fields_and_names_the_wrong_ones() -> None:
    def line(url: str, **body: object) -> dict[str, object]:
        b = {"messages": [{"role": "user", "content": "hi"}]} if "chat" in url else {"prompt": "hi"}
        return {"custom_id": "a", "method": "POST", "url": url, "body": {**b, **body}}

    chat, cmpl = "/v1/chat/completions", "/v1/completions"
    assert check_line(line(chat, logprobs=True, top_logprobs=20))[1] == []
    assert check_line(line(cmpl, logprobs=5))[1] == []
    assert check_line(line(chat, top_logprobs=3))[1] == [
        ("body", "top_logprobs needs logprobs: true")]
    (field, reason), = check_line(line(chat, logprobs=True, top_logprobs=21))[1]
    assert field == "body.top_logprobs" and "20" in reason
    (field, _), = check_line(line(cmpl, logprobs=-1))[1]
    assert field == "body.logprobs"


def test_digits_score_splits_one_from_ten() -> None:
    first = [("1", math.log(0.4)), (" 9", math.log(0.4)), ("5", math.log(0.1))]
    # after "1": "0" (→ 10) holds 0.3, a line end (→ 1) holds 0.1, the rest is noise
    after = [("0", math.log(0.3)), ("\n\n", math.log(0.1)), ("x", math.log(0.5))]
    s = lp.digits_score(first, 1, 10, after)
    p10, p1 = 0.4 * 0.75, 0.4 * 0.25
    assert s.probs == pytest.approx({"10": p10 / 0.9, "1": p1 / 0.9, "9": 0.4 / 0.9,
                                     "5": 0.1 / 0.9})
    assert s.value == pytest.approx((10 * p10 + 1 * p1 + 9 * 0.4 + 5 * 0.1) / 0.9)
    five = lp.digits_score([(" 4", math.log(0.5)), ("2", math.log(0.5))], 1, 5)
    assert five.value == pytest.approx(3.0)
    with pytest.raises(ValueError, match="after '1'"):
        lp.digits_score(first, 1, 10)
    with pytest.raises(ValueError):
        lp.digits_score(first, 0, 11, after)
    assert lp.top_of(None) == [] and lp.digits_score([], 1, 5).value is None
