"""Peak RSS of `langgraft model expand` against the model's size on disk, next to the usual
transformers route (from_pretrained + resize_token_embeddings + save_pretrained) run on the same
model in the same benchmark.

    /work/venv/bin/python bench/bench_model_expand_rss.py            # 4096-wide, 1 layer, ~0.9 GB bf16
    /work/venv/bin/python bench/bench_model_expand_rss.py --hidden 2048 --intermediate 5504

The synthetic model has LLaMA-2-7B's width, vocabulary (32,000, the real LLaMA-2 tokenizer) and
untied lm_head, with random bf16 weights written tensor by tensor; it is expanded to LLaMA-2 +
Chinese-LLaMA's chinese_sp pieces (`langgraft tokenizer expand --merge-sp`). Each measured step
runs in its own process, which reports its own peak RSS (VmHWM), so steps do not mix.
With one layer the embedding matrices are about half of the model, the worst case for the
streaming writer (it holds the old and new embedding matrix at once); a real 7B is 3% embeddings.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def make_model(out: Path, hidden: int, intermediate: int, layers: int, vocab: int) -> None:
    import torch
    from transformers import LlamaConfig

    from langgraft.model.safetensors_io import StreamingWriter, TensorInfo
    from langgraft.tokenizer.hf import write_hf_tokenizer
    from langgraft.tokenizer.spmodel import load_proto

    out.mkdir(parents=True)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=hidden // 128,
                      tie_word_embeddings=False, dtype="bfloat16")  # fmt: skip
    cfg.save_pretrained(out)
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}  # fmt: skip
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{name}.weight"] = (hidden, hidden)
        shapes[p + "mlp.gate_proj.weight"] = shapes[p + "mlp.up_proj.weight"] = (
            intermediate,
            hidden,
        )
        shapes[p + "mlp.down_proj.weight"] = (hidden, intermediate)
        shapes[p + "input_layernorm.weight"] = shapes[p + "post_attention_layernorm.weight"] = (
            hidden,
        )
    shapes = dict(sorted(shapes.items()))  # the safetensors library's order: lm_head, embed, ...
    specs = [TensorInfo(k, "BF16", s) for k, s in shapes.items()]
    gen = torch.Generator().manual_seed(0)
    with StreamingWriter(out / "model.safetensors", specs, {"format": "pt"}) as w:
        for k, s in shapes.items():
            w.write(k, (torch.randn(s, generator=gen) * 0.02).bfloat16())
    write_hf_tokenizer(load_proto(DATA / "tokenizers/llama2/tokenizer.model"), out)


def naive_expand(model: str, tok: str, out: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from langgraft.tokenizer.hf import load_tokenizer

    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16)
    # mean_resizing=True samples from a 4096-dim Gaussian for ~17k rows: minutes on 2 cores, and
    # it changes the time, not the memory profile we compare.
    m.resize_token_embeddings(len(load_tokenizer(tok)), mean_resizing=False)
    m.save_pretrained(out)


def child(argv: list[str]) -> None:
    """Run one step in this process and print its peak RSS (bytes) as the last line."""
    step, *args = argv
    if step == "imports":
        import torch  # noqa: F401
        import transformers  # noqa: F401

        import langgraft.model.expand  # noqa: F401
    elif step == "langgraft":
        from langgraft.__main__ import main

        assert main(["model", "expand", *args]) == 0
    elif step == "naive":
        naive_expand(*args)
    # VmHWM, not ru_maxrss: Linux folds the parent's high-water mark into a forked child's
    # ru_maxrss across exec, while VmHWM belongs to this process's own address space.
    status = Path("/proc/self/status").read_text().splitlines()
    hwm = [int(ln.split()[1]) * 1024 for ln in status if ln.startswith("VmHWM:")]
    print(hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def measure(step: str, *args: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, __file__, "--child", step, *args], capture_output=True, text=True
    )
    if res.returncode:
        sys.exit(f"{step} failed:\n{res.stderr[-3000:]}")
    return int(res.stdout.strip().splitlines()[-1]), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument(
        "--workdir", type=Path, default=None, help="keep files here (default: a temp dir)"
    )
    ap.add_argument("--no-baseline", action="store_true", help="skip the transformers baseline")
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child)
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        w = Path(tmp)
        make_model(w / "src", a.hidden, a.intermediate, a.layers, 32000)
        subprocess.run([sys.executable, "-m", "langgraft", "tokenizer", "expand", "--source",
                        str(DATA / "tokenizers/llama2/tokenizer.model"), "--merge-sp",
                        str(DATA / "tokenizers/chinese-llama-sp/chinese_sp.model"), "--out",
                        str(w / "tok")], check=True, capture_output=True)  # fmt: skip
        size = (w / "src/model.safetensors").stat().st_size
        base, _ = measure("imports")
        ours, t_ours = measure("langgraft", "--model", str(w / "src"), "--tokenizer", str(w / "tok"),
                               "--out", str(w / "ours"), "--pad-to-multiple-of", "64")  # fmt: skip
        naive, t_naive = (0, 0.0)
        if not a.no_baseline:
            naive, t_naive = measure("naive", str(w / "src"), str(w / "tok"), str(w / "naive"))
        vocab = json.loads((w / "ours/config.json").read_text())["vocab_size"]
    gb = 1 << 30
    print(f"model: hidden {a.hidden}, {a.layers} layer(s), vocab 32000 -> {vocab}, bf16, "
          f"{size / gb:.2f} GiB on disk")  # fmt: skip
    print(f"{'':32} {'peak RSS':>10} {'x size':>8} {'(peak - imports) x size':>24} {'time':>7}")
    print(f"{'imports only (torch, transformers)':32} {base / gb:9.2f}G {base / size:8.2f}")
    rows = [("langgraft model expand", ours, t_ours)]
    if naive:
        rows.append(("transformers resize + save", naive, t_naive))
    for name, rss, t in rows:
        print(f"{name:32} {rss / gb:9.2f}G {rss / size:8.2f} {(rss - base) / size:24.2f} {t:6.1f}s")
    if naive:
        print(f"langgraft / transformers peak RSS: {ours / naive:.2f}")


if __name__ == "__main__":
    main()
