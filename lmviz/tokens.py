"""Token ids -> strings a person can read.

Two steps, kept apart:
- `token_text(tokenizer, id)`: the exact text piece a token stands for. A
  byte-level BPE token that holds part of a UTF-8 character decodes to U+FFFD
  on its own; we recover its raw bytes instead and show the missing ones as
  `\\xNN`, so that no two tokens look the same by accident.
- `visible(text)`: the piece with whitespace made visible: a space as `·`, a
  newline as `\\n`, a tab as `\\t`, other control characters as `\\xNN`.
Neither escapes HTML: do that (html.escape) wherever HTML is rendered.
"""

from __future__ import annotations

import unicodedata

from transformers.convert_slow_tokenizer import bytes_to_unicode

_BYTE_OF_CHAR = {char: byte for byte, char in bytes_to_unicode().items()}
SPACE_MARK = "·"


def is_byte_level(tokenizer) -> bool:
    """True for GPT-2-style byte-level BPE tokenizers (GPT-2, Llama-3, SmolLM, Qwen …)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and "ByteLevel" in repr(decoder)


def token_text(tokenizer, token_id: int) -> str:
    """The text one token stands for (leading spaces kept; partial UTF-8 bytes as \\xNN)."""
    text = tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
    if "\ufffd" not in text:
        return text
    raw = tokenizer.convert_ids_to_tokens(int(token_id))
    if raw is None:
        return text
    if is_byte_level(tokenizer) and all(char in _BYTE_OF_CHAR for char in raw):
        return bytes(_BYTE_OF_CHAR[char] for char in raw).decode("utf-8", errors="backslashreplace")
    return raw  # e.g. SentencePiece byte-fallback tokens such as <0xE2>


def visible(text: str) -> str:
    """Make whitespace and control characters visible: ' ' -> '·', newline -> '\\n'."""
    out = []
    for char in text:
        if char == " ":
            out.append(SPACE_MARK)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") and char != "\u200d":
            out.append(f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def display_token(tokenizer, token_id: int) -> str:
    """token_text made visible: what tables and charts label a token with."""
    return visible(token_text(tokenizer, token_id))


def display_tokens(tokenizer, token_ids, cache: dict[int, str] | None = None) -> list[str]:
    """display_token for every id in a sequence, decoding each distinct id once (pass `cache` to share
    the decoded ids between calls)."""
    cache = {} if cache is None else cache
    out = []
    for token_id in token_ids:
        token_id = int(token_id)
        if token_id not in cache:
            cache[token_id] = display_token(tokenizer, token_id)
        out.append(cache[token_id])
    return out


MARKDOWN_SPECIALS = set("\\`*_{}[]()#+-.!|~$<>:")


def markdown_safe(text: str) -> str:
    """A token made safe inside Markdown (Streamlit labels, st.markdown): every character Markdown or its
    LaTeX (`$`) could act on gets a backslash, so `**`, `$$` or a lone backslash show as themselves."""
    return "".join("\\" + char if char in MARKDOWN_SPECIALS else char for char in text)
