"""Stage 3, data preparation: tokenized, masked, packed, binned Arrow datasets, losing no token.

Commands (see docs/prepare.md for the input schema and the output contract):

    # CPU, seconds: the real zh/en corpora, raw-text mode, the tiny tokenizer
    langgraft prepare pretrain --input zh=../shared/data/corpus/zh/hongloumeng.txt \\
        en=../shared/data/corpus/en --tokenizer ../shared/data/models/stories260K/tok512.model \\
        --max-length 512 --num-bins 2 --out /tmp/prepared

    # Colossal-style {"source", "target", "category"} jsonl, LLaMA-2 tokenizer, 4 workers
    langgraft prepare pretrain --input data/ --tokenizer tokenizer.model --max-length 4096 \\
        --num-bins 10 --workers 4 --jsonl --out prepared/

    # chat: {"messages": [{"role": ..., "content": ...}]}, loss on assistant turns only
    langgraft prepare chat --input sft.jsonl --tokenizer tok/ --template llama2 --out sft/

Modules: `sources` (find files, stream rows with file:line), `rows` (decode and validate a row),
`tokenize` (ids + trained-token mask, worker processes), `textenc` (sentencepiece or
tokenizer.json, cross-checked), `pack` (chunk + best-fit packing),
`bins` (on-disk stores, seeded bins and buckets), `writer` (Arrow/jsonl), `prepare` (the
pipeline and the manifest), `convert` (JSON corpora to jsonl), `cli`.
"""
