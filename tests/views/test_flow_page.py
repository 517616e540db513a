"""The Information flow page (AppTest): its graph is the backend's (tested against a forward hooked by hand
in tests/test_flow.py), every setting and the chosen node live in the URL, a node opens the lens there, a
hostile text stays text, and a model lmviz can't split gets one clear line."""

import json

from lmviz.analyses import flow, patching
from tests.views import run_page

IOI = patching.EXAMPLES[0].clean
HOSTILE = "<b>x</b> **y** $z$ <script>alert(1)</script>"


def captions(at) -> str:
    return "\n".join(c.value for c in at.caption)


def markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_the_graph_is_the_backends_and_its_settings_live_in_the_url(smollm):
    query = {"flow_pos": "9", "flow_tau": "0.1", "flow_node_layer": "23", "flow_node_pos": "1",
             "flow_node_mid": "False"}
    at = run_page("flow", IOI, query=query)
    assert not at.exception and not at.error
    result = flow.flow(smollm, IOI, 9, 0.1)
    assert (f"**{len(result.nodes):,}** nodes, **{len(result.edges_of('attn')):,}** attention and "
            f"**{len(result.edges_of('mlp')):,}** MLP edges") in captions(at)
    assert "**Node:** position 1 (**·Mary**), layer 23: the input of block 23" in markdown(at)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "What flowed into '·John' (position 9): edges ≥ 0.1" in spec["layout"]["title"]["text"]
    assert all(at.query_params[key] == value for key, value in query.items())


def test_a_node_opens_the_lens_there(smollm):
    at = run_page("flow", IOI, query={"flow_node_layer": "12", "flow_node_pos": "4"})
    assert not at.exception
    next(button for button in at.button if button.label.startswith("Logit lens")).click().run()
    assert not at.exception
    assert at.query_params["lens_pos"] == "4" and at.query_params["lens_table"] == "by position"


def test_a_hostile_text_stays_text(tiny_dirs):
    at = run_page("flow", HOSTILE, model=tiny_dirs["llama"], query={"flow_node_pos": "0", "flow_node_layer": "0"})
    assert not at.exception and not at.error
    spec = at.get("plotly_chart")[0].proto.spec
    assert "<script" not in spec and "<b>x" not in spec and "&lt;" in spec
    node = next(m.value for m in at.markdown if m.value.startswith("**Node:**"))
    assert "\\<" in node  # the token is Markdown-escaped


def test_a_model_lmviz_cannot_split_gets_one_line(tiny_dirs):
    at = run_page("flow", IOI, model=tiny_dirs["gpt2"])
    assert not at.exception
    assert "fused projection" in at.error[0].value and not at.get("plotly_chart")
