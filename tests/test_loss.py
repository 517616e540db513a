"""lmviz.analyses.loss against independent computations written here with plain torch / transformers."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

from lmviz import cli
from lmviz.analyses import compare, loss, windows
from lmviz.present.tables import loss as tables
from lmviz.forward.cache import CACHE
from lmviz.cli import main
from lmviz.errors import LmvizError
from lmviz.present.plots import loss as loss_plots
from tests import bounds
from tests.tiny_models import CORPUS

SHORT = "This weekend I plan to visit Paris with my friends."
LONG = " ".join(CORPUS[:6]) * 2  # a few hundred tokens for the tiny tokenizers


def ids_of(lm, text: str) -> torch.Tensor:
    return torch.tensor(lm.tokenizer(text)["input_ids"])


def reference_scores(model, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NLL, rank and argmax of tokens 1.. of one window, the textbook way: full logits, cross_entropy, sort."""
    nll, rank, top, _ = reference_scores_and_bound(model, window)
    return nll, rank, top


def reference_scores_and_bound(model, window: torch.Tensor):
    """reference_scores, plus (len - 1,) the bound on lmviz's float32 NLL against them (tests/bounds.py)."""
    with torch.no_grad():
        logits = model(window[None]).logits[0, :-1].double()  # (len - 1, vocab)
    targets = window[1:]
    nll = F.cross_entropy(logits, targets, reduction="none")
    order = logits.argsort(dim=-1, descending=True)
    rank = (order == targets[:, None]).nonzero()[:, 1] + 1  # position of the target in the sorted list
    return nll, rank, logits.argmax(dim=-1), bounds.float32_nll_bound(logits)


def brute_force_windows(model, ids: torch.Tensor, max_length: int, stride: int):
    """The sliding-window recipe spelled out: window k starts at k * step; it scores what the last window did
    not reach. Returns {position: (nll, context)}; asserts no position is scored twice."""
    step = min(stride, max_length - 1)
    scored: dict[int, tuple[float, int]] = {}
    previous_end, begin = 1, 0
    while previous_end < len(ids):
        end = min(begin + max_length, len(ids))
        nll, _, _, bound = reference_scores_and_bound(model, ids[begin:end])
        for position in range(previous_end, end):
            assert position not in scored
            scored[position] = (float(nll[position - begin - 1]), position - begin, float(bound[position - begin - 1]))
        previous_end, begin = end, begin + step
    return scored


# ------------------------------------------------------------------ per token, one window


@pytest.mark.parametrize("fixture", ["tiny_gpt2_f64", "tiny_llama_f64"])
def test_per_token_scores_match_textbook_computation(fixture, request):
    lm = request.getfixturevalue(fixture)
    report = loss.loss_report(lm, SHORT)
    ids = ids_of(lm, SHORT)
    nll, rank, top, bound = reference_scores_and_bound(lm.model, ids)
    assert report.input_ids.tolist() == ids.tolist()
    assert report.scored == len(ids) - 1
    assert ((report.nll - nll).abs() <= bound).all()
    with torch.no_grad():
        logits = lm.model(ids[None]).logits[0, :-1].double()
    # ranks and the top guess: as in float64, unless logits are within float32 rounding of each other
    gap = 2 * bounds.U32 * logits.abs().amax(-1, keepdim=True)
    target = logits.gather(1, ids[1:, None])
    assert (((logits > target + gap).sum(-1) + 1 <= report.rank) & (report.rank <= (logits > target - gap).sum(-1) + 1)).all()
    assert ((logits.gather(1, report.top_ids[:, None]) - logits.gather(1, top[:, None])).abs() <= gap).all()
    assert ((report.probs - torch.exp(-nll)).abs() <= bounds.prob_bound(torch.exp(-nll), bound)).all()
    assert report.context.tolist() == list(range(1, len(ids)))
    # the model's own loss, computed by transformers from labels= (in float64 here)
    with torch.no_grad():
        own = float(lm.model(ids[None], labels=ids[None]).loss)
    assert abs(report.model_loss - own) <= bounds.FLOAT64_SLACK * (1 + own)
    assert abs(report.mean_nll - own) <= float(bound.max())


def test_aggregates_follow_their_formulas(tiny_llama_bos):
    lm = tiny_llama_bos
    text = "The capital of France is Paris, and the capital of England is London."
    report = loss.loss_report(lm, text)
    ids = ids_of(lm, text)
    assert ids[0] == lm.tokenizer.bos_token_id  # BOS first, so every word of the text is scored
    reference, _, _, bound = reference_scores_and_bound(lm.model, ids)
    assert ((report.nll - reference).abs() <= bound).all()
    nll, rank = report.nll, report.rank  # the formulas, from lmviz's own per-token numbers, in float64
    n = len(ids) - 1
    assert report.scored == n
    assert report.log_likelihood == pytest.approx(-float(nll.sum()), rel=1e-12)
    assert report.mean_nll == pytest.approx(float(nll.mean()), rel=1e-12)
    assert report.perplexity == pytest.approx(math.exp(float(nll.mean())), rel=1e-12)
    bits = nll / math.log(2)
    assert report.perplexity_base2 == pytest.approx(2 ** float(bits.mean()), rel=1e-12)
    assert report.perplexity_base2 == pytest.approx(report.perplexity, rel=1e-9)  # same number, either base
    assert report.accuracy == pytest.approx(float((rank == 1).double().mean()))
    assert report.n_bytes == len(text.encode("utf-8"))
    assert report.bits_per_byte == pytest.approx(float(bits.sum()) / len(text.encode("utf-8")), rel=1e-12)
    assert report.n_words == len(text.split())
    assert report.word_perplexity == pytest.approx(math.exp(float(nll.sum()) / len(text.split())), rel=1e-12)
    values = {m.key: m.value for m in tables.loss_metrics(report)}
    assert values["mean_nll"] == report.mean_nll and values["model_loss"] == report.model_loss


def test_bytes_exclude_the_unscored_first_token(tiny_gpt2):
    text = "héllo wörld, naïve café"
    report = loss.loss_report(tiny_gpt2, text)
    first = tiny_gpt2.tokenizer.decode(ids_of(tiny_gpt2, text)[:1])
    assert text.startswith(first)
    assert report.n_bytes == len(text.encode("utf-8")) - len(first.encode("utf-8"))


def test_embedded_model_against_its_own_loss(smollm):
    text = "This weekend I plan to visit"
    report = loss.loss_report(smollm, text)
    ids = ids_of(smollm, text)
    assert ids.tolist()[:5] == [1348, 16138, 339, 1252, 288]  # "This weekend I plan to", then " visit"
    with torch.no_grad():
        output = smollm.model(ids[None], labels=ids[None], output_hidden_states=True)
    own = float(output.loss)
    # one forward pass, the same on both sides; lmviz recomputes the head (another order), and both sides take
    # a float32 log-softmax and a float32 mean over the tokens
    logits = output.logits[0, :-1].float()
    head = smollm.head.error_bound(output.hidden_states[-1][0, :-1]).amax(-1)
    eps = float((bounds.log_softmax_bound(logits, head) + bounds.log_softmax_bound(logits)).max())
    assert abs(report.mean_nll - own) <= eps + bounds.sum_bound(len(ids), own)
    assert abs(report.model_loss - own) <= 2 * float(bounds.log_softmax_bound(logits).max()) + bounds.sum_bound(len(ids), own)
    assert report.tokens[-1] == "·visit" and report.rank[-1] == 1  # " visit" is the model's top guess
    assert report.top_tokens[-1] == "·visit"


def test_gemma_against_its_own_loss(gemma):
    """Gemma-3 270M, whose tokenizer adds <bos>: every token of the text is scored."""
    text = "The capital of France is Paris, and the capital of Italy is Rome."
    report = loss.loss_report(gemma, text)
    ids = ids_of(gemma, text)
    assert ids[0] == gemma.tokenizer.bos_token_id and report.scored == len(ids) - 1
    with torch.no_grad():
        output = gemma.model(ids[None], labels=ids[None], output_hidden_states=True)
    own = float(output.loss)
    logits = output.logits[0, :-1].float()
    head = gemma.head.error_bound(output.hidden_states[-1][0, :-1]).amax(-1)
    eps = float((bounds.log_softmax_bound(logits, head) + bounds.log_softmax_bound(logits)).max())
    assert abs(report.mean_nll - own) <= eps + bounds.sum_bound(len(ids), own)
    assert abs(report.model_loss - own) <= 2 * float(bounds.log_softmax_bound(logits).max()) + bounds.sum_bound(len(ids), own)


def test_cli_compare_matches_plain_transformers(smollm, gemma, capsys):
    """`python -m lmviz compare TEXT --models smollm2-135m,gemma3-270m --json`: each perplexity equals
    exp(model(ids, labels=ids).loss) from plain transformers, within the float32 bounds."""
    text = "The capital of France is Paris, and the capital of Italy is Rome."
    assert cli.main(["compare", text, "--models", "smollm2-135m,gemma3-270m", "--no-check", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["model"] for row in out["models"]] == ["smollm2-135m", "gemma3-270m"]
    for row, lm in zip(out["models"], (smollm, gemma)):
        ids = ids_of(lm, text)
        with torch.no_grad():
            logits = lm.model(ids[None]).logits[0, :-1].double()
        nll = -torch.log_softmax(logits, -1).gather(1, ids[1:, None])[:, 0]  # float64, from the model's logits
        eps = float(bounds.log_softmax_bound(logits).max()) + bounds.sum_bound(len(ids), float(nll.mean()))
        assert row["scored"] == len(ids) - 1 and abs(row["mean_nll"] - float(nll.mean())) <= 2 * eps
        assert abs(math.log(row["perplexity"]) - float(nll.mean())) <= 2 * eps
        bytes_scored = len(text.encode()) - len(lm.tokenizer.decode(ids[:1], skip_special_tokens=True).encode())
        assert row["bytes"] == bytes_scored
        assert abs(row["bits_per_byte"] - float(nll.sum()) / math.log(2) / bytes_scored) <= 2 * eps * len(ids)
    assert out["same_tokens"] is False and "".join(w["word"] for w in out["per_word"]) == text
    assert cli.main(["compare", text, "--models", "smollm2-135m"]) == 2
    assert "at least two models" in capsys.readouterr().err


def assert_nll_matches(nll: torch.Tensor, expected: dict) -> None:
    """lmviz's per-token NLL (positions 1..) against brute_force_windows, each within its float32 bound."""
    positions = range(1, len(nll) + 1)
    reference = torch.tensor([expected[p][0] for p in positions], dtype=torch.float64)
    bound = torch.tensor([expected[p][2] for p in positions], dtype=torch.float64)
    assert ((nll.double() - reference).abs() <= bound).all()


def test_embedded_model_sliding_window_against_brute_force(smollm_f64):
    """Windows batched by lmviz against one window at a time: in float64, so batching can't matter."""
    text = loss.sample_texts()["long"][:600]
    ids = ids_of(smollm_f64, text)
    report = loss.loss_report(smollm_f64, text, max_length=48, stride=20)
    expected = brute_force_windows(smollm_f64.model, ids, 48, 20)
    assert sorted(expected) == list(range(1, len(ids)))
    assert_nll_matches(report.nll, expected)
    assert report.context.tolist() == [expected[p][1] for p in range(1, len(ids))]


# ------------------------------------------------------------------ sliding windows


@pytest.mark.parametrize("max_length,stride", [(32, 12), (32, 32), (17, 1), (40, 39), (128, 64)])
def test_sliding_windows_score_every_token_once(tiny_gpt2_f64, max_length, stride):
    ids = ids_of(tiny_gpt2_f64, LONG)
    assert len(ids) > 128  # longer than the tiny model's context: windows are needed
    report = loss.loss_report(tiny_gpt2_f64, LONG, max_length=max_length, stride=stride)
    expected = brute_force_windows(tiny_gpt2_f64.model, ids, max_length, stride)
    assert sorted(expected) == list(range(1, len(ids)))  # every token after the first, exactly once
    assert report.scored == len(ids) - 1
    assert_nll_matches(report.nll, expected)
    assert report.context.tolist() == [expected[p][1] for p in range(1, len(ids))]
    assert all(w.length <= max_length for w in report.windows)
    assert int(report.context.min()) >= 1


def test_sliding_window_matches_the_models_own_loss_per_window(tiny_gpt2_f64):
    """The documentation's recipe (labels=, context set to -100), with the tokens counted directly; in float64
    so that lmviz's batching of the windows can't matter."""
    tiny_gpt2 = tiny_gpt2_f64
    ids = ids_of(tiny_gpt2, LONG)
    max_length, stride = 64, 24
    total, count, previous_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        window = ids[begin:end][None]
        labels = window.clone()
        labels[:, : -(end - previous_end)] = -100
        with torch.no_grad():
            mean = float(tiny_gpt2.model(window, labels=labels).loss)
        scored = int((labels[:, 1:] != -100).sum())  # the model shifts labels by one: count what it scores
        total, count, previous_end = total + mean * scored, count + scored, end
        if end == len(ids):
            break
    report = loss.loss_report(tiny_gpt2, LONG, max_length=max_length, stride=stride)
    assert report.scored == count == len(ids) - 1
    with torch.no_grad():  # the largest logit anywhere sizes lmviz's float32 rounding of every NLL
        biggest = float(tiny_gpt2.model(ids[None, :64]).logits.abs().max())
    eps = float(bounds.float32_nll_bound(torch.full((tiny_gpt2.vocab_size,), biggest, dtype=torch.float64)))
    assert abs(report.mean_nll - total / count) <= eps
    assert abs(report.model_loss - total / count) <= bounds.FLOAT64_SLACK * (1 + total / count)


def test_stride_equal_to_max_length_overlaps_by_one_token():
    planned = windows.plan_windows(20, 8, 8)
    assert [(w.begin, w.end, w.first) for w in planned] == [(0, 8, 1), (7, 15, 8), (14, 20, 15)]
    covered = [p for w in planned for p in range(w.first, w.end)]
    assert covered == list(range(1, 20))


def test_long_windows_go_through_the_head_in_chunks(tiny_gpt2_f64, monkeypatch):
    """Windows too big for the logits budget use the final hidden states and the model's head, chunked."""
    tiny_gpt2 = tiny_gpt2_f64
    ids = ids_of(tiny_gpt2, LONG)
    monkeypatch.setattr(windows, "BATCH_LOGITS_BUDGET", 1000)
    monkeypatch.setattr(windows, "TARGETS_PER_CHUNK", 7)
    CACHE.clear()
    report = loss.loss_report(tiny_gpt2, LONG, max_length=50, stride=30, cross_check=False)
    CACHE.clear()
    expected = brute_force_windows(tiny_gpt2.model, ids, 50, 30)
    assert_nll_matches(report.nll, expected)
    nll, rank, top = reference_scores(tiny_gpt2.model, ids[:50])
    assert report.rank[:49].tolist() == rank.tolist() and report.top_ids[:49].tolist() == top.tolist()


# ------------------------------------------------------------------ bad input


def test_bad_input_is_explained(tiny_gpt2, tiny_bert):
    with pytest.raises(LmvizError, match="empty"):
        loss.loss_report(tiny_gpt2, "  ")
    one = next(w for w in ("A", "a", "T") if len(ids_of(tiny_gpt2, w)) == 1)
    with pytest.raises(LmvizError, match="nothing to score"):
        loss.loss_report(tiny_gpt2, one)
    with pytest.raises(LmvizError, match="stride must be a positive"):
        loss.loss_report(tiny_gpt2, SHORT, max_length=16, stride=0)
    with pytest.raises(LmvizError, match="larger than max-length"):
        loss.loss_report(tiny_gpt2, SHORT, max_length=16, stride=17)
    with pytest.raises(LmvizError, match="above the model's context of 128"):
        loss.loss_report(tiny_gpt2, SHORT, max_length=129)
    with pytest.raises(LmvizError, match="at least 2"):
        loss.loss_report(tiny_gpt2, SHORT, max_length=1, stride=1)
    with pytest.raises(LmvizError, match="masked model"):
        loss.loss_report(tiny_bert, SHORT)


# ------------------------------------------------------------------ (b) two models


def _words_by_hand(text: str, offsets, nll) -> dict[int, float]:
    """Word index of every character (whitespace belongs to the word before it), then token NLL summed
    into the word of the token's last character."""
    owner, word = [], -1
    for i, char in enumerate(text):
        if not char.isspace() and (i == 0 or text[i - 1].isspace()):
            word += 1
        owner.append(max(word, 0))
    sums: dict[int, float] = {}
    for position, (start, end) in enumerate(offsets):
        if end > start and position > 0:
            sums[owner[end - 1]] = sums.get(owner[end - 1], 0.0) + float(nll[position - 1])
    return sums


def test_two_models_with_different_vocabularies_compare_per_word(tiny_gpt2, tiny_llama_bos):
    text = "The capital of France is Paris, and naïve café 😀 too."
    a, b = loss.loss_report(tiny_gpt2, text), loss.loss_report(tiny_llama_bos, text)
    assert len(tiny_gpt2.tokenizer) != len(tiny_llama_bos.tokenizer)
    comparison = compare.compare_models(a, b)
    assert not comparison.same_tokens and tables.token_comparison_table(comparison) is None
    assert "".join(comparison.words) == text
    assert len(comparison.words) == len(text.split())
    for report, nll in ((a, comparison.nll_a), (b, comparison.nll_b)):
        encoded = (tiny_gpt2 if report is a else tiny_llama_bos).tokenizer(text, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        expected = _words_by_hand(text, offsets, report.nll)
        for word, value in expected.items():
            assert float(nll[word]) == pytest.approx(value, abs=1e-9)
        assert sum(expected.values()) == pytest.approx(report.total_nll, rel=1e-9)  # words add up to the text
    # gpt2 has no BOS: its first word's first token is not scored; the BOS model scores every word
    assert not bool(comparison.complete_a[0]) and bool(comparison.complete_b.all())
    assert comparison.both.tolist() == [False] + [True] * (len(comparison.words) - 1)
    assert comparison.bits_per_byte_b == pytest.approx(b.total_nll / math.log(2) / len(text.encode()), rel=1e-9)
    diff = comparison.diff
    assert math.isnan(float(diff[0]))
    torch.testing.assert_close(diff[1:], comparison.nll_b[1:] - comparison.nll_a[1:])
    html_text = loss_plots.diff_html(comparison)
    assert "caf" in html_text and "<script" not in html_text


def test_two_models_with_one_tokenizer_compare_per_token(tiny_gpt2_f64, tiny_llama_f64):
    a, b = loss.loss_report(tiny_gpt2_f64, SHORT), loss.loss_report(tiny_llama_f64, SHORT)
    comparison = compare.compare_models(a, b)
    assert comparison.same_tokens
    frame = tables.token_comparison_table(comparison)
    ids = ids_of(tiny_gpt2_f64, SHORT)
    expected_a, _, _, bound_a = reference_scores_and_bound(tiny_gpt2_f64.model, ids)
    expected_b, _, _, bound_b = reference_scores_and_bound(tiny_llama_f64.model, ids)
    assert ((torch.tensor(frame["nll A (nats)"].tolist()) - expected_a).abs() <= bound_a).all()
    difference = torch.tensor(frame["B - A (nats)"].tolist()) - (expected_b - expected_a)
    assert (difference.abs() <= bound_a + bound_b).all()


def test_compare_needs_one_text(tiny_gpt2):
    with pytest.raises(LmvizError, match="different texts"):
        compare.compare_models(loss.loss_report(tiny_gpt2, SHORT), loss.loss_report(tiny_gpt2, SHORT + " Yes."))


# ------------------------------------------------------------------ (c) by layer, (d) context


@pytest.mark.parametrize("normalize", [True, False])
def test_loss_by_layer_against_hand_made_lens(tiny_llama, normalize):
    result = loss.layer_loss(tiny_llama, SHORT, normalize=normalize)
    ids = ids_of(tiny_llama, SHORT)
    model = tiny_llama.model
    with torch.no_grad():
        out = model(ids[None], output_hidden_states=True)
        rows = []
        for layer, hidden in enumerate(out.hidden_states):
            if layer == len(out.hidden_states) - 1:
                logits = out.logits[0]  # the model's own output, last row
            else:
                h = model.model.norm(hidden[0]) if normalize else hidden[0]
                logits = model.lm_head(h)
            rows.append(F.cross_entropy(logits[:-1].double(), ids[1:], reduction="none"))
    expected = torch.stack(rows)
    assert result.nll.shape == (tiny_llama.n_layers + 1, len(ids) - 1)
    # the same hidden states; the head rounded in another order (tests/bounds.py), at every layer
    with torch.no_grad():
        inputs = [model.model.norm(h[0]) if normalize else h[0] for h in out.hidden_states[:-1]] + [out.hidden_states[-1][0]]
        error = torch.stack([tiny_llama.head.error_bound(h).amax(-1) for h in inputs])
        logits = torch.stack([model.lm_head(h) for h in inputs])[:, :-1]
    eps = bounds.log_softmax_bound(logits, error[:, :-1]) + bounds.log_softmax_bound(logits)
    assert ((result.nll - expected).abs() <= eps).all()
    assert abs(float(result.mean_nll[-1]) - loss.loss_report(tiny_llama, SHORT).mean_nll) <= 2 * float(eps[-1].max())
    assert list(tables.layer_loss_table(result)["layer"]) == list(range(tiny_llama.n_layers + 1))


def test_context_curve_with_stride_one_is_exact(tiny_gpt2_f64):
    tiny_gpt2 = tiny_gpt2_f64  # float64: the curve batches windows, the reference runs them one by one
    text = " ".join(CORPUS[:2])
    ids = ids_of(tiny_gpt2, text)
    curve = loss.context_curve(tiny_gpt2, text, lengths=[2, 5, len(ids)], stride_fraction=1e-9)
    assert curve.strides == (1, 1, 1)
    for w, mean in zip(curve.lengths, curve.mean_nll):
        nlls, worst = [], 0.0
        for i in range(1, len(ids)):  # token i sees exactly the min(i, w - 1) tokens before it
            window = ids[max(0, i - w + 1): i + 1]
            nll, _, _, bound = reference_scores_and_bound(tiny_gpt2.model, window)
            nlls.append(float(nll[-1]))
            worst = max(worst, float(bound[-1]))
        assert abs(mean - sum(nlls) / len(nlls)) <= worst
        last_worst = worst
    assert abs(curve.mean_nll[-1] - loss.loss_report(tiny_gpt2, text).mean_nll) <= 2 * last_worst
    assert curve.scored == len(ids) - 1


def test_context_curve_defaults_and_limit(tiny_gpt2):
    curve = loss.context_curve(tiny_gpt2, LONG, limit=100)
    assert curve.n_tokens == 100 and curve.lengths == (2, 4, 8, 16, 32, 64, 100)
    assert curve.strides[:3] == (1, 2, 4)
    assert curve.mean_context[-1] == pytest.approx(sum(range(1, 100)) / 99)
    with pytest.raises(LmvizError, match="stride fraction"):
        loss.context_curve(tiny_gpt2, LONG, stride_fraction=0)


# ------------------------------------------------------------------ words, samples, pictures


def test_word_spans_tile_the_text():
    text = "  Hello,  world!\n\nNew line "
    spans = compare.word_spans(text)
    assert "".join(text[s:e] for s, e in spans) == text
    assert [text[s:e].strip() for s, e in spans] == text.split()
    offsets = [(0, 0), (2, 7), (7, 8), (8, 10), (10, 15), (15, 16), (16, 18), (18, 21)]
    assert compare.token_words(offsets, spans) == [-1, 0, 0, 0, 1, 1, 1, 2]


def test_sample_texts():
    samples = loss.sample_texts()
    assert len(samples["long"].split()) > 3000
    assert sorted(samples["normal"].rstrip(".").split()) == sorted(samples["scrambled"].rstrip(".").split())
    assert samples["normal"] != samples["scrambled"]


def test_surprisal_html_escapes_and_keeps_the_text(tiny_gpt2):
    text = "<b>bold</b> & <script>alert(1)</script> 😀"
    report = loss.loss_report(tiny_gpt2, text)
    for mode in ("surprisal", "rank"):
        page = loss_plots.surprisal_html(report, mode)
        assert "<script>" not in page and "<b>" not in page
        visible_text = re.sub(r"<[^>]+>", "", page)
        import html as html_module
        assert html_module.unescape(visible_text) == text  # every character once, in order
    figure = loss_plots.surprisal_figure(report)
    assert all("<b>" not in str(t) for t in figure.data[0].hovertext)


def test_frame_has_one_row_per_token(tiny_gpt2):
    report = loss.loss_report(tiny_gpt2, SHORT)
    frame = tables.loss_table(report)
    assert len(frame) == report.n_tokens
    assert math.isnan(frame["nll (nats)"][0])
    assert frame["nll (nats)"][1:].tolist() == pytest.approx(report.nll.tolist())


# ------------------------------------------------------------------ CLI


def test_cli_loss_json(tiny_dirs, capsys):
    code = main(["loss", LONG, "--model", tiny_dirs["gpt2"], "--max-length", "64", "--stride", "32", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    from lmviz.model import models

    lm = models.load(tiny_dirs["gpt2"])
    ids = ids_of(lm, LONG)
    assert len(out["tokens"]) == len(ids) and out["scored"] == len(ids) - 1 == len(out["nll"])
    report = loss.loss_report(lm, LONG, max_length=64, stride=32)  # checked against brute force above
    assert out["nll"] == report.nll.tolist() and out["scored"] == report.scored
    assert out["mean_nll"] == pytest.approx(sum(out["nll"]) / len(out["nll"]), rel=1e-9)
    assert out["perplexity"] == pytest.approx(math.exp(out["mean_nll"]), rel=1e-9)
    assert out["bits_per_byte"] > 0


def test_cli_loss_readable_and_errors(tiny_dirs, tmp_path, capsys):
    assert main(["loss", SHORT, "--model", tiny_dirs["gpt2"]]) == 0
    out = capsys.readouterr().out
    from lmviz.model import models

    tokens = loss.loss_report(models.load(tiny_dirs["gpt2"]), SHORT).tokens
    assert "Perplexity (base e)" in out and all(token in out for token in tokens)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    assert main(["loss", "--file", str(bad), "--model", tiny_dirs["gpt2"]]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["loss", SHORT, "--model", tiny_dirs["gpt2"], "--stride", "0"]) == 2
    assert "stride" in capsys.readouterr().err
    assert main(["loss", SHORT, "--model", tiny_dirs["gpt2"], "--max-length", "1000"]) == 2
    assert "context" in capsys.readouterr().err
    assert main(["loss", "", "--model", tiny_dirs["gpt2"]]) == 2
    assert "empty" in capsys.readouterr().err


def test_perplexity_overflow_is_infinite_not_an_error():
    """One very long, very improbable word: e^(total NLL) does not fit a float; show inf, don't crash."""
    from lmviz.analyses.loss import exp_or_inf

    assert exp_or_inf(1000.0) == float("inf") and exp_or_inf(1.0) == pytest.approx(2.718281828)
