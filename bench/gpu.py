"""GPU check: lens, next-token distribution, beam search and loss on CUDA against CPU float32.

Run from the repo root where torch sees a CUDA GPU: `python bench/gpu.py` (about 3 minutes). It needs
torch, transformers, safetensors and tokenizers, imports only lmviz's backend (no streamlit, no plotly)
and downloads nothing: it builds its two models here from configs with random weights,

- "smollm-like": Llama-style, 30 layers, d_model 576, 9 heads (3 KV), vocabulary 49,152 (~135M);
- "1b-llama": Llama-style, 16 layers, d_model 2048, 32 heads (8 KV), vocabulary 128,256 (~1.2B);

saves them as safetensors folders and loads each three ways through lmviz's own loading code: CPU
float32 (the reference), CUDA float32 and CUDA bfloat16. On fixed texts it prints, per model and way:
the max error of the lens's top-k probabilities and next-token cross-entropies against CPU float32,
the share of equal top-1 tokens, the next-token distribution's max error, whether beam search gives
the same hypotheses as on the CPU (float32) and as generate() in the same dtype on the GPU, how many
greedy and seeded sampled runs (lmviz's one decoding loop, drawing from a generator on the model's
device) give generate()'s tokens there after torch.manual_seed, the loss difference, and the speedups
over the CPU. On a machine without CUDA it says so and exits 0;
`--cpu` runs the same checks with the CPU in the GPU's place (to try the script anywhere).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

TEXT = ("The logit lens reads a language model layer by layer. Every hidden state is sent through the "
        "model's own final norm and unembedding. Paris is the capital of France, and Rome of Italy. ") * 2


def build(directory: Path, layers: int, width: int, heads: int, kv_heads: int, vocab: int, mlp: int) -> str:
    """A Llama-style causal LM with seeded random weights and a byte-level tokenizer, saved as safetensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.tiny_models import byte_level_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    byte_level_tokenizer(400).save_pretrained(directory)
    return str(directory)


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


def check(folder: str, label: str, device: str = "cuda") -> None:
    from lmviz.analyses import beam, lens, loss, sampling
    from lmviz.model import models
    from lmviz.forward import trace as tracing
    from lmviz.forward.cache import CACHE

    runs = {}
    ways = [("cpu", "float32"), (device, "float32"), (device, "bfloat16")]
    for where, dtype in dict.fromkeys(ways):
        lm = models.load(folder, device=where, dtype=dtype)
        CACHE.clear()
        tracing.run_trace(lm, TEXT)  # warm-up (kernels, allocator)
        t_lens, result = timed(lambda: lens.run_logit_lens(lm, tracing.run_trace(lm, TEXT), k=5))
        t_beam, tree = timed(lambda: beam.beam_search(lm, "Paris is the capital of", 3, 8, 1.0, False))
        t_loss, report = timed(lambda: loss.loss_report(lm, TEXT, cross_check=False))
        dist = sampling.next_token(lm, "Paris is the capital of")
        runs[(where, dtype)] = (lm, t_lens, result, t_beam, tree, t_loss, report, dist)
    ref = runs[("cpu", "float32")]
    print(f"{label}: {ref[0].n_layers} layers, d_model {ref[0].d_model}, vocab {ref[0].vocab_size}, "
          f"{ref[0].n_params / 1e6:.0f}M parameters; {ref[2].n_tokens} tokens")
    print(f"  cpu float32: lens {ref[1]:.2f} s, beam {ref[3]:.2f} s, loss {ref[5]:.2f} s (the reference)")
    for key in dict.fromkeys(ways[1:]):
        lm, t_lens, result, t_beam, tree, t_loss, report, dist = runs[key]
        probs = (result.top_probs - ref[2].top_probs).abs().max().item()
        nll = (result.next_token_nll[:, :-1] - ref[2].next_token_nll[:, :-1]).abs().max().item()
        top1 = (result.top_ids[..., 0] == ref[2].top_ids[..., 0]).float().mean().item()
        dist_error = (dist.model_probs[:20] - ref[7].model_probs[:20]).abs().max().item()
        same_beams = [h.token_ids for h in tree.final] == [h.token_ids for h in ref[4].final]
        generated = generate_beams(lm, "Paris is the capital of", 3, 8)
        equal_generate = all(list(h.token_ids) == row[:h.length] for h, row in zip(tree.final, generated))
        sampled, tried = sampled_equal(lm, "Paris is the capital of", 12)
        print(f"  {key[0]} {key[1]}: lens {t_lens:.2f} s ({ref[1] / t_lens:.1f}x), beam {t_beam:.2f} s "
              f"({ref[3] / t_beam:.1f}x), loss {t_loss:.2f} s ({ref[5] / t_loss:.1f}x); "
              f"max |lens top-k prob error| {probs:.2e}, max |lens NLL error| {nll:.2e}, equal top-1 {top1:.2%}, "
              f"max |next-token prob error| {dist_error:.2e}, beams equal to CPU float32: {same_beams}, "
              f"beams equal to generate() in {key[1]}: {equal_generate}, "
              f"greedy/sampled tokens equal to generate() in {key[1]}: {sampled}/{tried}, "
              f"|loss difference| {abs(report.mean_nll - ref[6].mean_nll):.2e} nats")


@torch.inference_mode()
def generate_beams(lm, text: str, beams: int, new_tokens: int) -> list[list[int]]:
    """generate(num_beams=…) on the same model and device: the new tokens of each returned hypothesis."""
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]], device=lm.device)
    out = lm.model.generate(ids, num_beams=beams, num_return_sequences=beams, max_new_tokens=new_tokens,
                            do_sample=False, early_stopping=False, length_penalty=1.0,
                            pad_token_id=lm.tokenizer.pad_token_id or 0)
    return [row[ids.shape[1]:].tolist() for row in out]


def sampled_equal(lm, text: str, new_tokens: int, seed: int = 0) -> tuple[int, int]:
    """(runs equal to generate(), runs): greedy and seeded sampling at several settings
    (sampling.generate), and beam.sample, token for token against generate() on the same model and
    device with torch.manual_seed(seed) just before it."""
    from lmviz.analyses import beam, sampling
    from lmviz.analyses.sampling import SamplingSettings

    def reference(**kwargs) -> list[int]:
        ids = torch.tensor([lm.tokenizer(text)["input_ids"]], device=lm.device)
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                    pad_token_id=lm.tokenizer.pad_token_id or 0, **kwargs)
        return out[0, ids.shape[1]:].tolist()

    runs = [(sampling.generate(lm, text, settings, steps=new_tokens, seed=seed).token_ids,
             reference(**settings.generate_kwargs()))
            for settings in (SamplingSettings(temperature=0), SamplingSettings(temperature=0.8, top_p=0.9),
                             SamplingSettings(temperature=1.2, top_k=40, min_p=0.05),
                             SamplingSettings(repetition_penalty=1.3))]
    runs.append((list(beam.sample(lm, text, new_tokens, seed=seed).token_ids),
                 reference(do_sample=True, top_k=0, top_p=1.0, temperature=1.0)))
    return sum(ours == theirs for ours, theirs in runs), len(runs)


def main() -> None:
    if "--cpu" in sys.argv:  # the same checks with the CPU in the GPU's place, on the small model: tries the script
        with tempfile.TemporaryDirectory() as scratch:
            check(build(Path(scratch) / "smollm-like", 30, 576, 9, 3, 49_152, 1536), "smollm-like on the CPU", "cpu")
        return
    if not torch.cuda.is_available():
        print("bench/gpu.py: skipped, torch sees no CUDA GPU on this machine.")
        return
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        check(build(root / "smollm-like", 30, 576, 9, 3, 49_152, 1536), "smollm-like (~135M)")
        check(build(root / "1b-llama", 16, 2048, 32, 8, 128_256, 8192), "1b-llama (~1.2B)")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
