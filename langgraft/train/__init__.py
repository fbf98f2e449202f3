"""Stage 4: continual pretraining. A YAML recipe of stages (embeddings-only warm-up, knowledge
injection, knowledge replay), buckets consumed in order, token-weighted loss, exact resume.

    langgraft train --config recipes/demo-stories260k.yaml            # CPU, a few minutes
    langgraft train --config recipes/demo-stories260k.yaml --resume auto
    langgraft train --config recipes/llama2-7b.yaml --train.micro_batch_size=4

See docs/train.md for the recipe format and the mapping of every Colossal train.py option.
"""
