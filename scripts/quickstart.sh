#!/usr/bin/env bash
# The README's main job: install langgraft into .venv and run every stage on the real sample data
# in ../shared/data, on CPU (about 6 minutes on 2 cores). Outputs go to out/ (git-ignored).
#   1. LLaMA-2's tokenizer expanded to 69,104 pieces with Chinese; compression report.
#   2-4. stories260K (llama2.c, English only) imported, tokenizer + embeddings expanded, data
#        prepared, three training stages (scripts/train_demo.sh), held-out loss before/after.
#   5. CMMLU multiple choice, before and after, side by side.
#   6. Greedy generation from the trained model.
set -euo pipefail
cd "$(dirname "$0")/.."
D="${LANGGRAFT_DATA:-../shared/data}"
OUT=out
if [ ! -x .venv/bin/langgraft ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet -e .
fi
lg=.venv/bin/langgraft

echo "== 1. LLaMA-2 tokenizer + Chinese pieces (Chinese-LLaMA merge, then jieba words): 69,104"
$lg tokenizer expand --overwrite \
  --source "$D/tokenizers/llama2/tokenizer.model" \
  --merge-sp "$D/tokenizers/chinese-llama-sp/chinese_sp.model" \
  --pieces "$D/corpus/zh/jieba_dict.txt" --target-size 69104 \
  --out "$OUT/tokenizer-zh"
echo "== 1. compression report (tokens per character; lower is better)"
$lg tokenizer report \
  --tokenizer "$D/tokenizers/llama2/tokenizer.model" "$OUT/tokenizer-zh" \
  --names llama2 langgraft-zh \
  --corpus "$D/eval/cmmlu/test" "$D/corpus/zh/hongloumeng.txt" "$D/corpus/en" \
  --out "$OUT/report" --overwrite 2>/dev/null

echo "== 2-4. stories260K learns Chinese: import, expand, prepare, train three stages"
PYTHON=.venv/bin/python LANGGRAFT_DATA="$D" bash scripts/train_demo.sh 2>"$OUT/train_demo.log" \
  | grep -v "^Loading\|it/s\]$" || { tail -n 20 "$OUT/train_demo.log"; exit 1; }

echo "== 5. CMMLU (2 test questions per subject, 5-shot, both scoring modes), before vs after"
for pair in before:model after:run/export/stage-2-replay; do
  $lg eval mc --task cmmlu --data "$D/eval/cmmlu" --model "$OUT/demo/${pair#*:}" --limit 2 \
    --mode both --out "$OUT/eval-cmmlu/${pair%%:*}" --overwrite >/dev/null 2>&1
done
$lg eval mc --compare "$OUT/eval-cmmlu/before" "$OUT/eval-cmmlu/after"
echo "(a 260K-parameter model is at chance on CMMLU; the table shows the pipeline, not skill)"

echo "== 6. greedy generation from the trained model"
$lg generate --model "$OUT/demo/run/export/stage-2-replay" --prompt "宝玉道" --greedy \
  --max-new-tokens 60 2>/dev/null
echo
