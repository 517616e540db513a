"""`python -m lmviz <command> [TEXT | --file PATH] [--model NAME] [--json]`.

Each command computes one analysis with the same backend the pages use and
prints a readable table, or with --json one JSON object on stdout. Any
problem with the input ends the program with exit code 2 and a one-line
message on stderr, never a traceback.

To add a command: write `def add_<name>(commands, common)` that adds a
subparser (with `parents=[common]`) and sets `handler=` to a function
`(args) -> (json_object, readable_text)`; then list it in COMMANDS.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from lmviz.errors import LmvizError


def read_text(args, required: bool = True) -> str | None:
    """The text to analyse, from the TEXT argument or --file (UTF-8)."""
    if getattr(args, "file", None):
        path = Path(args.file)
        if not path.is_file():
            raise LmvizError(f"No such file: {args.file}")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise LmvizError(f"{args.file} is not UTF-8 text (byte {error.start} is not valid UTF-8).") from None
    if args.text is not None:
        return args.text
    if required:
        raise LmvizError("Give a text to analyse, as an argument or with --file PATH.")
    return None


def load_model(args):
    """The model named by --model, loading progress on stderr."""
    from lmviz import models

    return models.load(args.model, progress=lambda message: print(message, file=sys.stderr))


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain-text table of dict rows (what the readable output prints)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    return frame.to_string(index=False) if len(frame) else "(empty)"


def to_jsonable(value):
    """Tensors, numpy values and NaN/inf -> plain JSON values (NaN and inf become null)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------ commands


def add_tokens(commands, common) -> None:
    parser = commands.add_parser("tokens", parents=[common], help="the token ids and strings of a text")
    parser.set_defaults(handler=run_tokens)


def run_tokens(args):
    from lmviz.tokens import display_token, token_text
    from lmviz.trace import encode, max_tokens

    text = read_text(args)
    lm = load_model(args)
    ids = encode(lm, text)
    if len(ids) > max_tokens(lm):
        raise LmvizError(f"The text is {len(ids)} tokens long; {lm.name} takes at most {max_tokens(lm)} here.")
    with lm.lock:
        pieces = [token_text(lm.tokenizer, token_id) for token_id in ids]
        shown = [display_token(lm.tokenizer, token_id) for token_id in ids]
    result = {"model": lm.name, "text": text, "input_ids": ids, "tokens": pieces, "display": shown}
    rows = [{"pos": i, "id": token_id, "token": token} for i, (token_id, token) in enumerate(zip(ids, shown))]
    return result, f"{len(ids)} tokens ({lm.name})\n" + table(rows)


COMMANDS = [add_tokens]


def build_parser() -> argparse.ArgumentParser:
    from lmviz.models import DEFAULT_MODEL

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("text", nargs="?", help="the text (or use --file)")
    common.add_argument("--file", help="read the text from a UTF-8 file")
    common.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or directory (default {DEFAULT_MODEL})")
    common.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser = argparse.ArgumentParser(prog="python -m lmviz", description="Look inside a language model.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result, readable = args.handler(args)
    except LmvizError as error:
        print(f"lmviz: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(json.dumps(to_jsonable(result), ensure_ascii=False) if args.json else readable)
    return 0
