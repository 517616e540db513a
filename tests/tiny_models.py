"""Tiny random models written to disk with save_pretrained, for loading through lmviz.model.models.load.

Each builder trains a small tokenizer on CORPUS (no hub needed), builds a
model from a config with random weights (seeded), and saves both as
safetensors into a directory. Tests then load that directory by path, through
the same code that loads real models.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "This weekend I plan to visit Paris with my friends.",
    "The capital of France is Paris, and the capital of England is London.",
    "A language model predicts the next token from the tokens before it.",
    "Temperature reshapes the distribution; beam search keeps the best hypotheses.",
    "Perplexity is the exponential of the mean negative log-likelihood.",
    "héllo wörld, naïve café; 東京 and emoji 😀 too.\nNew lines\tand tabs.",
] * 20


def byte_level_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE tokenizer with <|endoftext|> as bos/eos (no pad token)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )


def wordpiece_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer with [CLS] … [SEP] and a [MASK] token."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )


def _save(model, tokenizer, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def build_gpt2(directory: Path) -> Path:
    """GPT-2 (LayerNorm, ln_f, tied embeddings), 2 layers, d_model 32."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = byte_level_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return _save(GPT2LMHeadModel(config), tokenizer, directory)


def build_llama(directory: Path, tie_word_embeddings: bool = False) -> Path:
    """Llama (RMSNorm, model.norm, untied by default), 3 layers, d_model 32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_level_tokenizer()
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return _save(LlamaForCausalLM(config), tokenizer, directory)


def build_bert(directory: Path) -> Path:
    """BERT masked LM (post-LN, MLM head tied to the input embeddings), 2 layers, d_model 32."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = wordpiece_tokenizer()
    torch.manual_seed(2)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
    )
    return _save(BertForMaskedLM(config), tokenizer, directory)


def build_bert_classifier(directory: Path, labels: tuple[str, ...] | None = ("negative", "positive")) -> Path:
    """BERT sequence classifier (pooler -> linear), 2 layers, d_model 32; labels=None keeps
    transformers' default names LABEL_0, LABEL_1."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = wordpiece_tokenizer()
    torch.manual_seed(3)
    names = dict(id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)}) if labels else {}
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id, **names,
    )
    return _save(BertForSequenceClassification(config), tokenizer, directory)


def build_gpt2_classifier(directory: Path) -> Path:
    """GPT-2 sequence classifier (last token -> `score`, no bias), 3 default-named labels."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tokenizer = byte_level_tokenizer()
    torch.manual_seed(4)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2, num_labels=3,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return _save(GPT2ForSequenceClassification(config), tokenizer, directory)


def build_llama_bos(directory: Path) -> Path:
    """Llama, 2 layers, d_model 32, with a different vocabulary from the others (byte-level BPE of 300
    tokens) and a tokenizer that puts a BOS token first, as Llama tokenizers do."""
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaForCausalLM

    backend = byte_level_tokenizer(vocab_size=300).backend_tokenizer
    bos = backend.token_to_id("<|endoftext|>")
    backend.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    torch.manual_seed(5)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=bos, eos_token_id=bos,
    )
    return _save(LlamaForCausalLM(config), tokenizer, directory)


def build_gemma3(directory: Path) -> Path:
    """Gemma-3 text model (RMSNorm with 1 + weight, embeddings scaled by sqrt(d), final logit
    soft-capping at 0.5: the random logits are about that size, so the cap visibly bends them),
    3 layers, d_model 32, tied."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = byte_level_tokenizer()
    torch.manual_seed(6)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
        sliding_window=8, final_logit_softcapping=0.5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():  # random RMSNorm weights start at 0 (scale 1); make the final norm matter
        model.model.norm.weight.normal_(0.0, 0.5)
    return _save(model, tokenizer, directory)


def build_neox(directory: Path) -> Path:
    """GPT-NeoX (LayerNorm `gpt_neox.final_layer_norm`, untied `embed_out`), 2 layers, d_model 32."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tokenizer = byte_level_tokenizer()
    torch.manual_seed(7)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model = GPTNeoXForCausalLM(config)
    with torch.no_grad():  # a LayerNorm starts as the identity affine map; give it a real scale and shift
        model.gpt_neox.final_layer_norm.weight.normal_(1.0, 0.5)
        model.gpt_neox.final_layer_norm.bias.normal_(0.0, 0.5)
    return _save(model, tokenizer, directory)


def build_stablelm(directory: Path) -> Path:
    """StableLM, an architecture whose final norm lmviz does not know (for the loud failure)."""
    from transformers import StableLmConfig, StableLmForCausalLM

    tokenizer = byte_level_tokenizer()
    torch.manual_seed(8)
    config = StableLmConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return _save(StableLmForCausalLM(config), tokenizer, directory)
