"""Stage 6: a streaming chat REPL over the chat template the model was tuned with.

    langgraft chat --model runs/sft                      # template from runs/sft/langgraft.json
    langgraft chat --model runs/sft --dataset data/sft   # ... or from the dataset's manifest.json
    printf 'Hi!\\n/system Be brief.\\nAnd you?\\n' | langgraft chat --model runs/sft --template llama2 --greedy

Each prompt is `template.render_prompt(history)`: the same layout and token ids as `prepare chat`
produced for training, with the one BOS the template puts first (never a second one). Commands:
/clear (forget the conversation), /system TEXT (set the system prompt; clears), /exit. When the
conversation no longer fits the context window with room for a reply, the oldest turns are
dropped, and the REPL says so. Input comes from the terminal, or from stdin when it is not one.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from langgraft.config import add_dataclass_args, from_namespace
from langgraft.decoding import (
    ModelOptions,
    SamplingOptions,
    TextStream,
    check_sampling,
    check_text,
    generate_ids,
)
from langgraft.errors import UserError

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ChatOptions(SamplingOptions, ModelOptions):
    template: str | None = None
    """Chat template (llama2, llama3, chatml); default: the one recorded with the model or dataset."""
    dataset: Path | None = None
    """A `prepare chat` output directory whose manifest.json names the template."""
    system: str | None = None
    """Initial system prompt (default: the template's own, e.g. Colossal's for llama2)."""


class ChatSession:
    """A conversation with a loaded model: history, system prompt, context-window fitting."""

    def __init__(self, model: Any, tokenizer: Any, template: Any, sampling: SamplingOptions,
                 system: str | None = None, context: int | None = None) -> None:  # fmt: skip
        template.check(tokenizer)
        self.model, self.tokenizer, self.template, self.sampling = (
            model,
            tokenizer,
            template,
            sampling,
        )
        self.system = system
        self.turns: list[dict[str, str]] = []
        limits = [
            getattr(model.config, "max_position_embeddings", None),
            tokenizer.model_max_length,
        ]
        self.context = context or min(x for x in limits if isinstance(x, int) and x > 0)
        self.stop_ids = template.stop_token_ids(tokenizer)
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in self.stop_ids:
            self.stop_ids.append(tokenizer.eos_token_id)
        self.last_prompt_ids: list[int] = []

    def messages(self, turns: list[dict[str, str]]) -> list[dict[str, str]]:
        head = [] if self.system is None else [{"role": "system", "content": self.system}]
        return head + turns

    def prompt_ids(self, user: str, notice: Callable[[str], None]) -> list[int] | None:
        """Ids for the next reply, dropping the oldest turns until a reply of max_new_tokens fits."""
        budget = self.context - self.sampling.max_new_tokens
        turns = [*self.turns, {"role": "user", "content": user}]
        dropped = 0
        while True:
            ids = self.template.render_prompt(self.messages(turns), self.tokenizer)
            if len(ids) <= budget or len(turns) == 1:
                break
            turns = turns[2:]  # one user turn and its reply
            dropped += 1
        if len(ids) > budget:
            notice(
                f"[this message needs {len(ids)} tokens; with a reply of up to "
                f"{self.sampling.max_new_tokens} it does not fit the {self.context}-token context]"
            )
            return None
        if dropped:
            notice(
                f"[dropped the {dropped} oldest exchange(s) to fit the {self.context}-token context]"
            )
            self.turns = turns[:-1]
        return ids

    def send(
        self, user: str, write: Callable[[str], None], notice: Callable[[str], None]
    ) -> str | None:
        ids = self.prompt_ids(user, notice)
        if ids is None:
            return None
        self.last_prompt_ids = ids
        stream = TextStream(self.tokenizer, write, self.stop_ids, lstrip=True)
        generate_ids(self.model, self.tokenizer, [ids], self.sampling, self.stop_ids, stream)
        # The reply is kept as text and re-tokenized next turn, exactly as a training row is.
        reply = stream.text
        self.turns += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        return reply


def repl(session: ChatSession, lines: Iterable[str], out: TextIO, err: TextIO, tty: bool) -> None:
    """Read user lines until /exit or end of input; stream each reply to `out`."""

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    def notice(text: str) -> None:
        err.write(text + "\n")
        err.flush()

    for n, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        try:
            check_text(line, f"input line {n}")
        except UserError as e:
            if not tty:
                raise
            notice(f"[{e}]")
            continue
        cmd, _, rest = line.strip().partition(" ")
        if cmd == "/exit":
            break
        if cmd == "/clear":
            session.turns = []
            notice("[conversation cleared]")
        elif cmd == "/system":
            session.system, session.turns = (rest.strip() or None), []
            notice("[system prompt set; conversation cleared]")
        elif line.strip():
            if tty:
                write("assistant> ")
            session.send(line, write, notice)
            write("\n")


def stdin_lines(stream: Any) -> Iterable[str]:
    """Lines of piped input, decoded strictly: bad bytes are an error naming the line."""
    for n, raw in enumerate(stream, 1):
        if isinstance(raw, str):  # a text stream (already decoded)
            yield raw
            continue
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(
                f"stdin:{n}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})"
            ) from None


def terminal_lines(prompt: str = "you> ") -> Iterable[str]:
    while True:
        try:
            yield input(prompt)
        except EOFError:
            return


def run(args: argparse.Namespace) -> int:
    from langgraft.decoding import load_model
    from langgraft.templates import TEMPLATE_NAMES, find_template_name, get_template

    opts = from_namespace(ChatOptions, args)
    check_sampling(opts)
    if opts.system is not None:
        check_text(opts.system, "--system")
    name = opts.template or find_template_name(opts.model, opts.dataset)
    if name is None:
        raise UserError(
            f"{opts.model}: no chat template recorded (langgraft.json has no chat_template); "
            f"pass --template ({', '.join(TEMPLATE_NAMES)}) or --dataset <prepare chat output>"
        )
    template = get_template(name)
    model, tokenizer = load_model(opts)
    session = ChatSession(model, tokenizer, template, opts, system=opts.system)
    tty = sys.stdin.isatty()
    if tty:
        print(f"chat template {name}; /clear, /system TEXT, /exit", file=sys.stderr)
    lines = terminal_lines() if tty else stdin_lines(getattr(sys.stdin, "buffer", sys.stdin))
    repl(session, lines, sys.stdout, sys.stderr, tty)
    return 0


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="chat with a model in the terminal (or over stdin), streaming replies",
        description=(
            "Chat REPL using the chat template the model was tuned with (from langgraft.json or "
            "the dataset manifest, or --template). Commands: /clear, /system TEXT, /exit. Reads "
            "stdin line by line when it is not a terminal."
        ),
    )
    add_dataclass_args(p, ChatOptions)
    p.set_defaults(func=run)
