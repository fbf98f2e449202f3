"""langgraft: teach a pretrained LLaMA-family model a new language or domain, cheaply.

Pipeline stages, one sub-package each: tokenizer expansion (`langgraft.tokenizer`), model import
and embedding init (`langgraft.model`), data preparation (`langgraft.data`), training
(`langgraft.train`), evaluation (`langgraft.eval`), generation (`langgraft.generate`).
"""

__version__ = "0.1.0"
