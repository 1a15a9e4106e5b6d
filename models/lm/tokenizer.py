"""Tokenizers from GGUF metadata or `tokenizer.json`, and chat templates rendered with jinja2."""

from __future__ import annotations

import contextvars
import datetime
import functools
import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors

from ppl.models.lm.architectures import PreTokenizerRule, pre_tokenizer_rules
from ppl.models.lm.errors import ModelLoadError

# GPT-2's byte-level pre-tokenizer; architectures add theirs (`Architecture.pre_tokenizers`).
GPT2_PRE_TOKENIZERS = {"gpt-2": PreTokenizerRule(), "default": PreTokenizerRule()}
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4


def gguf_pre_tokenizers() -> dict[str, PreTokenizerRule]:
    """The `tokenizer.ggml.pre` names this runtime reads, with their rules."""
    return {**pre_tokenizer_rules(), **GPT2_PRE_TOKENIZERS}


def _byte_level_pre_tokenizer(rule: PreTokenizerRule) -> pre_tokenizers.PreTokenizer:
    steps: list[pre_tokenizers.PreTokenizer] = []
    if rule.individual_digits:
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    if rule.split_pattern is None:
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    else:
        pattern = tokenizers.Regex(rule.split_pattern)
        steps.append(pre_tokenizers.Split(pattern, behavior="isolated"))
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    return steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)


@functools.cache
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's reversible byte -> printable-character map used by byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class Tokenizer:
    """A byte-level BPE tokenizer with its special tokens and chat template.

    `encode(text)` adds the beginning-of-sequence token where the checkpoint asks for one;
    chat prompts are rendered by `apply_chat_template` and encoded without it (the template
    writes its own).
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        eos_token_ids: Sequence[int],
        bos_token_id: int | None,
        chat_template: str | None,
        template_name: str = "the chat template",
    ) -> None:
        self.backend = backend
        self.template_name = template_name  # where errors say the template came from
        self.eos_token_ids = tuple(sorted(set(eos_token_ids)))
        self.bos_token_id = bos_token_id
        self.chat_template = chat_template

    @property
    def vocab_size(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    def token_bytes(self) -> list[bytes]:
        """The bytes each token id decodes to; special tokens decode to no bytes, as in
        `decode(..., skip_special_tokens=True)`, so they never complete a stop string."""
        table = _unicode_to_byte()
        special = {t.content for t in self.backend.get_added_tokens_decoder().values() if t.special}
        out = []
        for i in range(self.vocab_size):
            token = self.backend.id_to_token(i) or ""
            if token in special:
                out.append(b"")
            elif any(ch not in table for ch in token):  # an added token stored as plain text
                out.append(token.encode("utf-8"))
            else:
                out.append(bytes(table[ch] for ch in token))
        return out

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """Render the checkpoint's own chat template for `messages` ({"role", "content"})."""
        if not self.chat_template:
            raise ValueError("this checkpoint has no chat template; pass a raw prompt instead")
        bos = self.id_to_token(self.bos_token_id) if self.bos_token_id is not None else ""
        eos = self.id_to_token(self.eos_token_ids[0]) if self.eos_token_ids else ""
        return render_template(
            self.chat_template,
            self.template_name,
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=bos or "",
            eos_token=eos or "",
        )

    @classmethod
    def from_gguf_fields(cls, fields: dict[str, Any]) -> Tokenizer:
        """Build from `tokenizer.ggml.*` metadata (values already decoded to Python objects)."""
        model = fields.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ModelLoadError(
                f"unsupported GGUF tokenizer model {model!r}; only byte-level BPE ('gpt2') is "
                "supported (SmolLM2, Llama 3 and Qwen2 use it)"
            )
        tokens: list[str] = fields["tokenizer.ggml.tokens"]
        merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
        types: list[int] = fields.get("tokenizer.ggml.token_type", [1] * len(tokens))
        pre = str(fields.get("tokenizer.ggml.pre", "default"))
        rules = gguf_pre_tokenizers()
        if pre not in rules:
            raise ModelLoadError(
                f"unsupported GGUF pre-tokenizer {pre!r}; supported: {', '.join(sorted(rules))}"
            )
        backend = tokenizers.Tokenizer(
            models.BPE(
                vocab={t: i for i, t in enumerate(tokens)},
                merges=merges,
                ignore_merges=rules[pre].ignore_merges,
            )
        )
        backend.pre_tokenizer = _byte_level_pre_tokenizer(rules[pre])
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens(
            [
                tokenizers.AddedToken(t, special=True, normalized=False)
                for t, kind in zip(tokens, types, strict=True)
                if kind == TOKEN_TYPE_CONTROL
            ]
        )
        backend.add_tokens(
            [
                tokenizers.AddedToken(t, special=False, normalized=False)
                for t, kind in zip(tokens, types, strict=True)
                if kind == TOKEN_TYPE_USER_DEFINED
            ]
        )
        bos = fields.get("tokenizer.ggml.bos_token_id")
        if fields.get("tokenizer.ggml.add_bos_token", False) and bos is not None:
            bos_text = tokens[bos]
            backend.post_processor = processors.TemplateProcessing(
                single=f"{bos_text} $A",
                pair=f"{bos_text} $A {bos_text} $B",
                special_tokens=[(bos_text, bos)],
            )
        eos = [
            fields[k]
            for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
            if k in fields
        ]
        return cls(
            backend,
            eos_token_ids=eos,
            bos_token_id=bos,
            chat_template=fields.get("tokenizer.chat_template"),
        )

    @classmethod
    def from_directory(cls, directory: str | Path) -> Tokenizer:
        """Build from a Hugging Face checkpoint directory (`tokenizer.json` and its configs)."""
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(f"no tokenizer.json in {directory}")
        backend = tokenizers.Tokenizer.from_file(str(path))
        config = _read_json(directory / "tokenizer_config.json")
        generation = _read_json(directory / "generation_config.json")
        model_config = _read_json(directory / "config.json")

        def token_id(value: Any) -> int | None:
            if isinstance(value, dict):
                value = value.get("content")
            return backend.token_to_id(value) if isinstance(value, str) else None

        eos: list[int] = []
        for source in (generation.get("eos_token_id"), model_config.get("eos_token_id")):
            if isinstance(source, int):
                eos.append(source)
            elif isinstance(source, list):
                eos.extend(int(x) for x in source)
        if (tid := token_id(config.get("eos_token"))) is not None:
            eos.append(tid)
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: take the default
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        name = f"the chat template of {directory / 'tokenizer_config.json'}"
        if template is None and (directory / "chat_template.jinja").is_file():
            template = (directory / "chat_template.jinja").read_text()
            name = f"the chat template {directory / 'chat_template.jinja'}"
        return cls(
            backend,
            eos_token_ids=eos,
            bos_token_id=token_id(config.get("bos_token")),
            chat_template=template,
            template_name=name,
        )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{path} is not valid JSON: {error}") from error


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


MAX_TEMPLATE_CHARS = 1_000_000  # a rendered chat prompt far beyond any model's context
MAX_TEMPLATE_SECONDS = 1.0
MAX_TEMPLATE_RANGE = 100_000


_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("template_deadline")


class _TimedRange:
    """A template's `range`: at most MAX_TEMPLATE_RANGE items, and iterating it checks the
    render's deadline every 1024 items, so loops that write nothing are bounded in time too."""

    def __init__(self, *args: int) -> None:
        self._range = range(*args)
        if len(self._range) > MAX_TEMPLATE_RANGE:
            raise jinja2.TemplateError(
                f"range of {len(self._range)} items exceeds {MAX_TEMPLATE_RANGE}"
            )

    def __len__(self) -> int:
        return len(self._range)

    def __contains__(self, item: object) -> bool:
        return item in self._range

    def __getitem__(self, index: int) -> int:
        return self._range[index]

    def __iter__(self) -> Iterator[int]:
        deadline = _DEADLINE.get(math.inf)
        for count, item in enumerate(self._range):
            if count % 1024 == 0 and time.monotonic() > deadline:
                raise jinja2.TemplateError(f"took over {MAX_TEMPLATE_SECONDS} s to render")
            yield item


_bounded_range = _TimedRange


def render_template(source: str, name: str, **context: Any) -> str:
    """Render a chat template in jinja2's immutable sandbox, streamed under limits.

    Fails with a ValueError naming `name` and the cause when the template does not parse,
    raises (`raise_exception`), trips the sandbox, calls `range` with over
    MAX_TEMPLATE_RANGE items, writes over MAX_TEMPLATE_CHARS characters, or renders for
    over MAX_TEMPLATE_SECONDS (checked between output chunks, so memory stays bounded).
    """
    try:
        template = _compile_template(source)
    except jinja2.TemplateSyntaxError as error:
        raise ValueError(f"{name} does not parse: {error} (line {error.lineno})") from error
    start, size, parts = time.monotonic(), 0, []
    token = _DEADLINE.set(start + MAX_TEMPLATE_SECONDS)
    try:
        for chunk in template.generate(**context):
            size += len(chunk)
            parts.append(chunk)
            if size > MAX_TEMPLATE_CHARS:
                raise ValueError(f"{name} renders over {MAX_TEMPLATE_CHARS} characters")
            if time.monotonic() - start > MAX_TEMPLATE_SECONDS:
                raise ValueError(f"{name} took over {MAX_TEMPLATE_SECONDS} s to render")
    except jinja2.sandbox.SecurityError as error:
        raise ValueError(f"{name} tripped the jinja2 sandbox: {error}") from error
    except jinja2.TemplateError as error:
        raise ValueError(f"{name} raised an error while rendering: {error}") from error
    except (
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        ZeroDivisionError,
        RecursionError,
    ) as error:
        raise ValueError(f"{name} failed while rendering: {error!r}") from error
    finally:
        _DEADLINE.reset(token)
    return "".join(parts)


@functools.lru_cache(maxsize=16)
def _compile_template(source: str) -> jinja2.Template:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["range"] = _bounded_range
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent)
    return env.from_string(source)
