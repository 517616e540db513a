"""lmviz.heads against direct transformers/torch computations written out here.

Seed 004's embedding-neighbour table, seed 000/001's masked-LM scores and
loss, seed 002's classification logits: each number is recomputed in the test
from a model loaded with plain transformers (or its modules called directly).
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BertForMaskedLM,
    BertForSequenceClassification,
    GPT2ForSequenceClassification,
)

from lmviz import heads, models
from lmviz.cli import main
from lmviz.errors import LmvizError
from tests import bounds

SEED_TEXT = "This weekend I plan to"
SEED_IDS = [1348, 16138, 339, 1252, 288]


def shown(tokenizer, token_id):
    """The test's own rendering of a token: decoded text with spaces as '·'."""
    return tokenizer.decode([int(token_id)]).replace(" ", "·").replace("\n", "\\n")


# ------------------------------------------------------------ tied embeddings


def test_seed_004_neighbour_table_on_embedded_model(smollm):
    model, tokenizer = smollm.model, smollm.tokenizer
    ids = torch.tensor([SEED_IDS])
    with torch.no_grad():
        logits = model.lm_head(model.model.embed_tokens(ids))  # the notebook's cell, verbatim
    top = logits.topk(k=10)
    result = heads.neighbours(smollm, SEED_TEXT, k=10)
    assert result.input_ids.tolist() == SEED_IDS
    with torch.no_grad():
        bound = bounds.linear_bound(model.model.embed_tokens(ids)[0], model.lm_head.weight)
    bounds.assert_top_k(result.top_ids, result.top_scores, logits[0], bound)
    assert [list(row) for row in result.top_tokens] == [[shown(tokenizer, i) for i in row] for row in top.indices[0]]
    own = logits[0].gather(1, ids[0][:, None])
    assert result.self_rank.tolist() == (logits[0] > own).sum(dim=1).tolist()
    assert torch.allclose(result.top_norms, model.lm_head.weight.norm(dim=-1)[top.indices[0]])
    assert torch.allclose(result.input_norms, model.model.embed_tokens(ids)[0].norm(dim=-1))


def test_embedded_model_is_tied(smollm):
    model = smollm.model
    report = heads.tie_report(smollm)
    assert report.same_storage == (model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr())
    assert report.tied and report.input_shape == tuple(model.model.embed_tokens.weight.shape)
    assert report.saved_parameters == model.model.embed_tokens.weight.numel()
    assert not report.output_bias


def test_cosine_neighbours(tiny_dirs, tiny_gpt2):
    reference = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"])
    text = "The capital of France is Paris"
    ids = torch.tensor(tiny_gpt2.tokenizer(text)["input_ids"])
    with torch.no_grad():
        e = reference.transformer.wte(ids)
        cosines = F.normalize(e, dim=-1) @ F.normalize(reference.lm_head.weight, dim=-1).T
    result = heads.neighbours(tiny_gpt2, text, k=7, metric="cosine")
    with torch.no_grad():  # normalising first or dividing after: a few more roundings of each unit-sized score
        bound = bounds.linear_bound(F.normalize(e, dim=-1), F.normalize(reference.lm_head.weight, dim=-1)) + 8 * bounds.U32
    bounds.assert_top_k(result.top_ids, result.top_scores, cosines, bound)
    assert result.top_scores.max() <= 1 + 1e-5
    # with tied weights every token is its own nearest direction (cosine 1)
    assert torch.equal(result.top_ids[:, 0], ids) and torch.allclose(result.top_scores[:, 0], torch.ones(len(ids)))


def test_untied_model_says_so_and_scores_against_the_output_matrix(tiny_dirs, tiny_llama):
    reference = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    assert reference.lm_head.weight.data_ptr() != reference.model.embed_tokens.weight.data_ptr()
    report = heads.tie_report(tiny_llama)
    assert not report.tied and not report.same_storage and report.saved_parameters == 0
    text = "Paris with my friends"
    ids = torch.tensor([tiny_llama.tokenizer(text)["input_ids"]])
    result = heads.neighbours(tiny_llama, text, k=5)
    assert not result.tied
    with torch.no_grad():
        scores = reference.lm_head(reference.model.embed_tokens(ids))[0]
        bound = bounds.linear_bound(reference.model.embed_tokens(ids)[0], reference.lm_head.weight)
    bounds.assert_top_k(result.top_ids, result.top_scores, scores, bound)


def test_long_text_in_chunks_equals_one_pass(tiny_dirs, tiny_gpt2, monkeypatch):
    monkeypatch.setattr(heads, "CHUNK_BYTES", 7 * 4 * tiny_gpt2.vocab_size)  # 7 positions per chunk
    reference = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"])
    text = "Perplexity is the exponential of the mean negative log-likelihood. " * 3
    ids = torch.tensor(tiny_gpt2.tokenizer(text)["input_ids"])
    assert len(ids) > 3 * 7
    with torch.no_grad():
        scores = reference.lm_head(reference.transformer.wte(ids))
    result = heads.neighbours(tiny_gpt2, text, k=3)
    assert torch.equal(result.top_ids, scores.topk(3).indices)
    own = scores.gather(1, ids[:, None])
    assert result.self_rank.tolist() == (scores > own).sum(dim=1).tolist()


def test_neighbours_bad_input(tiny_gpt2, tiny_classifier_dirs):
    with pytest.raises(LmvizError, match="empty"):
        heads.neighbours(tiny_gpt2, "  ")
    with pytest.raises(LmvizError, match="at least 1"):
        heads.neighbours(tiny_gpt2, "hello", k=0)
    with pytest.raises(LmvizError, match="metric"):
        heads.neighbours(tiny_gpt2, "hello", metric="euclid")
    with pytest.raises(LmvizError, match="no output embeddings|without output embeddings"):
        heads.neighbours(models.load(tiny_classifier_dirs["bert"]), "hello")


# --------------------------------------------------------------- masked LM


def test_fill_mask_matches_transformers(tiny_dirs, tiny_bert):
    reference = BertForMaskedLM.from_pretrained(tiny_dirs["bert"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["bert"])
    text = "paris is the [MASK] of france and [MASK] is the capital of england"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = reference(input_ids=ids, output_hidden_states=True)
        logits = out.logits[0]
        transformed = reference.cls.predictions.transform(out.hidden_states[-1][0])  # what the decoder reads
    decoder = reference.cls.predictions.decoder
    where = (ids[0] == tokenizer.mask_token_id).nonzero().flatten()
    result = heads.fill_mask(tiny_bert, text, k=4)
    assert result.mask_positions.tolist() == where.tolist() and len(where) == 2
    for m, position in enumerate(where):
        bound = bounds.linear_bound(transformed[position], decoder.weight, decoder.bias)  # (vocab,)
        bounds.assert_top_k(result.top_ids[m], result.top_logits[m], logits[position], bound)
        chosen = result.top_ids[m]
        eps = 2 * bounds.log_softmax_bound(logits[position], bound.max())  # lmviz's and the reference's
        log_p = torch.log_softmax(logits[position].double(), -1)[chosen]
        assert ((result.top_logprobs[m].double() - log_p).abs() <= eps).all()
        assert ((result.top_probs[m].double() - log_p.exp()).abs() <= bounds.prob_bound(log_p.exp(), eps)).all()
        assert list(result.top_tokens[m]) == [tokenizer.convert_ids_to_tokens(int(i)) for i in chosen]
    frame = result.frame(0)
    assert frame["id"].tolist() == result.top_ids[0].tolist()


def test_head_anatomy_is_read_from_the_model(tiny_dirs, tiny_bert):
    reference = BertForMaskedLM.from_pretrained(tiny_dirs["bert"]).eval()
    anatomy = heads.mlm_head_anatomy(tiny_bert, "the capital of france is paris")
    assert anatomy.decoder_same_storage == (
        tiny_bert.model.cls.predictions.decoder.weight.data_ptr()
        == tiny_bert.model.bert.embeddings.word_embeddings.weight.data_ptr()
    )
    assert anatomy.decoder_equal_values
    assert anatomy.embedding_path == "bert.embeddings.word_embeddings.weight"
    for step in anatomy.steps:  # every path names a real part of a freshly loaded model
        part = reference
        for name in step.path.split("."):
            part = getattr(part, name)
    # the diagnostic the page shows: lmviz's by-hand head against the model's logits, within rounding
    with torch.no_grad():
        out = reference(**AutoTokenizer.from_pretrained(tiny_dirs["bert"])(anatomy.recompute_text, return_tensors="pt"),
                        output_hidden_states=True)
        transformed = reference.cls.predictions.transform(out.hidden_states[-1][0])
    decoder = reference.cls.predictions.decoder
    assert anatomy.recompute_max_diff <= float(bounds.linear_bound(transformed, decoder.weight, decoder.bias).max())
    # the head by hand, written out independently: dense -> gelu -> LayerNorm -> E^T + output bias
    ids = AutoTokenizer.from_pretrained(tiny_dirs["bert"])("the capital of france is paris", return_tensors="pt")
    with torch.no_grad():
        out = reference(**ids, output_hidden_states=True)
        p = reference.cls.predictions
        h = F.gelu(out.hidden_states[-1] @ p.transform.dense.weight.T + p.transform.dense.bias)
        h = F.layer_norm(h, (h.shape[-1],), p.transform.LayerNorm.weight, p.transform.LayerNorm.bias, 1e-12)
        by_hand = h @ reference.bert.embeddings.word_embeddings.weight.T + p.bias
    bounds.assert_linear_close(by_hand[0], out.logits[0], h[0], reference.bert.embeddings.word_embeddings.weight, p.bias)


def test_mlm_loss_three_ways_agree_with_transformers(tiny_dirs, tiny_bert):
    reference = BertForMaskedLM.from_pretrained(tiny_dirs["bert"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["bert"])
    text = "the capital of france is paris and the capital of england is london"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    chosen = [2, 6, 11]
    masked = ids.clone()
    masked[0, chosen] = tokenizer.mask_token_id
    labels = torch.full_like(ids, -100)
    labels[0, chosen] = ids[0, chosen]
    with torch.no_grad():
        out = reference(input_ids=masked, labels=labels)
    log_probs = torch.log_softmax(out.logits[0], dim=-1)
    nll = torch.stack([-log_probs[p, ids[0, p]] for p in chosen])
    ce = nn.CrossEntropyLoss(ignore_index=-100)(out.logits.view(-1, out.logits.shape[-1]), labels.view(-1))

    result = heads.mlm_loss(tiny_bert, text, chosen)
    assert torch.equal(result.input_ids, masked[0]) and torch.equal(result.labels, labels[0])
    # the same forward pass; float32 log-softmax on each side, and float32 means of 3 terms
    eps = 2 * float(bounds.log_softmax_bound(out.logits[0]).max()) + bounds.sum_bound(3, float(nll.sum()))
    assert abs(result.model_loss - float(out.loss)) <= eps
    assert abs(result.cross_entropy - float(ce)) <= eps
    assert ((result.per_example_loss - nll).abs() <= eps).all()
    assert abs(result.seed_loss - float(nll.sum()) / (3 + 1e-5)) <= eps
    assert result.seed_loss < result.cross_entropy  # the 1e-5 in the denominator
    assert result.n_masked == 3

    padded = heads.mlm_loss(tiny_bert, text, chosen, max_predictions=8)
    assert padded.positions.tolist() == chosen + [0] * 5
    assert padded.label_weights.tolist() == [1.0] * 3 + [0.0] * 5
    assert abs(padded.seed_loss - result.seed_loss) <= bounds.sum_bound(8, result.numerator)  # zero-weight rows
    assert padded.denominator == pytest.approx(3 + 1e-5)
    assert len(padded.frame()) == 8


def test_mlm_bad_input(tiny_bert, tiny_gpt2):
    with pytest.raises(LmvizError, match="causal model.*masked LM"):
        heads.fill_mask(tiny_gpt2, "the [MASK] of")
    with pytest.raises(LmvizError, match=r"no \[MASK\] token"):
        heads.fill_mask(tiny_bert, "no mask here")
    text = "the capital of [MASK] is paris"
    with pytest.raises(LmvizError, match="at least one"):
        heads.mlm_loss(tiny_bert, text, [])
    with pytest.raises(LmvizError, match="special token"):
        heads.mlm_loss(tiny_bert, text, [0])
    with pytest.raises(LmvizError, match="already a mask"):
        heads.mlm_loss(tiny_bert, text, [4])
    with pytest.raises(LmvizError, match="outside"):
        heads.mlm_loss(tiny_bert, text, [99])
    with pytest.raises(LmvizError, match="max_predictions"):
        heads.mlm_loss(tiny_bert, text, [1, 2], max_predictions=1)


def test_default_mask_positions(tiny_bert):
    text = "the capital of france is paris and the capital of england is london"
    ids = tiny_bert.tokenizer(text)["input_ids"]
    positions = heads.default_mask_positions(tiny_bert, text)
    special = set(tiny_bert.tokenizer.all_special_ids)
    ordinary = [i for i, t in enumerate(ids) if t not in special]
    assert positions and set(positions) <= set(ordinary)
    assert len(positions) == max(1, round(0.15 * len(ordinary)))
    assert [p for p, _ in heads.maskable_tokens(tiny_bert, text)] == ordinary


# ---------------------------------------------------------- classification


def test_classifier_logits_labels_and_losses(tiny_classifier_dirs):
    lm = models.load(tiny_classifier_dirs["bert"])
    reference = BertForSequenceClassification.from_pretrained(tiny_classifier_dirs["bert"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dirs["bert"])
    inputs = tokenizer("this is an example", return_tensors="pt")
    with torch.no_grad():
        logits = reference(**inputs).logits[0]
        pooled = reference.bert(**inputs).pooler_output[0]  # seed 002: o.pooler_output
    own = pooled @ reference.classifier.weight.T + reference.classifier.bias  # logitsOwnCalculation
    result = heads.classify(lm, "this is an example")
    assert result.labels == ("negative", "positive") and not result.generic_labels
    # one forward pass on each side, the same operations on the same input
    assert torch.equal(result.logits, logits) and torch.equal(result.pooled, pooled)
    bounds.assert_linear_close(result.logits_by_hand, own, pooled, reference.classifier.weight, reference.classifier.bias)
    eps = bounds.log_softmax_bound(logits)
    p = torch.softmax(logits.double(), -1)
    assert ((result.probs.double() - p).abs() <= bounds.prob_bound(p, eps)).all()
    expected = -torch.log_softmax(logits.double(), -1)  # the loss if each label were the true one
    assert ((torch.tensor(result.loss_per_label.tolist()) - expected).abs() <= 2 * eps).all()
    assert result.frame()["label"].tolist() == ["negative", "positive"]


def test_classifier_without_label_names_and_decoder_classifier(tiny_classifier_dirs):
    unnamed = heads.classify(models.load(tiny_classifier_dirs["bert_unnamed"]), "paris")
    assert unnamed.generic_labels and unnamed.labels == ("LABEL_0", "LABEL_1")
    lm = models.load(tiny_classifier_dirs["gpt2"])
    reference = GPT2ForSequenceClassification.from_pretrained(tiny_classifier_dirs["gpt2"]).eval()
    ids = torch.tensor([lm.tokenizer("The capital of France")["input_ids"]])
    with torch.no_grad():
        out = reference(input_ids=ids, output_hidden_states=True)
    result = heads.classify(lm, "The capital of France")
    assert len(result.labels) == 3 and result.generic_labels
    assert torch.equal(result.logits, out.logits[0])  # one forward pass on each side, the same operations
    last = out.hidden_states[-1][0, -1]
    bounds.assert_linear_close(result.logits_by_hand, last @ reference.score.weight.T, last, reference.score.weight)


def test_random_head_like_nn_linear(tiny_dirs, tiny_gpt2):
    head = heads.random_head(tiny_gpt2, ["negative", "positive"], pooling="last", seed=3)
    assert head.weight.shape == (2, 32) and head.bias.shape == (2,)
    bound = 1 / 32**0.5  # nn.Linear's default init: U(-1/sqrt(in), 1/sqrt(in))
    assert head.weight.abs().max() <= bound and head.bias.abs().max() <= bound
    assert torch.equal(heads.random_head(tiny_gpt2, ["a", "b"], seed=3).weight, head.weight)
    assert not torch.equal(heads.random_head(tiny_gpt2, ["a", "b"], seed=4).weight, head.weight)
    reference = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"])
    text = "The capital of France is"
    ids = torch.tensor([tiny_gpt2.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        hidden = reference(ids, output_hidden_states=True).hidden_states[-1][0]
    for pooling, pooled in [("last", hidden[-1]), ("first", hidden[0]), ("mean", hidden.mean(0))]:
        head = heads.random_head(tiny_gpt2, ["negative", "positive"], pooling=pooling, seed=3)
        result = heads.classify_with_head(tiny_gpt2, head, text)
        logits = pooled @ head.weight.T + head.bias
        # pooled from the trace (the same forward pass) in float32, here too; the head's product in another order
        bounds.assert_linear_close(result.logits, logits, pooled, head.weight, head.bias)
        eps = bounds.log_softmax_bound(logits, float(bounds.linear_bound(pooled, head.weight, head.bias).max()))
        p = torch.softmax(logits.double(), -1)
        assert ((result.probs.double() - p).abs() <= bounds.prob_bound(p, 2 * eps)).all()
        assert result.loss_per_label.tolist() == pytest.approx(
            [float(F.cross_entropy(logits[None], torch.tensor([i]))) for i in range(2)], abs=1e-5)


def test_fitted_head_on_embedded_model(smollm):
    examples = heads.parse_examples(
        "positive: What a lovely day, I enjoyed every minute.\n"
        "positive: The food was delicious and the staff were friendly.\n"
        "\n"
        "negative: This was a terrible waste of time.\n"
        "negative: The service was awful and the room was dirty.\n"
    )
    head = heads.fit_head(smollm, examples, pooling="last")
    assert head.labels == ("positive", "negative") and head.train_accuracy == 1.0
    features = []
    for _, sentence in examples:
        ids = torch.tensor([smollm.tokenizer(sentence)["input_ids"]])
        with torch.no_grad():
            features.append(smollm.model(ids, output_hidden_states=True).hidden_states[-1][0, -1])
    logits = torch.stack(features) @ head.weight.T + head.bias
    assert logits.argmax(-1).tolist() == [0, 0, 1, 1]
    assert heads.fit_head(smollm, examples, pooling="last") is head  # cached
    happy = heads.classify_with_head(smollm, head, "I really enjoyed the concert, it was great.")
    sad = heads.classify_with_head(smollm, head, "The hotel was dirty and the staff were rude.")
    assert happy.probs[0] > sad.probs[0]


def test_classification_bad_input(tiny_gpt2, tiny_classifier_dirs):
    with pytest.raises(LmvizError, match="two labels"):
        heads.random_head(tiny_gpt2, ["only"])
    with pytest.raises(LmvizError, match="differ"):
        heads.random_head(tiny_gpt2, ["a", "a"])
    with pytest.raises(LmvizError, match="empty"):
        heads.random_head(tiny_gpt2, ["a", " "])
    with pytest.raises(LmvizError, match="Line 2"):
        heads.parse_examples("good: fine\nno colon here")
    with pytest.raises(LmvizError, match="two labels"):
        heads.fit_head(tiny_gpt2, [("good", "fine"), ("good", "great")])
    with pytest.raises(LmvizError, match="pooling"):
        heads.random_head(tiny_gpt2, ["a", "b"], pooling="max")
    with pytest.raises(LmvizError, match="not a sequence classifier"):
        heads.classify(tiny_gpt2, "hello")


# ------------------------------------------------------------------- CLI


def test_cli_embed_json_is_the_seed_table(smollm, capsys):
    assert main(["embed", SEED_TEXT, "--k", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ids = torch.tensor([SEED_IDS])
    with torch.no_grad():
        top = smollm.model.lm_head(smollm.model.model.embed_tokens(ids)).topk(10).indices[0]
    assert result["input_ids"] == SEED_IDS
    assert result["top_ids"] == top.tolist()
    assert result["tied"] is True


def test_cli_fill_mask(tiny_dirs, capsys):
    assert main(["fill-mask", "the [MASK] of france", "--model", tiny_dirs["bert"], "--k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    reference = BertForMaskedLM.from_pretrained(tiny_dirs["bert"]).eval()
    ids = torch.tensor([result["input_ids"]])
    with torch.no_grad():
        logits = reference(input_ids=ids).logits[0]
    (mask,) = result["masks"]
    assert mask["top_ids"] == logits[mask["position"]].topk(3).indices.tolist()
    assert main(["fill-mask", "the [MASK] of france", "--model", tiny_dirs["bert"]]) == 0
    assert "probability" in capsys.readouterr().out


def test_cli_bad_input_exit_2(tiny_dirs, capsys):
    for argv in (
        ["fill-mask", "the [MASK] of", "--model", tiny_dirs["gpt2"]],
        ["fill-mask", "no mask", "--model", tiny_dirs["bert"]],
        ["embed", "hello", "--model", tiny_dirs["gpt2"], "--k", "0"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("lmviz: ")


# ------------------------------------------------- AntiBERTy (optional, offline)


@pytest.mark.skipif(importlib.util.find_spec("antiberty") is None, reason="antiberty==0.1.3 is not installed")
def test_antiberty_conversion_matches_the_shipped_weights():
    from transformers import BertConfig, BertModel

    folders = heads.prepare_antiberty()
    package = Path(importlib.util.find_spec("antiberty").origin).parent / "trained_models"
    state = torch.load(package / "AntiBERTy_md_smooth" / "pytorch_model.bin", weights_only=True, map_location="cpu")
    config = BertConfig.from_pretrained(package / "AntiBERTy_md_smooth")
    encoder = BertModel(config).eval()
    encoder.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("bert.")}, strict=False)
    vocab = {line.strip(): i for i, line in enumerate((package / "vocab.txt").read_text().splitlines())}
    sequence = heads.ANTIBODY_HEAVY[:40]
    residues = ["[CLS]", *sequence[:20], "[MASK]", *sequence[21:], "[SEP]"]  # one token per residue
    ids = torch.tensor([[vocab[residue] for residue in residues]])
    with torch.no_grad():
        out = encoder(input_ids=ids)
        h = F.gelu(out.last_hidden_state[0] @ state["cls.predictions.transform.dense.weight"].T
                   + state["cls.predictions.transform.dense.bias"])
        h = F.layer_norm(h, (h.shape[-1],), state["cls.predictions.transform.LayerNorm.weight"],
                         state["cls.predictions.transform.LayerNorm.bias"], config.layer_norm_eps)
        logits = h @ state["bert.embeddings.word_embeddings.weight"].T + state["cls.predictions.bias"]
        plain = torch.tensor([[vocab["[CLS]"], *(vocab[residue] for residue in sequence), vocab["[SEP]"]]])
        pooled = encoder(input_ids=plain).pooler_output[0]
        chain = pooled @ state["cls.chain.weight"].T + state["cls.chain.bias"]

    mlm = models.load(folders["mlm"])
    result = heads.fill_mask(mlm, sequence[:20] + "[MASK]" + sequence[21:], k=5)  # no spaces needed
    assert result.input_ids.tolist() == ids[0].tolist()
    bound = bounds.linear_bound(h[21], state["bert.embeddings.word_embeddings.weight"], state["cls.predictions.bias"])
    bounds.assert_top_k(result.top_ids[0], result.top_logits[0], logits[21], bound)
    assert heads.mlm_head_anatomy(mlm).decoder_same_storage

    classifier = heads.classify(models.load(folders["chain"]), sequence)
    assert classifier.labels == ("Heavy", "Light")
    bounds.assert_linear_close(classifier.logits, chain, pooled, state["cls.chain.weight"], state["cls.chain.bias"])
