"""The command line: JSON output, readable tables, one-line errors with exit code 2."""

import json
import subprocess
import sys

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
