"""AntiBERTy: a real masked LM (and two classifiers) that ships inside a PyPI package.

`antiberty==0.1.3` (MIT) carries the weights of a 26M-parameter BERT masked LM
over antibody sequences, with a heavy/light chain and a six-species head. The
first use converts its pickled checkpoint (read with weights_only=True: tensors
only) into three safetensors folders that lmviz.model.models.load reads like any other.
"""

from __future__ import annotations

import torch

from lmviz.errors import LmvizError

ANTIBERTY_PIP = "antiberty==0.1.3"  # MIT; later versions download their weights instead of shipping them
MODELS = {"antiberty": "mlm", "antiberty-chain": "chain", "antiberty-species": "species"}  # name -> folder


ANTIBERTY_CHAIN = {0: "Heavy", 1: "Light"}  # AntiBERTyRunner.LABEL_TO_CHAIN


ANTIBERTY_SPECIES = {0: "Camel", 1: "Human", 2: "Mouse", 3: "Rabbit", 4: "Rat", 5: "Rhesus"}  # LABEL_TO_SPECIES


ANTIBODY_HEAVY = (  # trastuzumab's heavy-chain variable domain, a published antibody sequence
    "EVQLVESGGGLVQPGGSLRLSCAASGFNIKDTYIHWVRQAPGKGLEWVARIYPTNGYTRYADSVKGRFTISADTSKNTAYLQMNSLRAEDTAVYYCSRW"
    "GGDGFYAMDYWGQGTLVTVSS"
)


def antiberty_available() -> bool:
    """True when the antiberty package (with its weights) is installed."""
    import importlib.util

    return importlib.util.find_spec("antiberty") is not None


def _antiberty_tokenizer(vocab_file: str):
    """WordPiece over AntiBERTy's 25-token vocabulary that splits every residue letter on its own,
    so "EVQLV[MASK]SGG" works as well as AntiBERTy's own spaced "E V Q L V [MASK] S G G"."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers, processors
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    vocab = {line.strip(): i for i, line in enumerate(open(vocab_file, encoding="utf-8")) if line.strip()}
    tokenizer = Tokenizer(tk_models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def prepare_antiberty(target: str | None = None, progress=None) -> dict[str, str]:
    """Turn the AntiBERTy weights shipped inside PyPI `antiberty==0.1.3` into folders lmviz loads.

    Returns {"mlm": BertForMaskedLM folder, "chain": heavy/light classifier folder,
    "species": six-species classifier folder}. The package keeps a pickled
    `pytorch_model.bin`; it is read with torch.load(weights_only=True), which
    unpickles tensors only, and written out as safetensors (once; later calls
    return the folders). The two classifiers are AntiBERTy's own trained heads
    on the pooled [CLS] state, i.e. exactly BertForSequenceClassification.
    """
    import importlib.util
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    from lmviz.model.embedded import cache_dir

    progress = progress or (lambda message: None)
    root = Path(target) if target else cache_dir() / "antiberty-0.1.3"
    folders = {name: root / name for name in ("mlm", "chain", "species")}
    if all((folder / "model.safetensors").exists() for folder in folders.values()):
        return {name: str(folder) for name, folder in folders.items()}
    found = importlib.util.find_spec("antiberty")  # locates the package without importing it
    if found is None or found.origin is None:
        raise LmvizError(f"AntiBERTy is not installed: run `pip install --no-deps {ANTIBERTY_PIP}` first.")
    models_dir = Path(found.origin).parent / "trained_models"
    checkpoint = models_dir / "AntiBERTy_md_smooth"
    progress("Converting AntiBERTy's weights to safetensors (once) …")
    state = torch.load(checkpoint / "pytorch_model.bin", weights_only=True, map_location="cpu")
    raw = json.loads((checkpoint / "config.json").read_text())
    raw = {key: value for key, value in raw.items() if not key.startswith("_") and key != "architectures"}
    tokenizer = _antiberty_tokenizer(str(models_dir / "vocab.txt"))
    encoder = {key: value for key, value in state.items() if key.startswith("bert.") and "position_ids" not in key}

    def build(name: str):
        if name == "mlm":
            model = BertForMaskedLM(BertConfig(**raw, architectures=["BertForMaskedLM"]))
            weights = {k: v for k, v in encoder.items() if not k.startswith("bert.pooler.")}
            weights.update({k: v for k, v in state.items() if k.startswith("cls.predictions.")})
        else:
            labels = ANTIBERTY_CHAIN if name == "chain" else ANTIBERTY_SPECIES
            config = BertConfig(**raw, architectures=["BertForSequenceClassification"], id2label=labels,
                                label2id={v: k for k, v in labels.items()})
            model = BertForSequenceClassification(config)
            weights = dict(encoder, **{"classifier.weight": state[f"cls.{name}.weight"],
                                       "classifier.bias": state[f"cls.{name}.bias"]})
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if k not in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")]
        if missing or unexpected:
            raise LmvizError(f"AntiBERTy's checkpoint does not fit {type(model).__name__}: {missing + unexpected}")
        return model

    root.mkdir(parents=True, exist_ok=True)
    for name, folder in folders.items():
        model = build(name)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    progress(f"AntiBERTy folders written under {root}.")
    return {name: str(folder) for name, folder in folders.items()}
