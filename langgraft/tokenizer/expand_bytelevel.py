"""`langgraft tokenizer expand` for byte-level BPE sources (Llama-3 tiktoken file, tokenizer.json).

    langgraft tokenizer expand --source ../shared/data/tokenizers/llama3/tokenizer.model \
        --learn-from ../shared/data/corpus/zh-modern ../shared/data/corpus/zh/hongloumeng.txt \
        --target-size 150000 --hold-out 0.1 --out out/tok-l3-zh

New tokens are merges learned on the source's own segmentation of the corpus (same pre-tokenizer,
same merges first; see `langgraft.tokenizer.learn`), appended after every existing merge, with
ids after every existing id (special tokens keep theirs). The tokenizer.json is the only model
file written; `AutoTokenizer.from_pretrained(out)` loads it.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from langgraft.errors import UserError
from langgraft.tokenizer.bytelevel import (
    append_merges,
    old_segmentation,
    token_kinds,
    write_bytelevel_dir,
)
from langgraft.tokenizer.bytelevel_source import ByteLevelSource, load_bytelevel_source
from langgraft.tokenizer.learn import count_fragments, learn_merges

log = logging.getLogger(__name__)


@dataclass
class ByteLevelResult:
    tokenizer: ByteLevelSource  # the expanded tokenizer.json data
    added: list[dict]
    merges_learned: int
    merges: list[tuple[tuple[int, ...], tuple[int, ...]]]  # as old-token-id sequences


def learn_expansion(
    src: ByteLevelSource,
    samples: list[tuple[str, int]],
    n_new: int,
    keep_segmentation: bool,
    min_count: int,
    max_token_length: int | None,
) -> ByteLevelResult:
    """Learn up to `n_new` new tokens from the samples and append them to a copy of `src`."""
    tok = src.tokenizer()
    kinds = token_kinds(src, keep_segmentation)
    items = old_segmentation(tok, samples)
    frags = count_fragments(items, kinds, keep_segmentation)
    learned = learn_merges(frags, n_new, min_count=min_count, max_token_length=max_token_length)
    out = copy.deepcopy(src)
    added = append_merges(out, learned.merges)
    return ByteLevelResult(out, added, len(learned.merges), learned.merges)


def check_source(cfg: Any) -> None:
    if cfg.pieces or cfg.merge_sp:
        raise UserError(
            "--pieces and --merge-sp are for SentencePiece sources; a byte-level BPE source "
            "grows only by learned merges (--learn-from), so that the pre-tokenizer still applies"
        )
    if not cfg.learn_from:
        raise UserError("a byte-level BPE source needs --learn-from FILES --target-size N")


def held_out_figures(
    src: ByteLevelSource, result: ByteLevelResult, held: list[str]
) -> dict[str, Any]:
    """Tokens per character before and after, and added tokens never used, on held-out text."""
    chars = sum(map(len, held))
    before = sum(len(e.ids) for e in src.tokenizer().encode_batch(held, add_special_tokens=False))
    used: Counter[int] = Counter()
    n_after = 0
    for e in result.tokenizer.tokenizer().encode_batch(held, add_special_tokens=False):
        used.update(e.ids)
        n_after += len(e.ids)
    return {
        "samples": len(held),
        "characters": chars,
        "tokens_per_char_source": before / chars if chars else None,
        "tokens_per_char": n_after / chars if chars else None,
        "never_used": sum(1 for a in result.added if used[a["id"]] == 0),
    }


def load_source(cfg: Any) -> ByteLevelSource:
    return load_bytelevel_source(cfg.source, cfg.pattern)


def write_output(result: ByteLevelResult, tmp: Any) -> None:
    write_bytelevel_dir(result.tokenizer, tmp)


def expand_bytelevel(cfg: Any) -> dict:
    from langgraft.fsutil import atomic_output_dir, sha256_file
    from langgraft.tokenizer.config import read_learning_text, sources_record
    from langgraft.tokenizer.expand import Expansion, expand_inputs, log_keep_cost_pass
    from langgraft.tokenizer.records import keep_cost, tokens_per_char, write_record
    from langgraft.tokenizer.sources import read_samples

    check_source(cfg)
    if cfg.learner != "merges":
        raise UserError("--learner sentencepiece is for SentencePiece sources")
    src = load_source(cfg)
    source_size = src.size()
    assert cfg.target_size is not None
    if cfg.target_size <= source_size:
        raise UserError(
            f"--target-size {cfg.target_size} is not above the source size {source_size}"
        )
    samples, held = read_learning_text(cfg)
    if not samples:
        raise UserError(f"--learn-from: no text found in {', '.join(map(str, cfg.learn_from))}")
    n_new = cfg.target_size - source_size

    def learn(keep: bool) -> ByteLevelResult:
        return learn_expansion(src, samples, n_new, keep, cfg.min_count, cfg.max_token_length)

    result = learn(cfg.keep_segmentation)
    held_fig = held_out_figures(src, result, held) if held else None
    if held_fig and cfg.measure_keep_cost:
        log_keep_cost_pass(cfg.keep_segmentation)
        other = learn(not cfg.keep_segmentation)
        mine = held_fig["tokens_per_char"]
        theirs = tokens_per_char(other.tokenizer.tokenizer(), held)
        held_fig["keep_segmentation_cost"] = (
            keep_cost(mine, theirs, True)
            if cfg.keep_segmentation
            else keep_cost(theirs, mine, False)
        )
    corpora = cfg.check_corpus
    unused = None
    if corpora:
        checked, _ = read_samples(corpora)
        unused = held_out_figures(src, result, [t for t, _ in checked])["never_used"]
    specials = src.added_ids()
    final_size = result.tokenizer.size()
    summary = {
        "source": str(cfg.source),
        "source_sha256": sha256_file(src.path) if src.path.is_file() else None,
        "source_kind": src.kind,
        "pattern": src.pattern,
        "source_size": source_size,
        "final_size": final_size,
        "added": len(result.added),
        "merges_added": result.merges_learned,
        "stopped_early": len(result.added) < n_new,
        "keep_segmentation": cfg.keep_segmentation,
        "special_tokens": specials,
        "special_token_ids_moved": {},  # new ids come after every existing id
        "never_used_on_corpus": unused,
        "check_corpus": [str(p) for p in corpora],
        "held_out": held_fig,
        "sources": sources_record(cfg),
    }
    if summary["stopped_early"]:
        log.warning(
            "only %d pairs occur >= %d times: stopped at %d tokens (asked for %d)",
            len(result.added), cfg.min_count, final_size, cfg.target_size,
        )  # fmt: skip
    with atomic_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=expand_inputs(cfg)) as tmp:
        write_output(result, tmp)
        write_record(tmp / "expansion.json", summary, Expansion(added=result.added))
    return summary
