"""Loading: the embedded model for real, tiny random models through the same code, clear errors."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from lmviz.model import embedded, models
from lmviz.errors import LmvizError


def test_embedded_model_tokens_and_prediction(smollm):
    ids = smollm.tokenizer("This weekend I plan to")["input_ids"]
    assert ids == [1348, 16138, 339, 1252, 288]
    with torch.no_grad():
        logits = smollm.model(torch.tensor([ids])).logits
    assert smollm.tokenizer.decode(logits[0, -1].argmax()) == " visit"


def test_embedded_model_facts(smollm):
    assert (smollm.kind, smollm.n_layers, smollm.d_model, smollm.vocab_size) == ("causal", 30, 576, 49152)
    assert smollm.tied and smollm.n_params == 134_515_008
    assert isinstance(smollm.head.norm, type(smollm.model.model.norm))
    assert smollm.head.unembed is smollm.model.lm_head
    assert not smollm.model.training


def test_embedded_copy_is_reused(smollm):
    copy = embedded.cache_dir() / "smollm2-135m-float32"
    assert (copy / "model.safetensors").exists()
    # The copy reloads with plain transformers and gives the same logits as the loaded model.
    reloaded = AutoModelForCausalLM.from_pretrained(copy, dtype=torch.float32)
    ids = torch.tensor([[1348, 16138, 339, 1252, 288]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, smollm.model(ids).logits)


def test_gemma_facts_and_copy(gemma, gemma_gguf):
    """Gemma-3 270M: its facts, and lmviz's float32 copy holds exactly what transformers dequantizes from the
    GGUF file (assembled from the four chunk packages, SHA-256 checked)."""
    assert (gemma.kind, gemma.n_layers, gemma.d_model, gemma.vocab_size) == ("causal", 18, 640, 262144)
    assert gemma.tied and gemma.context_length == 32768 and gemma.arch.refusal is None
    reference, tokenizer = gemma_gguf
    ours = gemma.model.state_dict()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(ours[name], tensor), name
    assert tokenizer("The capital of France is")["input_ids"] == gemma.tokenizer("The capital of France is")["input_ids"]


def test_load_is_cached(tiny_dirs):
    first = models.load(tiny_dirs["gpt2"])
    assert models.load(tiny_dirs["gpt2"]) is first


def test_tiny_models_through_real_loader(tiny_gpt2, tiny_llama, tiny_bert):
    assert (tiny_gpt2.kind, tiny_gpt2.n_layers, tiny_gpt2.d_model) == ("causal", 2, 32)
    assert tiny_gpt2.head.norm is tiny_gpt2.model.transformer.ln_f and tiny_gpt2.tied
    assert tiny_llama.head.norm is tiny_llama.model.model.norm and not tiny_llama.tied
    assert tiny_llama.n_layers == 3
    # BERT's MLM head = transform (dense, activation, LayerNorm) then the decoder: the transform is what
    # sits between the last block and the unembedding, so it is found as the "final norm"
    assert tiny_bert.kind == "masked" and tiny_bert.head.unembed is tiny_bert.model.cls.predictions.decoder
    assert tiny_bert.head.norm is tiny_bert.model.cls.predictions.transform and tiny_bert.tied
    assert tiny_bert.arch.refusal is None and not tiny_bert.arch.head_reads_last_hidden


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_head_reproduces_model_logits(which, tiny_dirs):
    """The head on the last hidden state (already normed by the model) equals the model's logits."""
    lm = models.load(tiny_dirs[which])
    reference = AutoModelForCausalLM.from_pretrained(tiny_dirs[which])
    ids = torch.tensor([lm.tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        out = reference(ids, output_hidden_states=True)
    bound = lm.head.error_bound(out.hidden_states[-1])
    assert ((lm.head.logits(out.hidden_states[-1], normalize=False) - out.logits).abs() <= bound).all()


def test_masked_head_reproduces_model_logits(tiny_dirs, tiny_bert):
    reference = AutoModelForMaskedLM.from_pretrained(tiny_dirs["bert"])
    ids = torch.tensor([tiny_bert.tokenizer("paris is the [MASK] of france")["input_ids"]])
    with torch.no_grad():
        out = reference(ids, output_hidden_states=True)
    transformed = tiny_bert.head.norm(out.hidden_states[-1])
    bound = tiny_bert.head.error_bound(transformed)
    assert ((tiny_bert.head.logits(out.hidden_states[-1]) - out.logits).abs() <= bound).all()


def test_unknown_name_fails_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LmvizError, match="not embedded"):
        models.load("someone/some-model")


def test_missing_directory_and_empty_name():
    with pytest.raises(LmvizError, match="No model directory"):
        models.load("./no/such/folder")
    with pytest.raises(LmvizError, match="No model name"):
        models.load("  ")


def test_bin_only_checkpoint_is_refused(tmp_path, tiny_dirs):
    """A pickled .bin checkpoint could run code when loaded: lmviz refuses it."""
    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"])
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(LmvizError, match="safetensors"):
        models.load(str(tmp_path))


def test_architecture_found_and_verified_on_load(tiny_gpt2, tiny_llama):
    for lm, blocks in ((tiny_gpt2, tiny_gpt2.model.transformer.h), (tiny_llama, tiny_llama.model.model.layers)):
        assert lm.arch.blocks == tuple(blocks) and lm.arch.refusal is None
        assert lm.arch.max_head_error <= lm.arch.head_error_bound
        parts = lm.arch.require_decomposition()
        assert parts.n_heads == lm.model.config.num_attention_heads and parts.n_heads * parts.d_head == lm.d_model
    llama, gpt2 = tiny_llama.arch.decomposition, tiny_gpt2.arch.decomposition
    assert llama.out_projs[1] is tiny_llama.model.model.layers[1].self_attn.o_proj
    assert llama.attn_writes[1] is tiny_llama.model.model.layers[1].self_attn  # added as it is: no post-norm
    assert llama.mlp_writes[1] is tiny_llama.model.model.layers[1].mlp
    assert gpt2.out_projs[1] is tiny_gpt2.model.transformer.h[1].attn.c_proj


def test_local_paths_confined_to_models_dir(monkeypatch, tmp_path, tiny_dirs):
    monkeypatch.setenv("LMVIZ_MODELS_DIR", str(tmp_path))
    with pytest.raises(LmvizError, match="must be under"):
        models._user_model_location(tiny_dirs["gpt2"])


def test_demo_mode_refuses_local_folders(monkeypatch, tiny_dirs):
    monkeypatch.setenv("LMVIZ_DEMO", "1")
    monkeypatch.delenv("LMVIZ_MODELS_DIR", raising=False)
    with pytest.raises(LmvizError, match="demo server"):
        models._user_model_location(tiny_dirs["gpt2"])


def test_remote_code_is_never_trusted(tmp_path):
    """A config that asks for custom code is refused, not executed."""
    (tmp_path / "config.json").write_text(
        '{"model_type": "evil-arch", "architectures": ["EvilForCausalLM"],'
        ' "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"}}'
    )
    (tmp_path / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(LmvizError, match="never runs"):
        models.load(str(tmp_path))


def test_one_refusal_for_a_model_that_is_not_causal(tiny_bert):
    """Every analysis that needs next-token predictions refuses a masked LM with the same one message."""
    from lmviz.analyses import ablation, attribution, beam, lens, loss, sampling, whatif
    from lmviz.forward import trace as tracing
    from lmviz.model.interventions import Component

    text = "the capital of france"
    calls = {
        "next-token sampling": lambda: sampling.next_token(tiny_bert, text),
        "generating text": lambda: sampling.generate(tiny_bert, text, steps=2),
        "beam search": lambda: beam.beam_search(tiny_bert, text),
        "the logit lens": lambda: lens.logit_lens(tiny_bert, tracing.trace(tiny_bert, text)),
        "next-token loss": lambda: loss.loss_report(tiny_bert, text),
        "ablation": lambda: ablation.ablate(tiny_bert, text, Component("attn", 0), "zero"),
        "attribution": lambda: attribution.attribute(tiny_bert, text),
        "continuing a text": lambda: whatif.branch(tiny_bert, text),
    }
    for what, call in calls.items():
        with pytest.raises(LmvizError) as refused:
            call()
        assert str(refused.value) == (f"{tiny_bert.name} is a masked model; {what} needs a causal language model, "
                                      f"one that predicts the next token (e.g. {models.DEFAULT_MODEL}).")
    for call in (lambda: loss.layer_loss(tiny_bert, text), lambda: loss.context_curve(tiny_bert, text)):
        with pytest.raises(LmvizError, match="next-token loss needs a causal language model"):
            call()
