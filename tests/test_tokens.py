"""Token display: visible whitespace, byte pieces instead of U+FFFD."""

from lmviz.tokens import display_tokens, token_text, visible


def test_visible_marks_whitespace_and_controls():
    assert visible(" to\n\tx\x07") == "·to\\n\\tx\\x07"


def test_embedded_tokens_display(smollm):
    ids = smollm.tokenizer("This weekend I plan to")["input_ids"]
    assert display_tokens(smollm.tokenizer, ids) == ["This", "·weekend", "·I", "·plan", "·to"]


def test_partial_utf8_tokens_show_their_bytes(smollm):
    ids = smollm.tokenizer(" 😀")["input_ids"]
    pieces = [token_text(smollm.tokenizer, token_id) for token_id in ids]
    assert all("\ufffd" not in piece for piece in pieces)
    # Put back together, the pieces are the bytes of the text.
    raw = b"".join(piece.encode("utf-8").decode("unicode_escape").encode("latin-1") for piece in pieces)
    assert raw.decode("utf-8") == " 😀"
