"""The information flow against a reference hooked by hand, in float64, and its sum check on real models.

The reference knows the families by name (where the attention, its value and output projections, a post-norm
and the MLP are; which post-norm formula) and recomputes every term from the weights: the values from the
attention's normalized input, c_{i→j} = Σ_h A^h[j,i] · W_O^h (W_V^g x̃_i + b_V^g), a post-norm held at its
scale, each proximity and its share. lmviz finds the parts on the model and splits the attention it recorded
through its seam, in blocks, so the two agree to float64 rounding (far below the 1e-9 allowed); a wrong
head, key, position or normalization is off by orders of magnitude more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmviz import cli
from lmviz.analyses import flow
from lmviz.errors import LmvizError
from tests import architecture_zoo, tiny_models
from tests.conftest import float64_model

TEXT = "The capital of France is Paris, and the capital of England is"
IOI = "When Mary and John went to the store, John gave a drink to"
TOLERANCE = 1e-9

FAMILIES = {  # model_type -> where the parts are, by hand; post: the post-attention norm's formula
    "llama": dict(attn="self_attn", v="self_attn.v_proj", o="self_attn.o_proj", attn_out="self_attn", mlp_out="mlp"),
    "gemma3_text": dict(attn="self_attn", v="self_attn.v_proj", o="self_attn.o_proj",
                        attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm", post="rms1"),
    "starcoder2": dict(attn="self_attn", v="self_attn.v_proj", o="self_attn.o_proj", attn_out="self_attn",
                       mlp_out="mlp"),
    "phi": dict(attn="self_attn", v="self_attn.v_proj", o="self_attn.dense", attn_out="self_attn", mlp_out="mlp"),
    "olmo2": dict(attn="self_attn", v="self_attn.v_proj", o="self_attn.o_proj", attn_out="post_attention_layernorm",
                  mlp_out="post_feedforward_layernorm", post="rms"),
}


@pytest.fixture(scope="module")
def zoo_dirs(tmp_path_factory) -> dict[str, str]:
    """Tiny random models of the families the fixtures lack: biases on the values and the output projection
    (StarCoder2), a parallel block (Phi), a post-norm with gain w (OLMo-2)."""
    root, tokenizer = tmp_path_factory.mktemp("flow-zoo"), tiny_models.byte_level_tokenizer()
    return {kind: str(architecture_zoo.build(kind, root / kind, tokenizer)) for kind in ("starcoder2", "phi", "olmo2")}


def directory_of(name: str, request) -> str:
    if name in ("llama", "gemma3"):
        return request.getfixturevalue("tiny_dirs" if name == "llama" else "tiny_lens_dirs")[name]
    return request.getfixturevalue("zoo_dirs")[name]


def proximity(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (y.abs().sum(-1) - (y - c).abs().sum(-1)).clamp_min(0)


@torch.no_grad()
def reference(directory: str, text: str) -> dict:
    """Every importance (and the heads' shares) of `text`, from a float64 eager copy hooked by hand."""
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float64, attn_implementation="eager").eval()
    config = model.config
    spec = FAMILIES[config.model_type]
    layers = model.model.layers
    seen: dict = {}
    handles = []
    def reads(key):  # a pre-hook keeping what a module reads
        return lambda module, args, kwargs: seen.__setitem__(key, args[0] if args else kwargs["hidden_states"])

    for l, layer in enumerate(layers):
        handles += [
            layer.register_forward_pre_hook(reads(("x", l)), with_kwargs=True),
            layer.get_submodule(spec["attn"]).register_forward_pre_hook(reads(("normed", l)), with_kwargs=True),
            layer.get_submodule(spec["attn"]).register_forward_hook(
                lambda m, a, out, l=l: seen.update({("A", l): out[1], ("o", l): out[0]})),
            layer.get_submodule(spec["attn_out"]).register_forward_hook(
                lambda m, a, out, l=l: seen.__setitem__(("a", l), out[0] if isinstance(out, tuple) else out)),
            layer.get_submodule(spec["mlp_out"]).register_forward_hook(
                lambda m, a, out, l=l: seen.__setitem__(("m", l), out[0] if isinstance(out, tuple) else out)),
        ]
    ids = AutoTokenizer.from_pretrained(directory)(text)["input_ids"]
    try:
        model(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    n, n_heads = len(ids), config.num_attention_heads
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    out = {"attn": [], "attn_resid": [], "attn_bias": [], "mlp": [], "mlp_resid": [], "heads": []}
    for l, layer in enumerate(layers):
        x, normed, A, a, m = (seen[key, l][0] for key in ("x", "normed", "A", "a", "m"))
        v_proj, o_proj = layer.get_submodule(spec["v"]), layer.get_submodule(spec["o"])
        v = normed @ v_proj.weight.T + (v_proj.bias if v_proj.bias is not None else 0)  # (pos, kv·d_head)
        v = v.view(n, -1, d_head).transpose(0, 1)  # (kv, pos, d_head)
        group = n_heads // v.shape[0]
        per_head = torch.stack([v[h // group] @ o_proj.weight[:, h * d_head:(h + 1) * d_head].T
                                for h in range(n_heads)])  # (head, key, d)
        parts = A.unsqueeze(-1) * per_head.unsqueeze(1)  # (head, query, key, d)
        bias = o_proj.bias if o_proj.bias is not None else torch.zeros(x.shape[-1], dtype=torch.float64)
        bias = bias.expand(n, -1)
        if "post" in spec:  # RMSNorm held at the attention output's scale: c · s_j · gain
            norm = layer.get_submodule(spec["attn_out"])
            o = seen["o", l][0]
            eps = norm.eps if hasattr(norm, "eps") else norm.variance_epsilon
            s = (o.pow(2).mean(-1, keepdim=True) + eps).rsqrt()
            gain = (1 + norm.weight) if spec["post"] == "rms1" else norm.weight
            parts = parts * (s * gain).unsqueeze(1)
            bias = bias * s * gain
        c = parts.sum(0)  # (query, key, d)
        assert torch.allclose(c.sum(1) + bias, a, atol=1e-10)  # the reference itself adds up
        y = x + a
        prox = proximity(y.unsqueeze(1), c).tril()
        total = prox.sum(-1) + proximity(y, x) + proximity(y, bias)
        out["attn"].append(prox / total[:, None])
        out["attn_resid"].append(proximity(y, x) / total)
        out["attn_bias"].append(proximity(y, bias) / total)
        heads = proximity(c.unsqueeze(0), parts)  # (head, query, key)
        out["heads"].append(heads / heads.sum(0).clamp_min(1e-300))
        z = y + m
        total = proximity(z, y) + proximity(z, m)
        out["mlp_resid"].append(proximity(z, y) / total)
        out["mlp"].append(proximity(z, m) / total)
    return {key: torch.stack(values) for key, values in out.items()} | {"ids": ids}


def expected(ref: dict, edge: flow.Edge) -> float:
    if edge.kind == "attn":
        return float(ref["attn"][edge.layer, edge.to_pos, edge.from_pos])
    if edge.kind == "mlp":
        return float(ref["mlp"][edge.layer, edge.to_pos])
    return float(ref["attn_resid" if edge.sublayer == "attn" else "mlp_resid"][edge.layer, edge.to_pos])


def complete_graph(n_layers: int, position: int) -> tuple[set, set]:
    """Every node and edge into Node(n_layers, position) (threshold 0), as (kind, sublayer, layer, from, to)."""
    nodes = {flow.Node(n_layers, position), flow.Node(n_layers - 1, position, True)}
    edges = {("resid", "mlp", n_layers - 1, position, position), ("mlp", "mlp", n_layers - 1, position, position)}
    for layer in range(n_layers):
        queries = [position] if layer == n_layers - 1 else range(position + 1)
        for j in queries:
            nodes.add(flow.Node(layer, j, True))
            edges.add(("resid", "attn", layer, j, j))
            edges |= {("attn", "attn", layer, i, j) for i in range(j + 1)}
            if layer < n_layers - 1:
                edges |= {("resid", "mlp", layer, j, j), ("mlp", "mlp", layer, j, j)}
        nodes |= {flow.Node(layer, i) for i in range(position + 1)}
    return nodes, edges


def check_against_reference(result: flow.Flow, ref: dict, position: int) -> None:
    nodes, edges = complete_graph(result.n_layers, position)
    assert set(result.nodes) == nodes
    assert {(e.kind, e.sublayer, e.layer, e.from_pos, e.to_pos) for e in result.edges} == edges
    assert len(result.edges) == len(edges)  # no edge twice
    worst = max(abs(edge.importance - expected(ref, edge)) for edge in result.edges)
    assert worst < TOLERANCE, worst
    for edge in result.edges_of("attn"):
        shares = ref["heads"][edge.layer, :, edge.to_pos, edge.from_pos]
        if expected(ref, edge) >= flow.HEAD_FLOOR * (1 + 1e-6):
            assert edge.heads, edge
            assert all(abs(share - float(shares[h])) < TOLERANCE for h, share in edge.heads)
            assert {h for h, _ in edge.heads} == {h for h in range(len(shares)) if shares[h] > TOLERANCE}
            assert [share for _, share in edge.heads] == sorted((share for _, share in edge.heads), reverse=True)
        elif expected(ref, edge) < flow.HEAD_FLOOR * (1 - 1e-6):
            assert edge.heads == ()


@pytest.mark.parametrize("family", ["llama", "gemma3", "starcoder2", "phi", "olmo2"])
def test_importances_equal_a_forward_hooked_by_hand(family, request):
    directory = directory_of(family, request)
    lm = float64_model(directory)
    ref = reference(directory, TEXT)
    position = len(ref["ids"]) - 3
    result = flow.flow(lm, TEXT, position, threshold=0)
    assert result.input_ids == tuple(ref["ids"])
    check_against_reference(result, ref, position)
    # float64 (a float32 post-norm's rounding aside: transformers' RMSNorms compute in float32)
    assert result.sum_error <= result.sum_bound < (1e-5 if family in ("gemma3", "olmo2") else 1e-9)
    sums = ref["attn"].sum(-1) + ref["attn_resid"] + ref["attn_bias"]
    assert torch.allclose(sums, torch.ones_like(sums))  # importances are shares: they sum to 1 in each sum


def test_the_cli_json_is_the_same_graph(tiny_dirs, capsys):
    directory = tiny_dirs["llama"]
    ref = reference(directory, TEXT)
    code = cli.main(["flow", TEXT, "--model", directory, "--dtype", "float64", "--threshold", "0", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    position = len(ref["ids"]) - 1
    assert out["position"] == position and out["threshold"] == 0 and out["input_ids"] == ref["ids"]
    assert out["tokens"][-1] == " is" and out["display"][-1] == "·is"  # exact text, and its shown form
    result = flow.Flow("", TEXT, tuple(out["input_ids"]), tuple(out["display"]), position, 0.0, out["layers"], 4,
                       tuple(flow.Node(n["layer"], n["position"], n["mid"]) for n in out["nodes"]),
                       tuple(flow.Edge(e["kind"], e["sublayer"], e["layer"], e["from"], e["to"], e["importance"],
                                       tuple((h["head"], h["share"]) for h in e.get("heads", ())))
                             for e in out["edges"]), out["sum_error"], out["sum_bound"])
    check_against_reference(result, ref, position)


@pytest.mark.parametrize("name", ["smollm", "gemma", "tiny_llama", "tiny_gemma3"])
def test_the_terms_add_up_to_the_attention_output(name, request):
    """float32 models: Σ_i c_{i→j} + b_j against hook_attn_out, within the bound derived from float32 rounding."""
    lm = request.getfixturevalue(name)
    result = flow.flow(lm, IOI)
    print(f"{name}: sum error {result.sum_error:.3g}, bound {result.sum_bound:.3g}")
    assert 0 <= result.sum_error <= result.sum_bound
    assert result.edges and result.nodes[-1] == flow.Node(lm.n_layers, result.position)
    assert all(edge.importance >= flow.DEFAULT_THRESHOLD for edge in result.edges)
    if name == "smollm":  # the IOI name mover: the indirect object's token reaches the last one through attention
        into_last = [e for e in result.edges_of("attn") if e.to_pos == result.position and e.from_pos == 1]
        assert into_last and max(e.importance for e in into_last) > 0.2


def test_a_split_that_does_not_add_up_is_refused(tiny_llama, monkeypatch):
    terms = flow._Block.terms
    monkeypatch.setattr(flow._Block, "terms", lambda self, *args: terms(self, *args) * (1 + 1e-4))
    with pytest.raises(LmvizError, match="not the sum of its tokens' values"):
        flow.flow(tiny_llama, TEXT)


def test_unsupported_models_and_bad_input_are_refused(tiny_gpt2, tiny_bert, tiny_llama):
    with pytest.raises(LmvizError, match="fused projection.*split its attention by token"):
        flow.flow(tiny_gpt2, TEXT)
    with pytest.raises(LmvizError, match="needs a causal language model"):
        flow.flow(tiny_bert, TEXT)
    with pytest.raises(LmvizError, match="between 0 and 1"):
        flow.flow(tiny_llama, TEXT, threshold=1.5)
    with pytest.raises(LmvizError, match="outside the text"):
        flow.flow(tiny_llama, TEXT, position=99)
    assert cli.main(["flow", TEXT, "--model", str(Path(tiny_llama.name)), "--threshold", "nan"]) == 2
