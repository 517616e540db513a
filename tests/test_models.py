"""Loading: the embedded model for real, tiny random models through the same code, clear errors."""

import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from lmviz import models
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
    assert isinstance(smollm.final_norm, type(smollm.model.model.norm))
    assert smollm.unembed is smollm.model.lm_head
    assert not smollm.model.training


def test_embedded_copy_is_reused(smollm):
    copy = models.cache_dir() / "smollm2-135m-float32"
    assert (copy / "model.safetensors").exists()
    # The copy reloads with plain transformers and gives the same logits as the loaded model.
    reloaded = AutoModelForCausalLM.from_pretrained(copy, dtype=torch.float32)
    ids = torch.tensor([[1348, 16138, 339, 1252, 288]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, smollm.model(ids).logits)


def test_load_is_cached(tiny_dirs):
    first = models.load(tiny_dirs["gpt2"])
    started = time.perf_counter()
    assert models.load(tiny_dirs["gpt2"]) is first
    assert time.perf_counter() - started < 0.05


def test_tiny_models_through_real_loader(tiny_gpt2, tiny_llama, tiny_bert):
    assert (tiny_gpt2.kind, tiny_gpt2.n_layers, tiny_gpt2.d_model) == ("causal", 2, 32)
    assert tiny_gpt2.final_norm is tiny_gpt2.model.transformer.ln_f and tiny_gpt2.tied
    assert tiny_llama.final_norm is tiny_llama.model.model.norm and not tiny_llama.tied
    assert tiny_llama.n_layers == 3
    assert tiny_bert.kind == "masked" and tiny_bert.unembed is tiny_bert.model.cls
    assert isinstance(tiny_bert.final_norm, torch.nn.Identity) and tiny_bert.tied


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_head_reproduces_model_logits(which, tiny_dirs):
    """logits_from_hidden on the last hidden state (already normed by the model) equals the model's logits."""
    lm = models.load(tiny_dirs[which])
    reference = AutoModelForCausalLM.from_pretrained(tiny_dirs[which])
    ids = torch.tensor([lm.tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        out = reference(ids, output_hidden_states=True)
    assert torch.allclose(lm.logits_from_hidden(out.hidden_states[-1], normalize=False), out.logits, atol=1e-5)


def test_masked_head_reproduces_model_logits(tiny_dirs, tiny_bert):
    reference = AutoModelForMaskedLM.from_pretrained(tiny_dirs["bert"])
    ids = torch.tensor([tiny_bert.tokenizer("paris is the [MASK] of france")["input_ids"]])
    with torch.no_grad():
        out = reference(ids, output_hidden_states=True)
    assert torch.allclose(tiny_bert.logits_from_hidden(out.hidden_states[-1]), out.logits, atol=1e-5)


def test_unknown_name_fails_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(LmvizError, match="not embedded"):
        models.load("someone/some-model")
    assert time.perf_counter() - started < 1


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


def test_unknown_architecture_raises_instead_of_skipping_the_norm(tiny_gpt2):
    class Config:
        model_type = "brand-new-arch"

    class Fake(torch.nn.Module):
        config = Config()

    with pytest.raises(LmvizError, match="final norm"):
        models.find_final_norm(Fake())


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
