#!/usr/bin/env bash
# GPU checks for the device machine (one short run): the trainer in bf16 and fp16 on CUDA with
# tok/s and MFU, and the eval shared-prefix benchmark at a 1B shape. Needs, beside the repo:
#   .devdata/  tokenizers/llama2/tokenizer.model, eval/cmmlu, llama2-hf/, gpu-data/ (prepare output)
#   .whl/      transformers==5.24.0 wheel (the device image has an older one)
# Results are written to $OUT (or out/gpu) as gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu}"; mkdir -p "$OUT" runs/gpu
exec > >(tee "$OUT/gpu_check.log") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
mkdir -p ../shared && ln -sfn "$PWD/.devdata" ../shared/data
nvidia-smi -L
python3 -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)"
export PYTHONUNBUFFERED=1
ln -sfn "$PWD/.devdata/gpu-data" runs/gpu/data
python3 - <<'PY'
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from langgraft.tokenizer.hf import write_hf_tokenizer
from langgraft.tokenizer.spmodel import load_proto
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                  num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=1024,
                  tie_word_embeddings=False)
m = LlamaForCausalLM(cfg)
print("model params", sum(p.numel() for p in m.parameters()) / 1e6, "M")
m.save_pretrained("runs/gpu/model")
write_hf_tokenizer(load_proto(".devdata/tokenizers/llama2/tokenizer.model"), "runs/gpu/model")
PY
for prec in bf16 fp16; do
  echo "== train $prec"
  rm -rf runs/gpu/run
  timeout 150 python3 -m langgraft train --config recipes/gpu-smoke.yaml --precision=$prec 2>&1 \
    | grep -v "it/s\]$" | tail -n 8
  python3 - "$prec" <<'PY'
import json, sys
rows = [json.loads(l) for l in open("runs/gpu/run/metrics.jsonl") if '"loss"' in l]
last = rows[-10:]
print(sys.argv[1], "steps", len(rows), "loss first/last %.3f/%.3f" % (rows[0]["loss"], rows[-1]["loss"]),
      "tok/s %.0f" % (sum(r.get("tok_s", 0) for r in last) / len(last)),
      "mfu", [r.get("mfu") for r in last][-1], "mem", [r.get("memory_gb") or r.get("mem_gb") for r in last][-1])
PY
done
echo "== eval shared-prefix benchmark, llama-1b shape"
timeout 150 python3 bench/bench_eval_prefix.py --device cuda --shape llama-1b --limit 30 --subjects 8
