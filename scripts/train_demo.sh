#!/usr/bin/env bash
# Done-when demo of `langgraft train` on CPU: stories260K (llama2.c, English TinyStories) is
# imported, its tokenizer expanded with Chinese pieces learned from Hongloumeng, its embeddings
# expanded, Chinese + English data prepared (90% train / 10% held out), and the three stages of
# recipes/demo-stories260k.yaml run (embeddings-only warm-up, Chinese injection, zh+en replay).
# Held-out bits per character are measured before and after with `langgraft eval text` (figures:
# docs/train.md, "Measured figures").
#   scripts/train_demo.sh                      # outputs in out/demo (git-ignored)
#   LANGGRAFT_DEMO_EXPAND=0 scripts/train_demo.sh   # skip vocabulary expansion (byte fallback)
set -euo pipefail
cd "$(dirname "$0")/.."
D="${LANGGRAFT_DATA:-../shared/data}"
OUT=out/demo
PY="${PYTHON:-python}"
lg="$PY -m langgraft"
EXPAND="${LANGGRAFT_DEMO_EXPAND:-1}"
VOCAB="${LANGGRAFT_DEMO_VOCAB:-2048}"
rm -rf "$OUT" && mkdir -p "$OUT/corpus"

$lg model import-llama2c --checkpoint "$D/models/stories260K/stories260K.bin" \
  --tokenizer "$D/models/stories260K/tok512.model" --out "$OUT/base"
if [ "$EXPAND" = 1 ]; then
  $lg tokenizer expand --source "$OUT/base" --learn-from "$D/corpus/zh/hongloumeng.txt" \
    --target-size "$VOCAB" --out "$OUT/tok"
  $lg model expand --model "$OUT/base" --tokenizer "$OUT/tok" --out "$OUT/model"
else
  cp -r "$OUT/base" "$OUT/model"
fi

# 90/10 split by characters, in document order (the held-out tail is never trained on).
$PY - "$D" "$OUT/corpus" <<'PYEOF'
import sys
from pathlib import Path
src, out = Path(sys.argv[1]) / "corpus", Path(sys.argv[2])
for name, path in [("zh", src / "zh" / "hongloumeng.txt"), ("en", src / "en" / "tinyshakespeare.txt")]:
    text = path.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    cut = text.index("\n\n", cut) + 2  # split on a block boundary
    (out / f"{name}-train.txt").write_text(text[:cut], encoding="utf-8")
    (out / f"{name}-heldout.txt").write_text(text[cut:][:40000], encoding="utf-8")
PYEOF

for part in zh-train en-train zh-heldout en-heldout; do
  bins=1; [ "$part" = zh-train ] && bins=2
  $lg prepare pretrain --input "${part%%-*}=$OUT/corpus/$part.txt" --tokenizer "$OUT/model" \
    --out "$OUT/data/$part" --max-length 256 --num-bins "$bins" --no-progress
done

evaluate() {  # $1 model dir, $2 output dir
  $lg eval text --model "$1" --data "$OUT/corpus/zh-heldout.txt" "$OUT/corpus/en-heldout.txt" \
    --out "$2" --max-length 256
}
evaluate "$OUT/model" "$OUT/eval-before"
time $lg train --config recipes/demo-stories260k.yaml
evaluate "$OUT/run/export/stage-2-replay" "$OUT/eval-after"
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(d):
    r = json.loads((out / d / "text_results.json").read_text())
    return {Path(x["name"]).stem: x["bits_per_char"] for x in r["corpora"]}
before, after = load("eval-before"), load("eval-after")
for k in before:
    print(f"{k}: {before[k]:.4f} -> {after[k]:.4f} bits/char ({after[k] / before[k] - 1:+.1%})")
PYEOF
