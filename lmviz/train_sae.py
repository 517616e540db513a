"""Train the embedded sparse autoencoder (SAE) of SmolLM2: `lmviz train-sae`.

The recipe, whole (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"):

- **Corpus**: freely licensed English text installed from Debian, never a model hub
  (`SOURCES`; install with `apt-get install bible-kjv fortunes python3.11-doc debian-handbook
  wordnet-base`). Each source is cut into documents; every `HELD_OUT_EVERY`-th document is held
  out for evaluation, and Jane Austen's *Pride and Prejudice* (shipped in lmviz/data, public
  domain) is held out whole: narrative prose the SAE never saw.
- **Activations**: each split's documents are tokenized, joined with a blank line, and cut
  into sequences of `CONTEXT` tokens; block `LAYER`'s input (`blocks.8.hook_resid_pre`) is read
  through the seam with a pass that stops there, and kept on disk in float16. The first
  position of each sequence (an attention sink, whose norm is an outlier) is dropped.
- **SAE**: TopK (`K` of `D_SAE` latents), decoder rows of unit norm, encoder initialised as the
  decoder's transpose, b_dec at the data's mean; inputs scaled so that E‖x‖² = d_in while
  training, the scale folded into the weights at the end (so the folder needs no
  normalisation). Loss: ‖x − x̂‖² plus `AUX_COEF` × the AuxK loss, which makes the `K_AUX`
  largest latents that have not fired for `DEAD_AFTER` tokens reconstruct the residual error.
  One pass over the training tokens (`EPOCHS`), batches of `BATCH`,
  Adam, learning rate `LR`, decayed linearly to 0 over the last 20% of steps.
- **Evaluation** on held-out text: explained variance, cross-entropy recovered
  ((CE_zero − CE_sae)/(CE_zero − CE_clean), the reconstruction spliced in at every position
  but the first, zero ablation of the same site as the baseline), dead latents, L0.
- **Index**: each latent's top `N_CONTEXTS` windows of `WINDOW` tokens over the whole corpus,
  with the latent's activation at every token of the window (uint8, as a fraction of the
  context's maximum).

Everything is written in SAELens's folder format (`cfg.json`, `sae_weights.safetensors`) plus
`contexts.safetensors`, `training_log.json` and `README.md`.
"""

from __future__ import annotations

import html
import json
import math
import re
import subprocess
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lmviz.analyses.contexts import NEURONS
from lmviz.analyses.sae import SAES
from lmviz.errors import LmvizError

MODEL = "smollm2-135m"
LAYER = 8
SITE = f"blocks.{LAYER}.hook_resid_pre"
CONTEXT = 128
D_SAE = 4608
K = 32
K_AUX = 256
AUX_COEF = 1 / 32
AUX_ROWS = 512  # the AuxK loss is computed on the batch's first rows: K_AUX gathered columns each
DEAD_AFTER = 1_000_000  # tokens without firing before a latent counts as dead for the AuxK loss
BATCH = 4096
LR = 4e-4
EPOCHS = 1  # 3.2M tokens seen once: more presentations than 3 epochs of the 0.59M-token probe
HELD_OUT_EVERY = 6
N_CONTEXTS = 20
WINDOW = 24  # tokens per context: 16 before the maximum, the maximum, 7 after
BEFORE = 16
CE_TOKENS = 40_000
TRAIN_EVAL_TOKENS = 500_000  # the training split's own explained variance, on its first tokens  # held-out tokens (per set) on which CE recovered is measured: 3 full passes each
NAME = "smollm2-135m-res8-topk"
FOLDER = SAES / NAME


# ---------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Source:
    """One part of the corpus: where it comes from, its licence, how to read it, and its token budget."""

    name: str
    package: str  # the Debian package that installs it
    licence: str
    read: Callable[[], list[str]]  # -> documents
    tokens: int  # most tokens taken (train and held-out together), in document order


def _kjv() -> list[str]:
    """The King James Bible, one document per chapter (the `bible` program decodes the package's data)."""
    try:
        out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise LmvizError(f"The corpus needs Debian's bible-kjv (apt-get install bible-kjv): {error}") from None
    chapters: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = re.match(r"(\w+?)(\d+):\d+ (.*)", line)
        if match:
            chapters.setdefault(match[1] + match[2], []).append(match[3])
    return [" ".join(verses) for verses in chapters.values()]


def _files(root: str, pattern: str) -> list[Path]:
    files = sorted(Path(root).glob(pattern))
    if not files:
        raise LmvizError(f"The corpus found no {pattern} under {root}: install its Debian package (see lmviz.train_sae).")
    return files


def _python_docs() -> list[str]:
    """Python 3.11's documentation sources (reStructuredText), one document per file: tutorial, how-tos, FAQ,
    the language reference and the library reference."""
    root = "/usr/share/doc/python3.11-doc/html/_sources"
    return [path.read_text(errors="replace") for part in ("tutorial", "howto", "faq", "reference", "library")
            for path in _files(root, f"{part}/*.rst.txt")]


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style", "head")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style", "head") and self.skip > 0
        if tag in ("p", "div", "li", "pre", "h1", "h2", "h3", "h4", "tr"):
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def _handbook() -> list[str]:
    """The Debian Administrator's Handbook (English HTML, tags stripped), one document per page."""
    docs = []
    for path in _files("/usr/share/doc/debian-handbook/html/en-US", "*.html"):
        parser = _Text()
        parser.feed(path.read_text(errors="replace"))
        text = re.sub(r"\n\s*\n+", "\n\n", html.unescape("".join(parser.parts))).strip()
        docs.append(re.sub(r"[ \t]+", " ", text))
    return docs


def _fortunes() -> list[str]:
    """The fortune cookies of Debian's `fortunes` (quotations, jokes, short verse), 40 cookies a document."""
    cookies = []
    for path in _files("/usr/share/games/fortunes", "*"):
        if path.suffix or path.name == "ascii-art" or not path.is_file():
            continue
        cookies += [c.strip() for c in path.read_text(errors="replace").split("\n%\n") if c.strip()]
    return ["\n\n".join(cookies[i:i + 40]) for i in range(0, len(cookies), 40)]


def _wordnet() -> list[str]:
    """WordNet 3.0's glosses (definitions and example sentences), 60 entries a document."""
    entries = []
    for part in ("noun", "verb", "adj", "adv"):
        for line in _files("/usr/share/wordnet", f"data.{part}")[0].read_text(errors="replace").splitlines():
            if line[:1].isdigit() and " | " in line:
                head, gloss = line.split(" | ", 1)
                entries.append(f"{head.split()[4].replace('_', ' ')}: {gloss.strip()}")
    return ["\n".join(entries[i:i + 60]) for i in range(0, len(entries), 60)]


SOURCES = (
    Source("kjv", "bible-kjv-text (with bible-kjv to read it)", "public domain", _kjv, 1_100_000),
    Source("python-docs", "python3.11-doc", "PSF License (Python Software Foundation)", _python_docs, 1_250_000),
    Source("debian-handbook", "debian-handbook", "GPL-2+ or CC-BY-SA-3.0", _handbook, 700_000),
    Source("fortunes", "fortunes", "public domain and BSD-style (see /usr/share/doc/fortunes/copyright)",
           _fortunes, 600_000),
    Source("wordnet", "wordnet-base", "WordNet 3.0 licence (Princeton, permissive)", _wordnet, 600_000),
)
UNSEEN = "pride_and_prejudice"  # lmviz/data/pride_and_prejudice.txt: public domain, held out whole


def build_corpus(tokenizer) -> dict[str, dict[str, list[int]]]:
    """Per split ("train", "held_out", "unseen"), per source, the token ids of its documents joined by a
    blank line. Deterministic: documents in file order, each source cut at its token budget."""
    separator = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    splits: dict[str, dict[str, list[int]]] = {"train": {}, "held_out": {}, "unseen": {}}
    for source in SOURCES:
        used, streams = 0, {"train": [], "held_out": []}
        for index, doc in enumerate(source.read()):
            ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
            if used >= source.tokens:
                break
            ids = ids[:source.tokens - used]
            used += len(ids)
            streams["held_out" if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else "train"] += ids + separator
        for split, stream in streams.items():
            splits[split][source.name] = stream
    text = (Path(__file__).parent / "data" / f"{UNSEEN}.txt").read_text()
    splits["unseen"][UNSEEN] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return splits


def sequences(stream: list[int]) -> np.ndarray:
    """A token stream cut into (n, CONTEXT) rows (the last partial row dropped), uint16."""
    n = len(stream) // CONTEXT
    return np.asarray(stream[:n * CONTEXT], dtype=np.uint16).reshape(n, CONTEXT)


# ---------------------------------------------------------------- activations


def collect(lm, rows: np.ndarray, path: Path, batch: int = 16, log=print) -> np.memmap:
    """Block LAYER's input for every row, position 0 dropped: a float16 (n·(CONTEXT−1), d_model) file."""
    from lmviz.model.interventions import Recording, Site, forward

    out = np.lib.format.open_memmap(path.with_suffix(".part.npy"), mode="w+", dtype=np.float16,
                                    shape=(len(rows) * (CONTEXT - 1), lm.d_model))
    site, start = Site(SITE), time.time()
    for first in range(0, len(rows), batch):
        ids = torch.as_tensor(rows[first:first + batch].astype(np.int64))
        record = Recording([site], every_row=True, stop=True)
        forward(lm, ids, record=record)
        acts = record[site][:, 1:].reshape(-1, lm.d_model).float().numpy().astype(np.float16)
        out[first * (CONTEXT - 1):first * (CONTEXT - 1) + len(acts)] = acts
        if first // batch % 100 == 0:
            done = (first + len(ids)) * CONTEXT
            log(f"  {path.name}: {done:,} tokens, {done / (time.time() - start):,.0f} tokens/s")
    out.flush()
    del out
    path.with_suffix(".part.npy").rename(path)
    return np.load(path, mmap_mode="r")


# ---------------------------------------------------------------- the SAE


class TopK(torch.nn.Module):
    """f = top-K of relu(W_encᵀ(x − b_dec) + b_enc), x̂ = W_dec f + b_dec (SAELens's `topk` architecture)."""

    def __init__(self, d_in: int, d_sae: int, b_dec: torch.Tensor):
        super().__init__()
        w = torch.randn(d_sae, d_in)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w)
        self.W_enc = torch.nn.Parameter(w.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(b_dec.clone())

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """Every latent's pre-activation (b_dec's gradient comes from the decoder alone: one matmul fewer)."""
        return (x - self.b_dec.detach()) @ self.W_enc + self.b_enc

    def decode(self, values: torch.Tensor, index: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """Σ_k values_k · W_dec[index_k] (+ b_dec): an embedding bag, which never forms (batch, k, d_in)."""
        out = torch.nn.functional.embedding_bag(index, self.W_dec, per_sample_weights=values, mode="sum")
        return out + self.b_dec if bias else out

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)


def train(acts: np.ndarray, log=print, seed: int = 0) -> tuple[TopK, float, list[dict]]:
    """Train a TopK SAE on (n, d) activations; returns it (on scaled inputs), the input scale, and the log."""
    torch.manual_seed(seed)
    n, d = acts.shape
    sample = torch.from_numpy(np.asarray(acts[:: max(1, n // 200_000)], dtype=np.float32))
    scale = math.sqrt(d / sample.pow(2).sum(1).mean().item())
    sae = TopK(d, D_SAE, sample.mean(0) * scale)
    opt = torch.optim.Adam(sae.parameters(), lr=LR, betas=(0.9, 0.999))
    total = n // BATCH * EPOCHS
    since_fired = torch.zeros(D_SAE)
    entries, start, step = [], time.time(), 0
    for epoch in range(EPOCHS):
        order = np.random.default_rng(seed + epoch).permutation(n // BATCH)
        for block in order:
            x = torch.from_numpy(np.asarray(acts[block * BATCH:(block + 1) * BATCH], dtype=np.float32)) * scale
            pre = sae.pre(x)
            values, index = pre.topk(K, dim=1)
            values = values.relu()
            x_hat = sae.decode(values, index)
            error = x - x_hat
            mse = error.pow(2).sum(1).mean()
            variance = (x - x.mean(0)).pow(2).sum(1).mean()
            fired = torch.zeros(D_SAE, dtype=torch.bool)
            fired[index[values > 0]] = True
            since_fired += BATCH
            since_fired[fired] = 0
            dead = since_fired >= DEAD_AFTER
            aux = torch.zeros(())
            if dead.any():  # AuxK: the dead latents' top K_AUX reconstruct what the live ones missed
                k_aux, rows = min(K_AUX, int(dead.sum())), slice(0, AUX_ROWS)
                aux_values, aux_index = pre[rows].masked_fill(~dead, -torch.inf).topk(k_aux, dim=1)
                aux_hat = sae.decode(aux_values.relu(), aux_index, bias=False)
                residual = error[rows].detach()
                aux = (residual - aux_hat).pow(2).sum(1).mean() / residual.pow(2).sum(1).mean().clamp_min(1e-9)
                aux = torch.nan_to_num(aux, nan=0.0)
            loss = mse + AUX_COEF * aux
            lr = LR * min(1.0, (total - step) / (0.2 * total))
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # keep only the gradient that does not change the decoder rows' norms
                w, g = sae.W_dec, sae.W_dec.grad
                g -= (g * w).sum(1, keepdim=True) * w
            opt.step()
            sae.normalize_decoder()
            if step % 50 == 0 or step == total - 1:
                entry = {"step": step, "epoch": epoch, "tokens": (step + 1) * BATCH, "mse": round(mse.item(), 5),
                         "explained_variance": round(1 - mse.item() / variance.item(), 4),
                         "aux_loss": round(float(aux), 4), "dead": int(dead.sum()), "lr": lr,
                         "seconds": round(time.time() - start, 1)}
                entries.append(entry)
                log(json.dumps(entry))
            step += 1
    return sae, scale, entries


def folded(sae: TopK, scale: float) -> dict[str, torch.Tensor]:
    """The weights for raw (unscaled) inputs: with x' = s·x, W_encᵀ(x' − b) = (s·W_enc)ᵀ(x − b/s), and
    x̂ = (W_dec f + b)/s. So W_enc·s, b_dec/s, W_dec/s; b_enc unchanged."""
    return {"W_enc": (sae.W_enc * scale).detach(), "b_enc": sae.b_enc.detach(),
            "W_dec": (sae.W_dec / scale).detach(), "b_dec": (sae.b_dec / scale).detach()}


def encode(weights: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-K values after ReLU, their indices) of raw inputs x (n, d)."""
    pre = (x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"]
    values, index = pre.topk(K, dim=1)
    return values.relu(), index


def decode(weights: dict[str, torch.Tensor], values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bn,bnd->bd", values, weights["W_dec"][index]) + weights["b_dec"]


# ---------------------------------------------------------------- evaluation


def reconstruction(weights, acts: np.ndarray, chunk: int = 8192) -> dict:
    """Explained variance (1 − Σ‖x − x̂‖² / Σ‖x − mean‖²), L0, and which latents ever fired, over acts."""
    n, d = acts.shape
    mean = torch.from_numpy(np.asarray(acts[:: max(1, n // 200_000)], dtype=np.float64)).mean(0)
    err = var = l0 = 0.0
    fired = torch.zeros(weights["W_enc"].shape[1], dtype=torch.bool)
    with torch.inference_mode():
        for first in range(0, n, chunk):
            x = torch.from_numpy(np.asarray(acts[first:first + chunk], dtype=np.float32))
            values, index = encode(weights, x)
            err += (x - decode(weights, values, index)).double().pow(2).sum().item()
            var += (x.double() - mean).pow(2).sum().item()
            l0 += (values > 0).sum().item()
            fired[index[values > 0]] = True
    return {"tokens": n, "explained_variance": 1 - err / var, "l0": l0 / n, "dead": int((~fired).sum()),
            "dead_fraction": float((~fired).float().mean())}


def cross_entropy(lm, weights, rows: np.ndarray, batch: int = 8) -> dict:
    """Mean next-token cross-entropy (nats) over rows, clean, with the SAE's reconstruction spliced in at
    every position but the first, and with the site zeroed there; and the share recovered."""
    from lmviz.model.interventions import Edit, Recording, Site, forward

    site = Site(SITE)
    totals = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    count = 0
    for first in range(0, len(rows), batch):
        ids = torch.as_tensor(rows[first:first + batch].astype(np.int64))
        record = Recording([site], every_row=True, stop=True)
        forward(lm, ids, record=record)
        x = record[site].float()
        values, index = encode(weights, x[:, 1:].reshape(-1, x.shape[-1]))
        spliced = x.clone()
        spliced[:, 1:] = decode(weights, values, index).reshape(x[:, 1:].shape)
        runs = {"clean": (), "sae": (Edit(site, spliced[:, 1:], at=slice(1, None)),),
                "zero": (Edit(site, 0.0, at=slice(1, None)),)}
        for name, edits in runs.items():
            logits = forward(lm, ids, edits=edits).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                    ids[:, 1:].reshape(-1), reduction="sum")
            totals[name] += nll.item()
        count += ids[:, 1:].numel()
    ce = {name: total / count for name, total in totals.items()}
    ce["recovered"] = (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"])
    ce["tokens"] = count
    return ce


# ---------------------------------------------------------------- the index of contexts


def index_contexts(weights, corpus_rows: list[np.ndarray], corpus_acts: list[np.ndarray], per_chunk: int = 64):
    """Per latent, its N_CONTEXTS strongest activations over the corpus (at most one per sequence), each with
    a WINDOW-token window of token ids and the latent's activation at each of them (uint8, 255 = the
    window's maximum)."""
    d_sae, span = weights["W_enc"].shape[1], CONTEXT - 1
    best = torch.full((d_sae, N_CONTEXTS), -1.0)
    where = torch.zeros((d_sae, N_CONTEXTS, 2), dtype=torch.int64)  # (part, flat token index)
    codes = []  # per part, every token's top-K (values, indices): the windows' activations are looked up here
    with torch.inference_mode():
        for part, acts in enumerate(corpus_acts):
            values_all = np.zeros((len(acts), K), dtype=np.float16)
            index_all = np.zeros((len(acts), K), dtype=np.int16)
            for first in range(0, len(acts), per_chunk * span):
                x = torch.from_numpy(np.asarray(acts[first:first + per_chunk * span], dtype=np.float32))
                values, index = encode(weights, x)
                values_all[first:first + len(x)] = values.numpy()
                index_all[first:first + len(x)] = index.numpy()
                dense = torch.zeros(len(x), d_sae).scatter_(1, index, values).view(-1, span, d_sae)
                seq_max, seq_at = dense.max(1)  # each sequence's strongest token, per latent
                flat = first + torch.arange(len(seq_max)).unsqueeze(1) * span + seq_at
                merged = torch.cat([best, seq_max.T], 1)
                merged_at = torch.cat([where, torch.stack([torch.full_like(flat.T, part), flat.T], -1)], 1)
                keep = merged.topk(N_CONTEXTS, dim=1).indices
                best = merged.gather(1, keep)
                where = merged_at.gather(1, keep.unsqueeze(-1).expand(-1, -1, 2))
            codes.append((values_all, index_all))
    ids = np.zeros((d_sae, N_CONTEXTS, WINDOW), dtype=np.uint16)
    acts_in = np.zeros((d_sae, N_CONTEXTS, WINDOW), dtype=np.uint8)
    length = np.zeros((d_sae, N_CONTEXTS), dtype=np.uint8)
    for latent in range(d_sae):
        for rank in range(N_CONTEXTS):
            if best[latent, rank] <= 0:
                continue
            part, flat = where[latent, rank].tolist()
            row, pos = divmod(flat, span)
            pos += 1  # position 0 was dropped
            lo = max(1, pos - BEFORE)
            hi = min(CONTEXT, lo + WINDOW)
            values, index = codes[part][0][flat - (pos - lo):flat + (hi - pos)], codes[part][1][
                flat - (pos - lo):flat + (hi - pos)]
            a = (values.astype(np.float32) * (index == latent)).sum(1)
            ids[latent, rank, :hi - lo] = corpus_rows[part][row, lo:hi]
            acts_in[latent, rank, :hi - lo] = np.round(255 * a / max(a.max(), 1e-9)).clip(0, 255)
            length[latent, rank] = hi - lo
    return {"max_activation": best.clamp_min(0).half(), "token_ids": torch.from_numpy(ids.astype(np.int32)).to(
        torch.uint16), "activations": torch.from_numpy(acts_in), "length": torch.from_numpy(length)}


# ---------------------------------------------------------------- the neurons' index


NEURON_SEQUENCES = 1600  # the bank: 1,600 sequences of CONTEXT tokens (204,800 tokens), from both splits
NEURON_TOP = 8  # contexts kept per neuron (at most one per sequence)


def neuron_index(lm, rows: np.ndarray, out: Path, batch: int = 16, log=print) -> None:
    """Every MLP neuron's NEURON_TOP strongest activations over `rows` (position 0 left out), as pointers into
    the bank of sequences shipped beside them; the windows' activations are recomputed exactly on demand
    (`lmviz.analyses.contexts.neuron_contexts`)."""
    from safetensors.torch import save_file
    from lmviz.model.interventions import Recording, Site, forward

    sites = [Site(f"blocks.{layer}.mlp.hook_post") for layer in range(lm.n_layers)]
    best = top_seq = top_pos = None
    start = time.time()
    for first in range(0, len(rows), batch):
        ids = torch.as_tensor(rows[first:first + batch].astype(np.int64))
        record = Recording(sites, every_row=True, stop=True)
        forward(lm, ids, record=record)
        acts = torch.stack([record[site][:, 1:] for site in sites]).float()  # (layer, seq, pos-1, d_mlp)
        seq_max, seq_at = acts.max(2)  # (layer, seq, d_mlp)
        seq_ids = (first + torch.arange(len(ids))).view(1, -1, 1).expand_as(seq_max)
        if best is None:
            best = torch.full((lm.n_layers, seq_max.shape[-1], NEURON_TOP), -torch.inf)
            top_seq = torch.zeros_like(best, dtype=torch.int64)
            top_pos = torch.zeros_like(best, dtype=torch.int64)
        merged = torch.cat([best, seq_max.permute(0, 2, 1)], -1)
        keep = merged.topk(NEURON_TOP, dim=-1).indices
        best = merged.gather(-1, keep)
        top_seq = torch.cat([top_seq, seq_ids.permute(0, 2, 1)], -1).gather(-1, keep)
        top_pos = torch.cat([top_pos, (seq_at + 1).permute(0, 2, 1)], -1).gather(-1, keep)
        if first // batch % 20 == 0:
            log(f"  neurons: {first + len(ids)} of {len(rows)} sequences, {time.time() - start:,.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    save_file({"token_ids": torch.from_numpy(rows.astype(np.int32)).to(torch.uint16).contiguous()},
              out / "bank.safetensors")
    save_file({"activation": best.half().contiguous(), "sequence": top_seq.to(torch.int16).contiguous(),
               "position": top_pos.to(torch.uint8).contiguous()}, out / "neurons.safetensors")
    log(f"neuron index: {lm.n_layers} layers x {best.shape[1]} neurons over {rows.size:,} tokens in "
        f"{time.time() - start:,.0f} s")


def neuron_bank(rows: dict[str, np.ndarray]) -> np.ndarray:
    """NEURON_SEQUENCES sequences spread evenly over the training and held-out splits."""
    both = np.concatenate([rows["train"], rows["held_out"]])
    return both[np.linspace(0, len(both) - 1, NEURON_SEQUENCES).astype(int)]


# ---------------------------------------------------------------- the command


def run(work: Path, out: Path) -> dict:
    """The whole recipe, resumable: the corpus's tokens and activations are kept in `work` and reused;
    the SAE folder is written to `out`. Returns the quality table."""
    from safetensors.torch import save_file
    from lmviz.model import models

    work.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        log_lines.append(line)

    lm = models.load(MODEL)
    torch.manual_seed(0)
    rows = {}
    if not (work / "corpus.json").exists():
        splits = build_corpus(lm.tokenizer)
        summary = {split: {name: len(ids) for name, ids in sources.items()} for split, sources in splits.items()}
        for split, sources in splits.items():
            np.save(work / f"{split}_ids.npy", sequences([i for ids in sources.values() for i in ids]))
        (work / "corpus.json").write_text(json.dumps(summary, indent=1))
    corpus = json.loads((work / "corpus.json").read_text())
    log(f"corpus tokens: {json.dumps(corpus)}")
    acts = {}
    for split in ("train", "held_out", "unseen"):
        rows[split] = np.load(work / f"{split}_ids.npy")
        path = work / f"{split}_acts.npy"
        if not path.exists():
            start = time.time()
            collect(lm, rows[split], path, log=log)
            log(f"collected {split}: {rows[split].size:,} tokens in {time.time() - start:,.0f} s")
        acts[split] = np.load(path, mmap_mode="r")
    start = time.time()
    sae, scale, entries = train(acts["train"], log=log)
    train_seconds = time.time() - start
    weights = folded(sae, scale)
    quality = {split: reconstruction(weights, acts[split][:TRAIN_EVAL_TOKENS] if split == "train" else acts[split])
               for split in ("train", "held_out", "unseen")}
    for split in ("held_out", "unseen"):
        n = min(len(rows[split]), CE_TOKENS // CONTEXT)
        quality[split]["cross_entropy"] = cross_entropy(lm, weights, rows[split][np.linspace(
            0, len(rows[split]) - 1, n).astype(int)])
    log(f"quality: {json.dumps(quality)}")
    start = time.time()
    contexts = index_contexts(weights, [rows["train"], rows["held_out"]], [acts["train"], acts["held_out"]])
    index_seconds = time.time() - start
    out.mkdir(parents=True, exist_ok=True)
    save_file({name: w.half().contiguous() for name, w in weights.items()}, out / "sae_weights.safetensors")
    save_file({name: t.contiguous() for name, t in contexts.items()}, out / "contexts.safetensors")
    cfg = {"architecture": "topk", "d_in": lm.d_model, "d_sae": D_SAE, "k": K,
           "activation_fn_kwargs": {"k": K}, "dtype": "float16", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "hook_name": SITE, "hook_layer": LAYER, "hook_head_index": None,
           "model_name": MODEL, "context_size": CONTEXT, "prepend_bos": False,
           "metadata": {"hook_name": SITE, "model_name": MODEL, "context_size": CONTEXT, "prepend_bos": False},
           "dataset_path": "Debian packages: " + ", ".join(s.package for s in SOURCES)}
    (out / "cfg.json").write_text(json.dumps(cfg, indent=1))
    (out / "training_log.json").write_text(json.dumps({
        "recipe": {"model": MODEL, "site": SITE, "d_sae": D_SAE, "k": K, "k_aux": K_AUX, "aux_coef": AUX_COEF,
                   "dead_after_tokens": DEAD_AFTER, "batch": BATCH, "lr": LR, "epochs": EPOCHS,
                   "context": CONTEXT, "held_out_every": HELD_OUT_EVERY, "input_scale": scale},
        "corpus": {"sources": [{"name": s.name, "package": s.package, "licence": s.licence, "token_budget": s.tokens}
                               for s in SOURCES], "tokens": corpus},
        "train_seconds": round(train_seconds), "index_seconds": round(index_seconds), "quality": quality,
        "steps": entries, "log": log_lines}, indent=1))
    log(f"wrote {out}")
    if not (NEURONS / MODEL / "neurons.safetensors").exists():
        neuron_index(lm, neuron_bank(rows), NEURONS / MODEL, log=log)
    return quality


if __name__ == "__main__":
    import sys

    run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("sae-work"), Path(sys.argv[2]) if len(sys.argv) > 2 else FOLDER)
