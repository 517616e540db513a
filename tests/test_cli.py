"""The command line: JSON output, readable tables, one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from lmviz.cli import main


def test_tokens_json(smollm, capsys):
    assert main(["tokens", "This weekend I plan to", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_ids"] == [1348, 16138, 339, 1252, 288]
    assert result["tokens"] == ["This", " weekend", " I", " plan", " to"]


def test_tokens_table_and_file(tiny_dirs, tmp_path, capsys):
    path = tmp_path / "text.txt"
    path.write_text("The capital of France is", encoding="utf-8")
    assert main(["tokens", "--file", str(path), "--model", tiny_dirs["gpt2"]]) == 0
    out = capsys.readouterr().out
    assert "tokens" in out and "pos" in out and "id" in out


def test_bad_inputs_exit_2_with_one_line(tiny_dirs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    not_utf8 = tmp_path / "latin1.txt"
    not_utf8.write_bytes("café".encode("latin-1"))
    cases = [
        ["tokens", "", "--model", tiny_dirs["gpt2"]],
        ["tokens", "x", "--model", "nobody/nothing"],
        ["tokens", "Paris " * 400, "--model", tiny_dirs["gpt2"]],
        ["tokens", "--file", str(not_utf8), "--model", tiny_dirs["gpt2"]],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("lmviz: ") and "Traceback" not in "".join(err)


def test_python_dash_m_entry_point(tiny_dirs):
    done = subprocess.run(
        [sys.executable, "-m", "lmviz", "tokens", "hello there", "--model", tiny_dirs["gpt2"], "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "".join(json.loads(done.stdout)["tokens"]) == "hello there"


def same_tokens(tokenizer, ids, tokens) -> bool:
    """`tokens` (nested like `ids`) are the exact text of each id, as the tokenizer decodes it alone; a piece
    of a UTF-8 character, which decodes to U+FFFD, must show its bytes as \\xNN instead."""
    if isinstance(ids, list):
        return len(ids) == len(tokens) and all(same_tokens(tokenizer, i, t) for i, t in zip(ids, tokens))
    decoded = tokenizer.decode([ids], clean_up_tokenization_spaces=False)
    return tokens == decoded if "\ufffd" not in decoded else "\\x" in tokens


def shown_with_dots(tokens, display) -> bool:
    """`display` is `tokens` with each space as '·' (checked where a token has no other invisible character)."""
    if isinstance(tokens, list):
        return len(tokens) == len(display) and all(shown_with_dots(t, d) for t, d in zip(tokens, display))
    return not tokens.replace(" ", "").isprintable() or display == tokens.replace(" ", "·")


@pytest.mark.parametrize("argv", [
    ["tokens"], ["sample", "--top-k", "5"], ["embed"], ["lens"], ["attention"], ["attribute"],
    ["ablate", "--layer", "0", "--head", "1"], ["loss"], ["beam"], ["fill-mask"],
    ["patch", "--corrupted", "the capital of france of", "--answer", "5", "--wrong", "9"], ["knockout"],
    ["saliency", "--method", "input_x_gradient"],
])
def test_json_tokens_are_exact_text_and_display_is_separate(argv, tiny_dirs, capsys):
    """One rule for every command: "tokens", "top_tokens" and "target_token" hold each token's exact text,
    display strings ('·' for a space) are under "display" / "top_display" / "target_display"."""
    from transformers import AutoTokenizer

    model = tiny_dirs["bert" if argv[0] == "fill-mask" else "gpt2"]
    text = "the capital [MASK] of france" if argv[0] == "fill-mask" else "the capital of france is"
    assert main([argv[0], text, "--model", model, "--json", *argv[1:]]) == 0
    out = json.loads(capsys.readouterr().out)
    tokenizer = AutoTokenizer.from_pretrained(model)
    pairs = [(out.get("input_ids", out.get("token_ids")), out.get("tokens"), out.get("display")),
             (out.get("top_ids"), out.get("top_tokens"), out.get("top_display")),
             (out.get("target_id"), out.get("target_token"), out.get("target_display"))]
    pairs += [(m["top_ids"], m["top_tokens"], m["top_display"]) for m in out.get("masks", [])]
    pairs += [(h["token_ids"], h["tokens"], None) for h in out.get("final", [])]
    checked = 0
    for ids, tokens, display in pairs:
        if tokens is None:
            continue
        assert same_tokens(tokenizer, ids, tokens)
        if display is not None:
            assert shown_with_dots(tokens, display)
        checked += 1
    assert checked >= 1 and (argv[0] != "loss" or out["display"])
    assert len(out["placement"]) == 1  # every command that runs a model says where it ran


def test_neurons_features_and_feature_steer_json(tiny_dirs, tmp_path, capsys):
    """The feature commands keep the token rule (exact text under *_tokens, shown text under *_display) and
    report what the pages show: neurons that sum to the MLP part, latents per position, CE, a steered run."""
    from transformers import AutoTokenizer

    from tests.test_sae import write_sae

    model, text = tiny_dirs["gpt2"], "the capital of france is"
    tokenizer = AutoTokenizer.from_pretrained(model)
    assert main(["neurons", text, "--model", model, "--layer", "1", "--top", "4", "--target", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target_id"] == 5 and same_tokens(tokenizer, 5, out["target_token"])
    assert [set(n) >= {"layer", "index", "activation", "contribution"} for n in out["neurons"]] == [True] * 4
    assert abs(out["sum"] - out["mlp_part"]) <= out["bound"]
    for row in out["neurons"]:
        for kind in ("promoted", "suppressed"):
            assert same_tokens(tokenizer, row[f"{kind}_ids"], row[f"{kind}_tokens"])
            assert shown_with_dots(row[f"{kind}_tokens"], row[f"{kind}_display"])
    sae = write_sae(tmp_path / "sae", 32, 24, "topk", "blocks.1.hook_resid_pre", k=3)
    assert main(["features", text, "--model", model, "--sae", str(sae), "--k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sae"] | {"folder": None} == {"name": "sae", "folder": None, "hook": "blocks.1.hook_resid_pre",
                                             "d_in": 32, "d_sae": 24, "architecture": "topk", "k": 3,
                                             "model_name": "tiny"}
    assert same_tokens(tokenizer, out["input_ids"], out["tokens"]) and shown_with_dots(out["tokens"], out["display"])
    assert len(out["top_features"]) == len(out["tokens"]) and all(
        len(top) == 2 and set(top[0]) == {"id", "activation"} for top in out["top_features"])
    assert {"explained_variance", "ce_loss_clean", "ce_loss_with_sae", "ce_loss_zero_ablation",
            "ce_recovered"} <= set(out) and out["ce_loss_clean"] > 0
    argv = ["feature-steer", text, "--model", model, "--sae", str(sae), "--feature", "2", "--alpha", "6",
            "--max-new-tokens", "4", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["new_ids"]) == len(out["unsteered_ids"]) == 4 and out["new_ids"] != out["unsteered_ids"]
    for kind in ("new", "unsteered"):
        assert same_tokens(tokenizer, out[f"{kind}_ids"], out[f"{kind}_tokens"])
        assert shown_with_dots(out[f"{kind}_tokens"], out[f"{kind}_display"])
    assert len(out["placement"]) == 1
    assert main(["features", text, "--model", model, "--sae", str(sae)]) == 0  # the readable table
    assert "explained variance" in capsys.readouterr().out


def test_feature_commands_refuse_in_one_line(tiny_dirs, tmp_path, capsys):
    from tests.test_sae import write_sae

    model = tiny_dirs["gpt2"]
    wide = write_sae(tmp_path / "wide", 64, 8, "topk", k=2)
    cases = [
        ["features", "hello", "--model", model, "--sae", "no-such-sae"],
        ["features", "hello", "--model", model, "--sae", str(wide)],
        ["feature-steer", "hello", "--model", model, "--sae", str(write_sae(tmp_path / "ok", 32, 8, k=2)),
         "--feature", "8", "--alpha", "1"],
        ["neurons", "hello", "--model", model, "--layer", "5"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("lmviz: ") and "Traceback" not in "".join(err)
