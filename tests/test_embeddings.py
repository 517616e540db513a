"""lmviz.analyses.embeddings: seed 004's neighbour table, tied or not, recomputed from the model's own modules.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
)

from lmviz.analyses import embeddings
from lmviz.model import models
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
    result = embeddings.neighbours(smollm, SEED_TEXT, k=10)
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
    report = embeddings.tie_report(smollm)
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
    result = embeddings.neighbours(tiny_gpt2, text, k=7, metric="cosine")
    with torch.no_grad():  # normalising first or dividing after: a few more roundings of each unit-sized score
        bound = bounds.linear_bound(F.normalize(e, dim=-1), F.normalize(reference.lm_head.weight, dim=-1)) + 8 * bounds.U32
    bounds.assert_top_k(result.top_ids, result.top_scores, cosines, bound)
    assert result.top_scores.max() <= 1 + 1e-5
    # with tied weights every token is its own nearest direction (cosine 1)
    assert torch.equal(result.top_ids[:, 0], ids) and torch.allclose(result.top_scores[:, 0], torch.ones(len(ids)))


def test_untied_model_says_so_and_scores_against_the_output_matrix(tiny_dirs, tiny_llama):
    reference = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    assert reference.lm_head.weight.data_ptr() != reference.model.embed_tokens.weight.data_ptr()
    report = embeddings.tie_report(tiny_llama)
    assert not report.tied and not report.same_storage and report.saved_parameters == 0
    text = "Paris with my friends"
    ids = torch.tensor([tiny_llama.tokenizer(text)["input_ids"]])
    result = embeddings.neighbours(tiny_llama, text, k=5)
    assert not result.tied
    with torch.no_grad():
        scores = reference.lm_head(reference.model.embed_tokens(ids))[0]
        bound = bounds.linear_bound(reference.model.embed_tokens(ids)[0], reference.lm_head.weight)
    bounds.assert_top_k(result.top_ids, result.top_scores, scores, bound)


def test_long_text_in_chunks_equals_one_pass(tiny_dirs, tiny_gpt2, monkeypatch):
    monkeypatch.setattr(embeddings, "CHUNK_BYTES", 7 * 4 * tiny_gpt2.vocab_size)  # 7 positions per chunk
    reference = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"])
    text = "Perplexity is the exponential of the mean negative log-likelihood. " * 3
    ids = torch.tensor(tiny_gpt2.tokenizer(text)["input_ids"])
    assert len(ids) > 3 * 7
    with torch.no_grad():
        scores = reference.lm_head(reference.transformer.wte(ids))
    result = embeddings.neighbours(tiny_gpt2, text, k=3)
    assert torch.equal(result.top_ids, scores.topk(3).indices)
    own = scores.gather(1, ids[:, None])
    assert result.self_rank.tolist() == (scores > own).sum(dim=1).tolist()


def test_neighbours_bad_input(tiny_gpt2, tiny_classifier_dirs):
    with pytest.raises(LmvizError, match="empty"):
        embeddings.neighbours(tiny_gpt2, "  ")
    with pytest.raises(LmvizError, match="at least 1"):
        embeddings.neighbours(tiny_gpt2, "hello", k=0)
    with pytest.raises(LmvizError, match="metric"):
        embeddings.neighbours(tiny_gpt2, "hello", metric="euclid")
    with pytest.raises(LmvizError, match="no output embeddings|without output embeddings"):
        embeddings.neighbours(models.load(tiny_classifier_dirs["bert"]), "hello")


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
