"""Device and dtype: how they are chosen, and what bfloat16 and float16 do to the numbers (tested against
float32 within the tolerances lmviz states and prints)."""

import json

import pytest
import torch

from lmviz import cli
from lmviz.analyses import beam, lens, loss, sampling
from lmviz.model import models, placement
from lmviz.forward import trace as tracing
from lmviz.errors import LmvizError
from tests.test_beam import assert_matches_generate

# other texts than the ones the tolerances were measured on
TEXTS = ["Once upon a time, there was a little girl who lived in a village near the forest.",
         "def add(a, b):\n    return a + b\n\nprint(add(2, 3))"]


def test_choosing_device_and_dtype(monkeypatch):
    for name in ("LMVIZ_DEVICE", "LMVIZ_DTYPE", "LMVIZ_DEVICE_MAP"):
        monkeypatch.delenv(name, raising=False)
    default = placement.placement()
    assert default.dtype == torch.float32 and default.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert placement.placement(dtype="bfloat16").dtype == torch.bfloat16
    monkeypatch.setenv("LMVIZ_DTYPE", "float16")
    assert placement.placement().dtype == torch.float16 and placement.placement(dtype="float32").dtype == torch.float32
    # auto on a CPU: bfloat16 only where the CPU multiplies bfloat16 natively
    monkeypatch.setattr(placement, "cpu_bf16_flags", lambda: ("amx_bf16",))
    chosen = placement.placement(device="cpu", dtype="auto")
    assert chosen.dtype == torch.bfloat16 and "amx_bf16" in chosen.reason
    monkeypatch.setattr(placement, "cpu_bf16_flags", lambda: ())
    chosen = placement.placement(device="cpu", dtype="auto")
    assert chosen.dtype == torch.float32 and "no native bfloat16" in chosen.reason
    with pytest.raises(LmvizError, match="Unknown dtype 'int8'"):
        placement.placement(dtype="int8")
    with pytest.raises(LmvizError, match="Unknown device"):
        placement.placement(device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(LmvizError, match="no CUDA GPU"):
            placement.placement(device="cuda")
    monkeypatch.setenv("LMVIZ_DEVICE_MAP", "balanced")
    with pytest.raises(LmvizError, match="LMVIZ_DEVICE_MAP"):
        placement.placement()


def test_the_flags_are_read_from_the_cpu():
    with open("/proc/cpuinfo") as cpuinfo:
        flags = next(line for line in cpuinfo if line.startswith("flags")).split()
    assert placement.cpu_bf16_flags() == tuple(f for f in placement.CPU_BF16_FLAGS if f in flags)


@pytest.mark.parametrize("name, dtype", [("smollm2-135m", "bfloat16"), ("smollm2-135m", "float16"),
                                         ("gemma3-270m", "bfloat16")])
def test_low_precision_within_the_stated_tolerance(smollm, gemma, name, dtype):
    """Every layer of the lens and the text's loss in bfloat16/float16 against float32, within the tolerance
    the sidebar and --json state."""
    exact, low = models.load(name), models.load(name, dtype=dtype)
    assert low.model.dtype == placement.DTYPES[dtype] and low.placement.reason == f"{dtype} as asked"
    stated = placement.tolerance(low.model.dtype)
    for text in TEXTS:
        a = lens.run_logit_lens(exact, tracing.trace(exact, text), k=3)
        b = lens.run_logit_lens(low, tracing.trace(low, text), k=3)
        assert (a.top_probs - b.top_probs).abs().max() <= stated["probability"]
        assert (a.next_token_nll[:, :-1] - b.next_token_nll[:, :-1]).abs().max() <= stated["nll"]
        assert (a.entropy - b.entropy).abs().max() <= stated["entropy"]
        report_a, report_b = loss.loss_report(exact, text), loss.loss_report(low, text)
        assert abs(report_a.mean_nll - report_b.mean_nll) <= stated["nll"]
        assert report_b.model_loss is not None and abs(report_b.mean_nll - report_b.model_loss) <= stated["nll"]


def test_bfloat16_beam_and_sampling_equal_the_model_in_bfloat16(smollm):
    """In bfloat16, beam search equals generate() in bfloat16, and the next-token distribution is the
    float32 softmax of the bfloat16 model's own logits."""
    low = models.load("smollm2-135m", dtype="bfloat16")
    assert_matches_generate(low, "This weekend I plan to", 3, 6, 1.0, False)
    dist = sampling.next_token(low, "The capital of France is")
    ids = low.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = low.model(ids).logits[0, -1].float().softmax(-1)
    top = probs.topk(5)
    assert dist.token_ids[:5].tolist() == top.indices.tolist()  # rows are sorted by probability
    assert torch.allclose(dist.model_probs[:5].double(), top.values.double(), rtol=0, atol=1e-6)
    tree = beam.beam_search(low, "The capital of France is", 2, 4, 1.0, False)
    assert tree.final[0].length == 4


def test_float16_overflow_is_refused_at_load(gemma):
    with pytest.raises(LmvizError, match="inf or NaN in float16"):
        models.load("gemma3-270m", dtype="float16")


def test_cli_dtype_and_placement_in_json(smollm, capsys):
    assert cli.main(["sample", "The capital of France is", "--dtype", "bfloat16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["placement"] == [{"model": "smollm2-135m", "device": "cpu", "device_map": None, "dtype": "bfloat16",
                                 "why": "bfloat16 as asked", "memory_mb": out["placement"][0]["memory_mb"],
                                 "tolerance": placement.tolerance(torch.bfloat16)}]
    assert 200 < out["placement"][0]["memory_mb"] < 300  # 134.5M parameters x 2 bytes
    assert cli.main(["sample", "Hi", "--dtype", "int4"]) == 2
    assert "Unknown dtype 'int4'" in capsys.readouterr().err
