"""Chat templates shared by data preparation, training, chat and generation.

`get_template(name)` returns a `ChatTemplate`. `template.parts(messages)` lays a conversation out
as text and special-token parts with a trainable flag; `encode` tokenizes them into
`(ids, trainable)` segments; `render_prompt` gives the ids of a prompt that ends where the
assistant's reply starts. Special tokens are inserted by id, never parsed out of text (the
tokenizers here split "<s>" in text into ordinary pieces, as sentencepiece does). Loss is on
assistant content and its end-of-turn token only.

Templates:
- `llama2`: Colossal-LLaMA-2's format. `<s>` + system prompt, then `Human: <s>q</s>Assistant: <s>a</s>`.
- `llama3`: `<|begin_of_text|><|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>`.
- `chatml`: `<|im_start|>role\\ncontent<|im_end|>\\n` (after `<s>` when the tokenizer has one).

The template's name travels with the data and the model: `prepare chat` records it in the
dataset's manifest.json, the trainer records it in every export's langgraft.json
(`chat_template`) and writes the same layout as Jinja into its tokenizer_config.json (so
`transformers`' `apply_chat_template` works), and `find_template_name` reads either (`langgraft
chat` does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraft.errors import UserError

# Colossal-LLaMA-2's default system prompt (dataset/conversation.py).
COLOSSAL_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

# Placeholders for the tokenizer's own BOS/EOS ids; OPTIONAL_BOS is left out if it has none.
BOS, EOS, OPTIONAL_BOS = "<bos>", "<eos>", "<bos?>"


@dataclass(frozen=True)
class Part:
    text: str | None = None
    special: str | None = None
    """A special token by name (or BOS/EOS placeholder); inserted by id."""
    trainable: bool = False


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    specials: tuple[str, ...]
    """Special tokens (besides BOS/EOS) that the tokenizer must have."""
    stop: str
    """The end-of-turn token that ends an assistant reply (generation stops on it)."""

    def parts(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = False
    ) -> list[Part]:
        return _LAYOUTS[self.name](messages, add_generation_prompt)

    def special_id(self, tokenizer: Any, name: str) -> int:
        if name in (BOS, EOS):
            idx = tokenizer.bos_token_id if name == BOS else tokenizer.eos_token_id
            if idx is None:
                raise UserError(f"template {self.name!r}: the tokenizer has no {name[1:-1]} token")
            return int(idx)
        idx = tokenizer.get_vocab().get(name)
        if idx is None:
            raise UserError(
                f"template {self.name!r} needs the special token {name!r}, which the tokenizer "
                "lacks; add it to the tokenizer first, or use --template llama2"
            )
        return int(idx)

    def check(self, tokenizer: Any) -> None:
        """Raise UserError now if the tokenizer lacks a token this template needs."""
        for name in (*self.specials, self.stop):
            self.special_id(tokenizer, name)

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        return [self.special_id(tokenizer, self.stop)]

    def encode(
        self, messages: list[dict[str, str]], tokenizer: Any
    ) -> list[tuple[list[int], bool]]:
        """Segments (token ids, trainable) of a whole conversation, for training."""
        return self._tokenize(self.parts(messages), tokenizer)

    def render_prompt(self, messages: list[dict[str, str]], tokenizer: Any) -> list[int]:
        """Token ids of a prompt for generation: the conversation + the assistant's header."""
        segs = self._tokenize(self.parts(messages, add_generation_prompt=True), tokenizer)
        return [i for ids, _ in segs for i in ids]

    def _tokenize(self, parts: list[Part], tokenizer: Any) -> list[tuple[list[int], bool]]:
        texts = [p.text for p in parts if p.text is not None]
        encoded = iter(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
        out = []
        for p in parts:
            if p.special == OPTIONAL_BOS:
                if tokenizer.bos_token_id is not None:
                    out.append(([int(tokenizer.bos_token_id)], p.trainable))
                continue
            ids = next(encoded) if p.text is not None else [self.special_id(tokenizer, p.special)]
            out.append((list(ids), p.trainable))
        return out


def _system_and_turns(messages: list[dict[str, str]]) -> tuple[str | None, list[dict[str, str]]]:
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return None, messages


def _llama2(messages: list[dict[str, str]], gen: bool) -> list[Part]:
    system, turns = _system_and_turns(messages)
    parts = [
        Part(special=BOS),
        Part(text=(system if system is not None else COLOSSAL_SYSTEM) + "\n\n"),
    ]
    for m in turns:
        if m["role"] == "user":
            parts += [
                Part(text="Human: "),
                Part(special=BOS),
                Part(text=m["content"]),
                Part(special=EOS),
            ]
        else:
            parts += [Part(text="Assistant: "), Part(special=BOS)]
            parts += [Part(text=m["content"], trainable=True), Part(special=EOS, trainable=True)]
    if gen:
        parts += [Part(text="Assistant: "), Part(special=BOS)]
    return parts


def _llama3(messages: list[dict[str, str]], gen: bool) -> list[Part]:
    parts = [Part(special=BOS)]
    for m in messages:
        train = m["role"] == "assistant"
        parts += [
            Part(special="<|start_header_id|>"),
            Part(text=m["role"]),
            Part(special="<|end_header_id|>"),
            Part(text="\n\n"),
            Part(text=m["content"], trainable=train),
            Part(special="<|eot_id|>", trainable=train),
        ]
    if gen:
        parts += [
            Part(special="<|start_header_id|>"),
            Part(text="assistant"),
            Part(special="<|end_header_id|>"),
            Part(text="\n\n"),
        ]
    return parts


def _chatml(messages: list[dict[str, str]], gen: bool) -> list[Part]:
    parts = [Part(special=OPTIONAL_BOS)]
    for m in messages:
        train = m["role"] == "assistant"
        parts += [
            Part(special="<|im_start|>"),
            Part(text=m["role"] + "\n"),
            Part(text=m["content"], trainable=train),
            Part(special="<|im_end|>", trainable=train),
            Part(text="\n"),
        ]
    if gen:
        parts += [Part(special="<|im_start|>"), Part(text="assistant\n")]
    return parts


_LAYOUTS = {"llama2": _llama2, "llama3": _llama3, "chatml": _chatml}

# The same layouts as Jinja, for `transformers`' apply_chat_template (the exported model's
# tokenizer_config.json). Special tokens appear as text here, so the exported tokenizer must
# parse them (split_special_tokens false); langgraft itself always inserts them by id.
_JINJA = {
    "llama2": (
        "{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}"
        "{{ messages[0]['content'] }}{% set turns = messages[1:] %}{% else %}"
        "{{ " + json.dumps(COLOSSAL_SYSTEM) + " }}{% set turns = messages %}{% endif %}"
        "{{ '\\n\\n' }}{% for m in turns %}"
        "{% if m['role'] == 'user' %}{{ 'Human: ' + bos_token + m['content'] + eos_token }}"
        "{% else %}{{ 'Assistant: ' + bos_token + m['content'] + eos_token }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' + bos_token }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
        "'<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
        "{% endif %}"
    ),
    "chatml": (
        "{% if bos_token %}{{ bos_token }}{% endif %}{% for m in messages %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
}


def jinja_template(name: str) -> str:
    """The Jinja chat template (Hugging Face `chat_template`) of a langgraft template."""
    get_template(name)  # an unknown name is the usual error
    return _JINJA[name]


_TEMPLATES = {
    "llama2": ChatTemplate("llama2", (), EOS),
    # LLaMA-3 tokenizers call their BOS <|begin_of_text|>; the tokenizer's bos_token is used.
    "llama3": ChatTemplate("llama3", ("<|start_header_id|>", "<|end_header_id|>"), "<|eot_id|>"),
    "chatml": ChatTemplate("chatml", ("<|im_start|>",), "<|im_end|>"),
}
TEMPLATE_NAMES = tuple(_TEMPLATES)


def get_template(name: str) -> ChatTemplate:
    try:
        return _TEMPLATES[name]
    except KeyError:
        raise UserError(
            f"unknown chat template {name!r}; choose one of {', '.join(TEMPLATE_NAMES)}"
        ) from None


def find_template_name(model_dir: str | Path, dataset_dir: str | Path | None = None) -> str | None:
    """The template a model was tuned with: `chat_template` in the model's langgraft.json (what
    the trainer writes into every export of a run on `prepare chat` data), else the
    template recorded in a `prepare chat` dataset's manifest.json; None if neither says."""
    from langgraft.jsonio import read_json_object
    from langgraft.model.meta import read_meta

    name = read_meta(model_dir).get("chat_template")
    if isinstance(name, dict):
        name = name.get("name")
    if name:
        return str(name)
    if dataset_dir is not None:
        manifest = Path(dataset_dir) / "manifest.json"
        if not manifest.is_file():
            raise UserError(
                f"{dataset_dir}: no manifest.json; pass a `prepare chat` output directory"
            )
        info = read_json_object(manifest).get("template")
        name = info.get("name") if isinstance(info, dict) else info
        if not name:
            raise UserError(f"{manifest}: no chat template recorded (a pretraining dataset?)")
        return str(name)
    return None
