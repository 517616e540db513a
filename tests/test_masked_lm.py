"""lmviz.analyses.masked_lm: the MLM head read from the model, fill-mask and the loss three ways (seeds 000/001), recomputed with
plain transformers; and AntiBERTy, a real masked LM shipped in a package.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoTokenizer,
    BertForMaskedLM,
)

from lmviz.analyses import classification, masked_lm
from lmviz.model import models
from lmviz.present.tables import heads as tables
from lmviz.cli import main
from lmviz.model.embedded import antiberty
from lmviz.errors import LmvizError
from tests import bounds

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
    result = masked_lm.fill_mask(tiny_bert, text, k=4)
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
    frame = tables.mask_table(result, 0)
    assert frame["id"].tolist() == result.top_ids[0].tolist()


def test_head_anatomy_is_read_from_the_model(tiny_dirs, tiny_bert):
    reference = BertForMaskedLM.from_pretrained(tiny_dirs["bert"]).eval()
    anatomy = masked_lm.mlm_head_anatomy(tiny_bert, "the capital of france is paris")
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
    # lmviz's head, as its anatomy lists it, applied step by step to the reference's last hidden states (the
    # parts taken from the fresh reference by the anatomy's paths, in the anatomy's order), gives the
    # reference's logits: a wrong path, a missing or misplaced step, or a decoder that is not the input
    # embedding shows here
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["bert"])
    with torch.no_grad():
        out = reference(**tokenizer("the capital of france is paris", return_tensors="pt"), output_hidden_states=True)
        h = out.hidden_states[-1][0]  # (pos, d_model)
        embedding = _part(reference, anatomy.embedding_path)
        assert {step.name for step in anatomy.steps} == {"dense", "activation", "LayerNorm", "decoder", "output bias"}
        for step in anatomy.steps:
            part = _part(reference, step.path)
            if step.name == "decoder":
                decoder_input = h
                h = h @ embedding.T  # the anatomy's claim: the decoder reads the INPUT embedding
            elif step.name == "output bias":
                h = h + part
            else:
                h = part(h)
    bounds.assert_linear_close(h, out.logits[0], decoder_input, embedding, _part(reference, anatomy.steps[-1].path))

    # lmviz's own logits, whole rows (k = the vocabulary) at every mask, against the reference's
    text = "the capital of [MASK] is paris and [MASK] is the capital of england"
    result = masked_lm.fill_mask(tiny_bert, text, k=tiny_bert.vocab_size)
    with torch.no_grad():
        out = reference(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)
        transformed = reference.cls.predictions.transform(out.hidden_states[-1][0])
    decoder = reference.cls.predictions.decoder
    for m, position in enumerate(result.mask_positions.tolist()):
        mine = torch.empty(tiny_bert.vocab_size).scatter_(0, result.top_ids[m], result.top_logits[m])
        assert sorted(result.top_ids[m].tolist()) == list(range(reference.config.vocab_size))
        bounds.assert_linear_close(mine, out.logits[0, position], transformed[position], decoder.weight, decoder.bias)


def _part(model, path: str):
    """The attribute at a dotted path such as "cls.predictions.decoder" (raises when there is none)."""
    for name in path.split("."):
        model = getattr(model, name)
    return model


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

    result = masked_lm.mlm_loss(tiny_bert, text, chosen)
    assert torch.equal(result.input_ids, masked[0]) and torch.equal(result.labels, labels[0])
    # the same forward pass; float32 log-softmax on each side, and float32 means of 3 terms
    eps = 2 * float(bounds.log_softmax_bound(out.logits[0]).max()) + bounds.sum_bound(3, float(nll.sum()))
    assert abs(result.model_loss - float(out.loss)) <= eps
    assert abs(result.cross_entropy - float(ce)) <= eps
    assert ((result.per_example_loss - nll).abs() <= eps).all()
    assert abs(result.seed_loss - float(nll.sum()) / (3 + 1e-5)) <= eps
    assert result.seed_loss < result.cross_entropy  # the 1e-5 in the denominator
    assert result.n_masked == 3

    padded = masked_lm.mlm_loss(tiny_bert, text, chosen, max_predictions=8)
    assert padded.positions.tolist() == chosen + [0] * 5
    assert padded.label_weights.tolist() == [1.0] * 3 + [0.0] * 5
    assert abs(padded.seed_loss - result.seed_loss) <= bounds.sum_bound(8, result.numerator)  # zero-weight rows
    assert padded.denominator == pytest.approx(3 + 1e-5)
    assert len(tables.mlm_loss_table(padded)) == 8


def test_mlm_bad_input(tiny_bert, tiny_gpt2):
    with pytest.raises(LmvizError, match="causal model.*masked LM"):
        masked_lm.fill_mask(tiny_gpt2, "the [MASK] of")
    with pytest.raises(LmvizError, match=r"no \[MASK\] token"):
        masked_lm.fill_mask(tiny_bert, "no mask here")
    text = "the capital of [MASK] is paris"
    with pytest.raises(LmvizError, match="at least one"):
        masked_lm.mlm_loss(tiny_bert, text, [])
    with pytest.raises(LmvizError, match="special token"):
        masked_lm.mlm_loss(tiny_bert, text, [0])
    with pytest.raises(LmvizError, match="already a mask"):
        masked_lm.mlm_loss(tiny_bert, text, [4])
    with pytest.raises(LmvizError, match="outside"):
        masked_lm.mlm_loss(tiny_bert, text, [99])
    with pytest.raises(LmvizError, match="max_predictions"):
        masked_lm.mlm_loss(tiny_bert, text, [1, 2], max_predictions=1)


def test_default_mask_positions(tiny_bert):
    text = "the capital of france is paris and the capital of england is london"
    ids = tiny_bert.tokenizer(text)["input_ids"]
    positions = masked_lm.default_mask_positions(tiny_bert, text)
    special = set(tiny_bert.tokenizer.all_special_ids)
    ordinary = [i for i, t in enumerate(ids) if t not in special]
    assert positions and set(positions) <= set(ordinary)
    assert len(positions) == max(1, round(0.15 * len(ordinary)))
    assert [p for p, _ in masked_lm.maskable_tokens(tiny_bert, text)] == ordinary

# ------------------------------------------------- AntiBERTy (optional, offline)


@pytest.mark.skipif(importlib.util.find_spec("antiberty") is None, reason="antiberty==0.1.3 is not installed")
def test_antiberty_conversion_matches_the_shipped_weights():
    from transformers import BertConfig, BertModel

    folders = antiberty.prepare_antiberty()
    package = Path(importlib.util.find_spec("antiberty").origin).parent / "trained_models"
    state = torch.load(package / "AntiBERTy_md_smooth" / "pytorch_model.bin", weights_only=True, map_location="cpu")
    config = BertConfig.from_pretrained(package / "AntiBERTy_md_smooth")
    encoder = BertModel(config).eval()
    encoder.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("bert.")}, strict=False)
    vocab = {line.strip(): i for i, line in enumerate((package / "vocab.txt").read_text().splitlines())}
    sequence = antiberty.ANTIBODY_HEAVY[:40]
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
    result = masked_lm.fill_mask(mlm, sequence[:20] + "[MASK]" + sequence[21:], k=5)  # no spaces needed
    assert result.input_ids.tolist() == ids[0].tolist()
    bound = bounds.linear_bound(h[21], state["bert.embeddings.word_embeddings.weight"], state["cls.predictions.bias"])
    bounds.assert_top_k(result.top_ids[0], result.top_logits[0], logits[21], bound)
    assert masked_lm.mlm_head_anatomy(mlm).decoder_same_storage

    classifier = classification.classify(models.load(folders["chain"]), sequence)
    assert classifier.labels == ("Heavy", "Light")
    bounds.assert_linear_close(classifier.logits, chain, pooled, state["cls.chain.weight"], state["cls.chain.bias"])
    # what the lesson panel says of a model before loading it is what loading it finds
    assert {name: models.known_kind(name) for name in antiberty.MODELS} == {
        name: models.load(folders[folder]).kind for name, folder in antiberty.MODELS.items()}


# ------------------------------------------------------------------- CLI


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
