"""Compression benchmark for tokenizer expansion on the shared data.

    python bench/bench_tokenizer.py            # ~2 minutes on 2 cores

Builds, in one run, the baselines and langgraft's recipe, then prints tokens per character on
held-out modern Chinese (CMMLU test questions and options; never used to build a tokenizer), the
learning corpora, and English, with ratios against LLaMA-2 and against Chinese-LLaMA's merge.

- llama2: Meta's 32,000 pieces.
- cn-llama-49953: Chinese-LLaMA's merge (chinese_sp appended verbatim).
- colossal-jieba-69104: Colossal's init_tokenizer recipe: top jieba words, length-sorted, score 0.
- langgraft-69104: `--merge-sp chinese_sp --pieces jieba_dict.txt --target-size 69104` (the README
  quick start), keep-segmentation on.
- langgraft-learned-69104: `--merge-sp chinese_sp --learn-from corpus/zh --target-size 69104`.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

import sentencepiece as spm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from langgraft.__main__ import main  # noqa: E402
from langgraft.tokenizer.sources import expand_paths, iter_texts, read_piece_file  # noqa: E402
from langgraft.tokenizer.spmodel import NORMAL, Piece, load_proto, save_proto  # noqa: E402

D = (ROOT / ".." / "shared" / "data").resolve()
LLAMA = D / "tokenizers" / "llama2" / "tokenizer.model"
CSP = D / "tokenizers" / "chinese-llama-sp" / "chinese_sp.model"


def colossal_jieba(out: Path, size: int) -> Path:
    """Colossal's init_tokenizer: dedupe, stable sort by length, append with score 0."""
    proto = load_proto(LLAMA)
    have = {p.piece for p in proto.pieces}
    words: list[str] = []
    for c in read_piece_file(D / "corpus" / "zh" / "jieba_dict.txt"):
        if c.piece not in have and len(proto.pieces) + len(words) < size:
            have.add(c.piece)
            words.append(c.piece)
    for w in sorted(words, key=len):
        proto.pieces.append(Piece(piece=w, score=0.0, type=NORMAL))
    save_proto(proto, out)
    return out


def cmmlu_questions() -> list[str]:
    rows: list[str] = []
    for f in sorted((D / "eval" / "cmmlu" / "test").glob("*.csv")):
        with open(f, encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                rows.append(" ".join(r[k] for k in ("Question", "A", "B", "C", "D")))
    return rows


def optimal_tokens(vocab: set[str], text: str) -> int:
    """Fewest tokens any segmentation into `vocab` pieces (bytes for unknown characters) can
    reach: a lower bound that tells whether BPE's greedy merge order or the vocabulary limits."""
    s = "\u2581" + text.replace(" ", "\u2581")
    longest = max(map(len, vocab))
    best = [0] + [1 << 30] * len(s)
    for i in range(1, len(s) + 1):
        for j in range(max(0, i - longest), i):
            if s[j:i] in vocab and best[j] + 1 < best[i]:
                best[i] = best[j] + 1
        if s[i - 1] not in vocab:
            best[i] = min(best[i], best[i - 1] + len(s[i - 1].encode()))
    return best[-1]


def texts(path: Path) -> list[str]:
    return [t for f in expand_paths([path]) for t, _ in iter_texts(f)]


def main_bench() -> None:
    corpora = {
        "cmmlu-test (held out)": cmmlu_questions(),
        "hongloumeng": texts(D / "corpus" / "zh" / "hongloumeng.txt"),
        "chinese-poetry": texts(D / "corpus" / "zh" / "chinese-poetry"),
        "english": texts(D / "corpus" / "en"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        models: dict[str, Path] = {"llama2": LLAMA}
        jieba = str(D / "corpus" / "zh" / "jieba_dict.txt")

        def expand(name: str, *args: str) -> Path:
            main(["tokenizer", "expand", "--source", str(LLAMA), "--merge-sp", str(CSP), *args,
                  "--out", str(t / name)])  # fmt: skip
            return t / name / "tokenizer.model"

        t0 = time.perf_counter()
        models["cn-llama-49953"] = expand("cn", "--no-keep-segmentation")
        models["colossal-jieba-69104"] = colossal_jieba(t / "colossal.model", 69104)
        t1 = time.perf_counter()
        models["langgraft-69104"] = expand("lg", "--pieces", jieba, "--target-size", "69104")
        t2 = time.perf_counter()
        models["langgraft-learned-69104"] = expand(
            "learned", "--learn-from", str(D / "corpus" / "zh"), "--target-size", "69104"
        )
        rates: dict[tuple[str, str], float] = {}
        for name, path in models.items():
            sp = spm.SentencePieceProcessor(model_file=str(path))
            for cname, lines in corpora.items():
                n = sum(map(len, sp.encode(lines)))
                rates[name, cname] = n / sum(map(len, lines))
        print(
            f"\nexpand time: chinese-llama merge {t1 - t0:.1f}s (incl. colossal build), "
            f"langgraft recipe (merge + jieba) {t2 - t1:.1f}s\n"
        )
        print("| tokenizer | vocab | " + " | ".join(corpora) + " |")
        print("|---|---:|" + "---:|" * len(corpora))
        for name, path in models.items():
            size = spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()
            cells = [
                f"{rates[name, c]:.3f} ({rates[name, c] / rates['llama2', c]:.2f}x llama2, "
                f"{rates[name, c] / rates['cn-llama-49953', c]:.2f}x cn-llama)"
                for c in corpora
            ]
            print(f"| {name} | {size:,} | " + " | ".join(cells) + " |")
        sample = corpora["cmmlu-test (held out)"][::4]
        chars = sum(map(len, sample))
        print("\nheld-out CMMLU (every 4th row): greedy BPE vs the optimal segmentation into the")
        print("same vocabulary (a lower bound for any merge order):")
        for name, path in models.items():
            proto = load_proto(path)
            vocab = {p.piece for p in proto.pieces if p.type == NORMAL}
            sp = spm.SentencePieceProcessor(model_file=str(path))
            bpe = sum(map(len, sp.encode(sample))) / chars
            best = sum(optimal_tokens(vocab, x) for x in sample) / chars
            print(f"  {name:26s} BPE {bpe:.4f}  optimal {best:.4f}  ({bpe / best - 1:+.2%})")


if __name__ == "__main__":
    main_bench()
