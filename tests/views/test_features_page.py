"""The Features page (AppTest) on the embedded SAE: its numbers are the backend's (tested against independent
decodes and hand-hooked generation in tests/test_sae.py, neurons against hand computations in
tests/test_neurons.py), its settings live in the URL, and a folder that is no SAE gets one clear line with the
typed path kept."""

import json

from lmviz.analyses import contexts, features, neurons
from lmviz.analyses import sae as sae_module
from tests.views import frame_with, run_page

TEXT = "The capital of France is Paris, and the capital of Germany is"


def markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_the_page_shows_the_backends_numbers(smollm):
    at = run_page("features", TEXT)
    assert not at.exception and not at.error
    sae = sae_module.load(sae_module.DEFAULT_SAE, smollm)
    result = features.features(smollm, TEXT, sae)
    cards = {metric.label: metric.value for metric in at.metric}
    assert cards["Explained variance"] == f"{result.explained_variance:.2f}"
    assert cards["Cross-entropy, clean → with the SAE"] == f"{result.ce_clean:.3f} → {result.ce_sae:.3f}"
    position, latent = at.session_state["feat_pos"], at.session_state["feat_latent"]
    assert position == result.n_tokens - 1  # opens on the last token and its strongest latent
    assert latent == result.top_features(position)[0][0]
    assert f"it is **{float(result.activations[position, latent]):.2f}**" in markdown(at)
    found = contexts.latent_contexts(smollm, sae, latent)
    assert found.contexts  # the strongest latent here fired in the corpus too
    shown = "".join(h.proto.body for h in at.get("html"))
    assert f"{max(found.contexts[0].activations):5.1f}" in shown
    grid = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert f"#{latent} {contexts.label(found)}" in grid["layout"]["yaxis"]["ticktext"]  # named by its peak token


def test_the_url_picks_latent_position_and_tab(smollm):
    sae = sae_module.load(sae_module.DEFAULT_SAE, smollm)
    result = features.features(smollm, TEXT, sae)
    position, (latent, _) = 5, result.top_features(5)[1]
    at = run_page("features", TEXT, query={"feat_pos": str(position), "feat_latent": str(latent),
                                           "feat_tab": "Steering with it", "feat_alpha": "12.0", "feat_tokens": "8"})
    assert not at.exception and not at.error
    steered = features.steer_feature(smollm, TEXT, sae, latent, 12.0, 8)
    assert steered.steered.text.strip() and steered.steered.text != steered.unsteered.text
    shown = frame_with(at, "continuation")["continuation"].tolist()
    assert shown == [steered.unsteered.text, steered.steered.text]
    assert at.query_params["feat_latent"] == str(latent) and at.query_params["feat_alpha"] == "12.0"


def test_the_neurons_tab_adds_up(smollm):
    at = run_page("features", TEXT, query={"feat_tab": "Neurons"})
    assert not at.exception and not at.error
    split = neurons.neurons(smollm, TEXT, 7, at.session_state["feat_pos"])
    assert f"is **{split.mlp_part:+.3f}**" in markdown(at)
    assert abs(split.total - split.mlp_part) <= split.bound


def test_a_folder_that_is_no_sae_is_one_line(smollm, tmp_path):
    at = run_page("features", TEXT, feat_sae=str(tmp_path))
    assert not at.exception
    assert len(at.error) == 1 and "\n" not in at.error[0].value.strip()
    assert at.session_state["feat_sae"] == str(tmp_path)
