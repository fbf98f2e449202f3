#!/usr/bin/env bash
# The README's main job: install langgraft into .venv and run the longest chain of stages that
# works today on the real sample data in ../shared/data. Outputs go to out/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
D="${LANGGRAFT_DATA:-../shared/data}"
OUT="${LANGGRAFT_OUT:-out}"
if [ ! -x .venv/bin/langgraft ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet -e .
fi
lg=.venv/bin/langgraft

echo "== stage 1: expand LLaMA-2's tokenizer with Chinese pieces (Chinese-LLaMA merge, then jieba words), 69,104 pieces"
$lg tokenizer expand --overwrite \
  --source "$D/tokenizers/llama2/tokenizer.model" \
  --merge-sp "$D/tokenizers/chinese-llama-sp/chinese_sp.model" \
  --pieces "$D/corpus/zh/jieba_dict.txt" --target-size 69104 \
  --out "$OUT/tokenizer-zh" | tail -n 1

echo "== stage 1: compression report (tokens per character; lower is better)"
$lg tokenizer report \
  --tokenizer "$D/tokenizers/llama2/tokenizer.model" "$OUT/tokenizer-zh" \
  --names llama2 langgraft-zh \
  --corpus "$D/eval/cmmlu/test" "$D/corpus/zh/hongloumeng.txt" "$D/corpus/en" \
  --out "$OUT/report"
echo "report written to $OUT/report (report.md on stdout above, CSV/JSON/PNG there)"
