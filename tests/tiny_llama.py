"""Build a tiny random Llama (+ byte-level BPE tokenizer with a chat template) for vLLM tests.

Random weights, so greedy output is gibberish — but deterministic, which is what the
equality tests need. ~5 s and ~1.5 MB (RECIPES.md: head_dim must be 32/64/...).
"""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = """Candidate profile: experienced data engineer with Python, SQL and Spark.
Score the candidate from 1 to 10 and explain briefly in JSON with fields score and reason.
The quick brown fox jumps over the lazy dog. {"score": 7, "reason": "solid skills"}
Students record answers; the rubric checks clarity, accuracy and structure of the answer.
Transcribe the speech, then evaluate the transcript against the rubric criteria.
"""


def build_tiny_llama(out: str | Path, seed: int = 0) -> Path:
    """The tiny Llama in `out` (built once); `seed` gives distinct random weights."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([_CORPUS] * 50, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=2048, max_position_embeddings=512,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    cfg_path = out / "tokenizer_config.json"
    tc = json.loads(cfg_path.read_text())
    tc["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(tc, indent=2))
    return out


if __name__ == "__main__":
    import sys

    print(build_tiny_llama(sys.argv[1]))
