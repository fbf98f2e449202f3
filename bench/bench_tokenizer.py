"""Held-out compression of tokenizer expansion recipes on the shared data.

    python bench/bench_tokenizer.py                 # ~18 minutes on 2 loaded cores
    python bench/bench_tokenizer.py --quick         # baselines and the 49,953-piece recipe only

Builds every tokenizer in one run and prints tokens per character on text that no recipe learns
from: the last 10% of the modern corpus (`--hold-out 0.1`, the same split the recipes use),
CMMLU test questions and options, and AGIEval gaokao-chinese (modern expository prose: reading
passages, questions, options); plus English, where the keep-segmentation recipes must not change
a single id. Ratios are against LLaMA-2 and Chinese-LLaMA's merge measured in the same run.

Recipes (the learning corpora: `corpus/zh-modern` (its head), `corpus/zh/hongloumeng.txt`,
`corpus/zh/chinese-poetry`, and for some `corpus/zh/jieba_dict.txt` as a weighted word list):
- llama2, llama3: Meta's tokenizers as they are (Llama-3 read from the tiktoken ranks file).
- cn-llama-49953: Chinese-LLaMA's merge (chinese_sp appended verbatim, English changes).
- colossal-jieba-69104: Colossal's init_tokenizer recipe: top jieba words, length-sorted, score 0.
- words-69104: the word-list route, `--merge-sp chinese_sp --pieces jieba_dict.txt`.
- text-69104: learning from running text only, `--learn-from` the text corpora.
- langgraft-49953 / langgraft-69104: the best recipes found (see the README).
- llama3-zh-150000: Llama-3 + merges learned from the running-text corpora (no word list).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from langgraft.__main__ import main  # noqa: E402
from langgraft.tokenizer import load_tokenizer  # noqa: E402
from langgraft.tokenizer.sources import read_piece_file, read_samples  # noqa: E402
from langgraft.tokenizer.spmodel import NORMAL, Piece, load_proto, save_proto  # noqa: E402

D = (ROOT / ".." / "shared" / "data").resolve()
LLAMA = D / "tokenizers" / "llama2" / "tokenizer.model"
LLAMA3 = D / "tokenizers" / "llama3" / "tokenizer.model"
CSP = D / "tokenizers" / "chinese-llama-sp" / "chinese_sp.model"
MODERN = D / "corpus" / "zh-modern"
TEXT = [
    str(MODERN),
    str(D / "corpus" / "zh" / "hongloumeng.txt"),
    str(D / "corpus" / "zh" / "chinese-poetry"),
]
JIEBA = str(D / "corpus" / "zh" / "jieba_dict.txt")
HELD = [
    str(D / "eval" / "cmmlu" / "test"),
    str(D / "eval" / "agieval" / "data" / "v1" / "gaokao-chinese.jsonl"),
]
HOLD = "0.1"


def colossal_jieba(out: Path, size: int) -> Path:
    """Colossal's init_tokenizer: dedupe, stable sort by length, append with score 0."""
    proto = load_proto(LLAMA)
    have = {p.piece for p in proto.pieces}
    words: list[str] = []
    for c in read_piece_file(Path(JIEBA)):
        if c.piece not in have and len(proto.pieces) + len(words) < size:
            have.add(c.piece)
            words.append(c.piece)
    for w in sorted(words, key=len):
        proto.pieces.append(Piece(piece=w, score=0.0, type=NORMAL))
    save_proto(proto, out)
    return out


def held_out_sets() -> dict[str, list[str]]:
    tail = read_samples([MODERN], float(HOLD))[1]
    sets = {"modern tail (10%)": tail}
    for p in map(Path, HELD):
        name = f"{p.parent.name}/{p.name}" if p.is_dir() else p.name
        sets[name] = [t for t, _ in read_samples([p])[0]]
    sets["english"] = [t for t, _ in read_samples([D / "corpus" / "en"])[0]]
    return sets


def recipes(quick: bool) -> dict[str, tuple[Path, list[str]]]:
    learn = ["--learn-from", *TEXT, JIEBA, "--hold-out", HOLD, "--held-out", *HELD]
    # The cost of --keep-segmentation needs a second learning run: measured on Llama-3 (and
    # by `tokenizer expand` whenever held-out text is given); skipped here for SentencePiece.
    no_cost = ["--no-measure-keep-cost"]
    r = {
        "cn-llama-49953": (LLAMA, ["--merge-sp", str(CSP), "--no-keep-segmentation"]),
        "langgraft-49953": (LLAMA, ["--merge-sp", str(CSP), "--merge-top", "10000", *learn,
                                    *no_cost, "--target-size", "49953"]),
    }  # fmt: skip
    if quick:
        return r
    r.update(
        {
            "words-69104": (LLAMA, ["--merge-sp", str(CSP), "--pieces", JIEBA,
                                    "--target-size", "69104"]),
            "text-69104": (LLAMA, ["--learn-from", *TEXT, "--hold-out", HOLD,
                                   "--no-measure-keep-cost", "--target-size", "69104"]),
            "langgraft-69104": (LLAMA, ["--merge-sp", str(CSP), *learn, *no_cost,
                                        "--target-size", "69104"]),
            "llama3-zh-150000": (LLAMA3, ["--learn-from", *TEXT, "--hold-out", HOLD,
                                          "--held-out", *HELD, "--target-size", "150000"]),
        }
    )  # fmt: skip
    return r


def main_bench() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    sets = held_out_sets()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        toks: dict[str, Path] = {"llama2": LLAMA, "llama3": LLAMA3}
        info: dict[str, dict] = {}
        toks["colossal-jieba-69104"] = colossal_jieba(t / "colossal.model", 69104)
        for name, (source, argv) in recipes(args.quick).items():
            t0 = time.perf_counter()
            rc = main(
                ["tokenizer", "expand", "--source", str(source), *argv, "--out", str(t / name)]
            )
            assert rc == 0, name
            toks[name] = t / name
            info[name] = json.loads((t / name / "expansion.json").read_text())
            print(f"{name}: built in {time.perf_counter() - t0:.0f}s", flush=True)
        rates: dict[str, dict[str, float]] = {}
        sizes: dict[str, int] = {}
        en_ids: dict[str, list] = {}
        for name, path in toks.items():
            tok = load_tokenizer(path)
            sizes[name] = len(tok)
            rates[name] = {}
            for cname, texts in sets.items():
                ids = tok(texts, add_special_tokens=False)["input_ids"]
                rates[name][cname] = sum(map(len, ids)) / sum(map(len, texts))
                if cname == "english":
                    en_ids[name] = ids
    base = "llama2"
    print("\n| tokenizer | pieces | " + " | ".join(sets) + " | mean of the 3 held-out |")
    print("|---|---:|" + "---:|" * (len(sets) + 1))
    for name in rates:
        r = rates[name]
        zh = [r[c] for c in sets if c != "english"]
        cells = [f"{r[c]:.3f}" for c in sets]
        print(
            f"| {name} | {sizes[name]:,} | " + " | ".join(cells) + f" | {sum(zh) / len(zh):.3f} |"
        )
    cn = rates["cn-llama-49953"]
    print("\nratios vs cn-llama-49953 (held-out mean):")
    for name, r in rates.items():
        zh = [r[c] / cn[c] for c in sets if c != "english"]
        print(f"  {name:22s} {sum(zh) / len(zh):.3f}x  (vs {base}: "
              f"{sum(r[c] / rates[base][c] for c in sets if c != 'english') / 3:.3f}x)")  # fmt: skip
    print("\nEnglish lines whose ids change against the source tokenizer:")
    for name in rates:
        src = "llama3" if name.startswith("llama3") else "llama2"
        if name != src:
            changed = sum(a != b for a, b in zip(en_ids[src], en_ids[name], strict=True))
            print(f"  {name:22s} {changed:,} of {len(en_ids[src]):,}")
    print("\nexpansion.json held-out figures (never-used pieces, cost of --keep-segmentation):")
    for name, i in info.items():
        h = i.get("held_out")
        if h:
            cost = h.get("keep_segmentation_cost") or {}
            rel = cost.get("relative_cost")
            print(f"  {name:22s} added {i['added']:,}, never used on held-out {h['never_used']:,}"
                  + (f", keep-segmentation costs {100 * rel:+.2f}% tokens" if rel is not None else ""))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"rates": rates, "sizes": sizes, "info": {
            k: {kk: v for kk, v in i.items() if kk not in ("added_pieces", "skipped_pieces")}
            for k, i in info.items()}}, indent=1, ensure_ascii=False))  # fmt: skip


if __name__ == "__main__":
    main_bench()
