"""Lessons: guided tours through the pages, built from the seeds' curriculum.

A lesson is a list of steps; each step is a live view plus a short text that
teaches what to look at. A step sets up its own example: the text, the model
where it needs one (AntiBERTy for a masked LM) and the page's settings, all in
its URL, so a class sees what the text talks about. The app shows the text above
the page with previous/next links and the lesson's progress in the sidebar;
`lmviz lessons --json` lists them.

Where a step's text claims something about the model ("an induction head",
"entropy rises with T"), its `claim` checks it on the model in front of the
class and the panel says whether it holds there, with the numbers. The tests
assert every claim on each embedded causal model.

Pages and settings are named through their objects (`lmviz.app.pages`,
`lmviz.app.settings`), so the navigation and the lessons' links agree.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from typing import Callable

from lmviz.analyses import attention, attribution, contexts, features, flow, lens, loss, neurons, patching, sampling
from lmviz.analyses import sae as sae_module
from lmviz.forward import trace
from lmviz.app import pages
from lmviz.app.settings import LAST, Attention, Beam, Experiments, Features, Heads, Home, Lens, Loss, Sampling, Setting
from lmviz.model.embedded import antiberty
from lmviz.errors import LmvizError
from lmviz.model.models import LoadedModel


@dataclass(frozen=True)
class Claim:
    """What a step's text says about the model, measured on one model and text."""

    holds: bool
    text: str  # the measurement, with its numbers


@dataclass(frozen=True)
class Step:
    title: str
    page: pages.Page
    text: str  # Markdown: what to look at, with the seeds' numbers where they apply
    params: dict[Setting, object] = field(default_factory=dict)  # the page's settings for this step
    needs: str = "causal"  # the kind of model the step is about
    example: str | None = None  # the sidebar's text for this step (None: the lesson's)
    model: str | None = None  # the model this step switches to (None: the sidebar's, if it is of the kind needed)
    claim: Callable[[LoadedModel, str], Claim] | None = None  # checks the text's claim on (model, example)

    def __post_init__(self):
        for setting, value in self.params.items():  # a lesson never sends a value its page would drop
            if not setting.allows(value):
                raise ValueError(f"Step {self.title!r}: {setting.key} does not take {value!r}")


@dataclass(frozen=True)
class Lesson:
    id: str
    title: str
    summary: str
    example: str  # the text its steps open with, unless a step has its own
    steps: tuple[Step, ...]


def example(lesson: Lesson, index: int) -> str:
    """The text step `index` (from 1) opens with."""
    return lesson.steps[index - 1].example or lesson.example


def step_params(lesson: Lesson, index: int) -> dict[str, str]:
    """The URL query parameters of a step (counting from 1): the lesson, the step, its text, its model where
    it names one, and the page's settings."""
    step = lesson.steps[index - 1]
    return {"lesson": lesson.id, "step": str(index), "text": example(lesson, index),
            **({"model": step.model} if step.model else {}),
            **{setting.key: setting.text(value) for setting, value in step.params.items()}}


def step_url(lesson: Lesson, index: int) -> str:
    """'/lens?lesson=…&step=2&lens_k=5…': the page's path and its query string (step counts from 1)."""
    return "/" + lesson.steps[index - 1].page.url_path + "?" + urllib.parse.urlencode(step_params(lesson, index))


def find(lesson_id: str | None) -> Lesson | None:
    return next((lesson for lesson in LESSONS if lesson.id == lesson_id), None)


def check_step(lesson: Lesson, raw: str | None) -> int:
    """The step number from the URL, within 1 .. len(steps)."""
    try:
        index = int(raw or 1)
    except ValueError:
        raise LmvizError(f"Step '{raw}' is not a number.") from None
    return min(max(1, index), len(lesson.steps))


def to_json() -> dict:
    """What `python -m lmviz lessons --json` prints."""
    return {"lessons": [
        {"id": lesson.id, "title": lesson.title, "summary": lesson.summary,
         "steps": [{"title": step.title, "page": step.page.name, "url": step_url(lesson, i), "needs": step.needs,
                    "claim": step.claim is not None}
                   for i, step in enumerate(lesson.steps, start=1)]}
        for lesson in LESSONS
    ]}


# ---------------------------------------------------------------- claims, measured on the model in front of the class
def _entropy(lm: LoadedModel, text: str, temperature: float) -> float:
    return sampling.next_token(lm, text, sampling.SamplingSettings(temperature=temperature)).entropy


def cooler_is_surer(lm: LoadedModel, text: str) -> Claim:
    at_1, at_half = _entropy(lm, text, 1.0), _entropy(lm, text, 0.5)
    return Claim(at_half < at_1, f"entropy {at_1:.2f} nats at T = 1, {at_half:.2f} at T = 0.5")


def hotter_is_flatter(lm: LoadedModel, text: str) -> Claim:
    at_1, at_2 = _entropy(lm, text, 1.0), _entropy(lm, text, 2.0)
    return Claim(at_2 > at_1, f"entropy {at_1:.2f} nats at T = 1, {at_2:.2f} at T = 2")


def order_matters(lm: LoadedModel, text: str) -> Claim:
    normal, scrambled = (loss.loss_report(lm, _CLASS_PAIR[name]).perplexity for name in ("normal", "scrambled"))
    return Claim(scrambled > normal, f"perplexity {normal:,.1f} in order, {scrambled:,.1f} scrambled")


def tied_output_layer(lm: LoadedModel, text: str) -> Claim:
    return Claim(lm.tied, f"{lm.name}'s output layer {'is' if lm.tied else 'is not'} its input embedding matrix")


def lens_top_row_is_the_output(lm: LoadedModel, text: str) -> Claim:
    traced = trace.trace(lm, text)
    last = traced.n_tokens - 1
    result = lens.logit_lens(lm, traced, k=1, positions=(last, last + 1))
    top, own = int(result.top_ids[-1, -1, 0]), int(traced.last_logits.argmax())
    return Claim(top == own, f"top row after the last token: '{result.token(top)}', the model's own top token: "
                             f"'{result.token(own)}'; max |lens − model logits| = {result.max_final_error:.1e}")


def strongest_head(statistic: str, floor: float) -> Callable[[LoadedModel, str], Claim]:
    def claim(lm: LoadedModel, text: str) -> Claim:
        scores = attention.attention(lm, text).stats[statistic]
        layer, head = divmod(int(scores.nan_to_num(-1.0).argmax()), scores.shape[1])
        score = float(scores[layer, head])
        return Claim(score >= floor, f"head L{layer}.H{head} scores {score:.2f} ({statistic}; the step needs ≥ {floor})")
    return claim


def parts_add_up(lm: LoadedModel, text: str) -> Claim:
    split = attribution.attribute(lm, text)
    gap = abs(split.total - split.logit)
    return Claim(gap <= split.bound, f"sum of the parts {split.total:.4f}, logit {split.logit:.4f}: "
                                     f"off by {gap:.1e}, within the rounding bound {split.bound:.1e}")


def answer_moves(lm: LoadedModel, text: str) -> Claim:
    ioi = patching.EXAMPLES[0]
    result = patching.patch(lm, ioi.clean, ioi.corrupted, ioi.answer, ioi.wrong, "resid")
    values, last = result.values(), len(result.tokens) - 1
    second = max(p for p in range(last) if result.tokens[p] != result.corrupted_tokens[p])  # the changed name
    moved = next((layer for layer in range(lm.n_layers) if values[layer, last] > values[layer, second]), None)
    holds = values[0, second] >= 0.9 and values[-1, last] >= 0.85 and moved is not None
    return Claim(holds, f"position {second} restores {values[0, second]:.2f} at layer 0; the last position "
                        f"restores {values[-1, last]:.2f} at layer {lm.n_layers - 1} and takes over at layer {moved}")


def _strongest(values, what: str, floor: float) -> Claim:
    layer, head = divmod(int(values.argmax()), values.shape[1])
    return Claim(values[layer, head] >= floor, f"head L{layer}.H{head} alone {what} {values[layer, head]:.2f} of "
                                               f"the answer (the step needs ≥ {floor})")


def a_head_carries_it(lm: LoadedModel, text: str) -> Claim:
    ioi = patching.EXAMPLES[0]
    return _strongest(patching.patch(lm, ioi.clean, ioi.corrupted, ioi.answer, ioi.wrong, "head").values(),
                      "restores", 0.25)


def a_direct_path(lm: LoadedModel, text: str) -> Claim:
    ioi = patching.EXAMPLES[0]
    return _strongest(patching.direct_paths(lm, ioi.clean, ioi.corrupted, ioi.answer, ioi.wrong).values(),
                      "restores through its direct path", 0.3)


def the_answer_is_read_late(lm: LoadedModel, text: str) -> Claim:
    found = flow.flow(lm, text)
    last, upper = len(found.tokens) - 1, found.n_layers // 2
    reads = [e for e in found.edges if e.kind == "attn" and e.to_pos == last and e.from_pos != last and e.layer >= upper]
    if not reads:
        return Claim(False, f"no attention edge into the last token from another one in blocks {upper}+ reaches "
                            f"τ = {found.threshold}")
    edge = max(reads, key=lambda e: e.importance)
    token = found.tokens[edge.from_pos]
    return Claim(token.replace("·", "").strip() == patching.EXAMPLES[0].answer.strip(),
                 f"the strongest edge into the last token from another one, in the upper half of the blocks, reads "
                 f"{token} (block {edge.layer}, importance {edge.importance:.2f})")


def neurons_share_the_work(lm: LoadedModel, text: str) -> Claim:
    split = neurons.neurons(lm, text, _SAE_BLOCK - 1)
    half = split.half_count
    top = split.top[0]
    words = set(_peak_words(contexts.neuron_contexts(lm, split.layer, top)))
    return Claim(half >= 20 and len(words) >= 4,
                 f"half of block {split.layer}'s MLP's direct push on {split.target_token} takes the {half} largest "
                 f"of its {split.d_mlp} neurons; the top one, {split.layer}.{top}, peaks on {len(words)} different "
                 f"words in its strongest contexts")


def _peak_words(found: contexts.Contexts) -> list[str]:
    """The word each max-activating context (of a latent or a neuron) peaks on, lower-cased, without spaces."""
    return [c.tokens[c.peak].replace("·", "").strip().lower() for c in found.contexts]


def a_latent_is_specific(lm: LoadedModel, text: str) -> Claim:
    sae = sae_module.load(sae_module.DEFAULT_SAE, lm)
    result = features.features(lm, text, sae)
    latent = result.top_features(result.n_tokens - 1)[0][0]
    words = _peak_words(contexts.latent_contexts(lm, sae, latent))
    word, count = max(((w, words.count(w)) for w in set(words)), key=lambda pair: pair[1])
    return Claim(count >= len(words) / 2, f"latent #{latent}, the strongest on the last token, peaks on '{word}' in "
                                          f"{count} of its {len(words)} strongest contexts in the corpus")


def steering_feeds_the_text(lm: LoadedModel, text: str) -> Claim:
    sae = sae_module.load(sae_module.DEFAULT_SAE, lm)
    steered = features.steer_feature(lm, text, sae, _FEED_LATENT, _FEED_ALPHA, 20)
    words = set(_peak_words(contexts.latent_contexts(lm, sae, _FEED_LATENT)))
    def said_in(continuation) -> set[str]:
        return {w.strip(".,;:!?\"'").lower() for w in continuation.text.split()} & words

    said, before = said_in(steered.steered), said_in(steered.unsteered)
    return Claim(bool(said) and not before,
                 f"steered with α = {_FEED_ALPHA:g}, the continuation says {', '.join(sorted(said)) or 'none'} of the "
                 f"latent's words ({', '.join(sorted(words))}); unsteered: {', '.join(sorted(before)) or 'none'}")


_IOI = patching.EXAMPLES[0]
_IOI_PAIR = {Experiments.EXAMPLE: _IOI.name, Experiments.CLEAN: _IOI.clean, Experiments.CORRUPTED: _IOI.corrupted,
             Experiments.ANSWER: _IOI.answer, Experiments.WRONG: _IOI.wrong, Experiments.MODE: "denoise",
             Experiments.METRIC: "normalized"}
_CLASS_PAIR = loss.sample_texts()  # the class example: a sentence and the same words scrambled
_REPEATING = "The cat sat on the mat. The cat sat on the"  # A B … A → B: what an induction head completes
_SAE_BLOCK = 8  # the embedded SAE reads block 8's input
_FEED_LATENT = 1350  # the embedded SAE's latent whose strongest contexts peak on ·feed, ·food, ·eat
_FEED_ALPHA = 8.0  # "This weekend I plan to" -> "eat. I'm not sure what to eat." (16: "I eat, and I drink")

LESSONS: tuple[Lesson, ...] = (
    Lesson("logits", "Logits → softmax → temperature",
           "From a vector of scores to a probability distribution, first on the lecture's table, then on the model.",
           "This weekend I plan to",
           (
               Step("The lecture's table", pages.SAMPLING,
                    "Open the tab **Toy logits (the lecture's table)**. The five logits (1, −4, 2, 4, 3) of the "
                    "lecture become probabilities with softmax: σ(z)ᵢ = e^{zᵢ} / Σⱼ e^{zⱼ}. The rows are the "
                    "lecture's temperatures 1, 0.3 and 10: every logit is divided by T before the softmax. Move "
                    "the constant c: adding it to every logit changes nothing, because softmax only sees "
                    "differences.", {Sampling.TAB: Sampling.TOY_TAB}, needs="causal"),
               Step("The model's real distribution", pages.SAMPLING,
                    "The same computation on the model's 49,152 logits after the sidebar's text. At T = 1 the "
                    "bars are the model's own probabilities; the entropy and the number of tokens holding 90% of "
                    "the mass say how sure it is.", {Sampling.TEMPERATURE: 1.0, Sampling.TAB: Sampling.NEXT_TAB}),
               Step("Cooler: T = 0.5", pages.SAMPLING,
                    "Dividing by T < 1 stretches the gaps between logits: the top token takes more of the mass and "
                    "the entropy falls. The order of the tokens never changes.", {Sampling.TEMPERATURE: 0.5},
                    claim=cooler_is_surer),
               Step("Hotter: T = 2", pages.SAMPLING,
                    "T > 1 shrinks the gaps: the distribution flattens and rare tokens get a real chance. The "
                    "sweep chart below shows entropy over all temperatures at once.",
                    {Sampling.TEMPERATURE: 2.0}, claim=hotter_is_flatter),
           )),
    Lesson("decoding", "Decoding: greedy, sampling, beam search",
           "Three ways to turn next-token distributions into a text, step by step on the model.",
           "This weekend I plan to",
           (
               Step("Greedy and sampled, token by token", pages.SAMPLING,
                    "Open **Step by step**: greedy decoding takes the most probable token every time; sampling "
                    "draws from the distribution (after temperature and the filters). Inspect a step to see the "
                    "distribution it drew from. Under **What if…?**, take another token at any step and compare the "
                    "branches' log-probabilities.",
                    {Sampling.TEMPERATURE: 1.0, Sampling.SEED: 0, Sampling.TAB: Sampling.STEPS_TAB}),
               Step("Top-k and top-p filters", pages.SAMPLING,
                    "With top-k = 5 only the five best tokens can be drawn, with top-p = 0.9 the fewest tokens "
                    "holding 90% of the mass. Grey bars are removed by a filter; the rest is renormalized.",
                    {Sampling.TOP_K: 5, Sampling.TOP_P: 0.9, Sampling.TAB: Sampling.NEXT_TAB}),
               Step("Beam search, the lecture's algorithm", pages.BEAM,
                    "Beam search keeps the K best partial texts by cumulative log-probability. Replay it with the "
                    "slider: each step expands every beam, evaluates 2K candidates and prunes to K.",
                    {Beam.BEAMS: 3, Beam.NEW_TOKENS: 6, Beam.FRAME: 1}),
               Step("The finished search", pages.BEAM,
                    "The winning path is orange; finished hypotheses are ranked by log-probability divided by "
                    "length^α (the length penalty). Compare greedy, beam and sampling in the table below.",
                    {Beam.BEAMS: 3, Beam.NEW_TOKENS: 6}),
           )),
    Lesson("evaluating", "Evaluating: likelihood, NLL, cross-entropy, perplexity",
           "How surprised the model is by a text, and how the usual numbers come out of the logits.",
           "This weekend I plan to visit my grandmother in the countryside.",
           (
               Step("Token by token", pages.LOSS,
                    "Every token's negative log-likelihood −ln p(token | what came before): redder is more "
                    "surprising. The formulas below use this text's numbers: the mean NLL is the cross-entropy "
                    "H, and perplexity is e^H.", {Loss.VIEW: Loss.TOKENS_VIEW, Loss.COLOUR: Loss.SURPRISAL}),
               Step("Perplexity in base e and 2", pages.LOSS,
                    "e^H (nats) and 2^(H / ln 2) (bits) are the same number: perplexity does not depend on the "
                    "base. Bits per byte divides the total by the text's bytes, which compares across "
                    "tokenizers.", {Loss.VIEW: Loss.TOKENS_VIEW, Loss.COLOUR: Loss.RANK_BUCKET}),
               Step("Word order is worth something", pages.LOSS,
                    "The class example: a sentence and the same words scrambled. Same words, much higher "
                    "perplexity: the model predicts from order.",
                    {Loss.VIEW: Loss.TWO_TEXTS, Loss.TEXT_A: _CLASS_PAIR["normal"], Loss.TEXT_B: _CLASS_PAIR["scrambled"]},
                    claim=order_matters),
           )),
    Lesson("notebook", "The notebook: tokens, embeddings, the logit lens",
           "Seed 004 step by step: what the model reads, what it stores, what every layer would say.",
           "This weekend I plan to",
           (
               Step("Tokens and padding", pages.HOME,
                    "The text as token ids, and a batch of two texts padded on the left (the pad is the EOS token "
                    "when the tokenizer has none), with its attention mask.", {Home.BATCH_WITH: "Hi"}),
               Step("Embeddings, tied weights and neighbours", pages.HEADS,
                    "Open **Tied embeddings**: SmolLM2's output layer is its input embedding matrix. Sending a "
                    "token's embedding through the output layer ranks every token by its dot product: the "
                    "neighbour table of the notebook.",
                    {Heads.K: 10, Heads.METRIC: "dot", Heads.TAB: Heads.TIED_TAB}, claim=tied_output_layer),
               Step("The logit lens, raw", pages.LENS,
                    "lm_head(hidden_states[i]) for every layer, without the final norm: exactly the notebook's "
                    "tables. Early and middle rows look strange: the residual stream has another scale there.",
                    {Lens.NORMALIZED: False, Lens.TABLE: "by layer"}, claim=lens_top_row_is_the_output),
               Step("The logit lens, normalized", pages.LENS,
                    "With the final norm applied at every layer, as the last layer has it, the guesses settle "
                    "layer by layer; the top row is the model's real output.", {Lens.NORMALIZED: True},
                    claim=lens_top_row_is_the_output),
           )),
    Lesson("heads", "Heads: masked LM and classification",
           "The same hidden states, read by other heads: fill-in-the-blank and labels.",
           "This movie was wonderful, I enjoyed every minute of it.",
           (
               Step("The masked-LM head and its loss", pages.HEADS,
                    "On **antiberty**, a BERT-style masked LM of antibody sequences, **Masked LM**: the head "
                    "predicts the token behind each [MASK]; its loss is the cross-entropy at the masked "
                    "positions only.", {Heads.MASK_K: 5, Heads.TAB: Heads.MASKED_TAB}, needs="masked", model="antiberty",
                    example=antiberty.ANTIBODY_HEAVY[:25] + "[MASK]" + antiberty.ANTIBODY_HEAVY[26:]),
               Step("Classification logits → labels", pages.HEADS,
                    "Open **Classification**: a sequence classifier turns one pooled hidden state into one logit "
                    "per label; softmax gives the label probabilities and the loss per label is −log p(label).",
                    {Heads.LABELS: "negative, positive", Heads.TAB: Heads.CLASSIFICATION_TAB}),
           )),
    Lesson("why", "Why this token? Attention, attribution, ablation",
           "Which heads move information, which blocks write the prediction, and what breaks without them.",
           "The capital of France is",
           (
               Step("A previous-token head", pages.ATTENTION,
                    "Every cell of the grid is one head, coloured by how much it looks at the token just before "
                    "the query. The page opens on the strongest one: its heatmap is a bright line just below the "
                    "diagonal. Click other cells to compare; many heads instead park on the first token.",
                    {Attention.STATISTIC: "previous"}, example=_REPEATING, claim=strongest_head("previous", 0.5)),
               Step("An induction head", pages.ATTENTION,
                    "The text repeats itself. An induction head looks from a token to the token that *followed* "
                    "its earlier copy "
                    "(A B … A → B): the mechanism that lets a model continue a pattern it has just seen.",
                    {Attention.STATISTIC: "induction"}, example=_REPEATING, claim=strongest_head("induction", 0.4)),
               Step("Which blocks wrote the prediction", pages.ATTENTION,
                    "The logit of the top token, split into the embedding, every attention and MLP block and "
                    "every head. The final norm is held at the scale the whole residual got, so the parts add up "
                    "to the logit: compare *Sum of the parts* with *Logit*. Tall bars near the top layers wrote "
                    "most of it.", {Attention.TARGET: Attention.TOP_PREDICTION, Attention.UP_TO: LAST}, claim=parts_add_up),
               Step("Take a head out", pages.ATTENTION,
                    "Click the darkest blue head in *Every head's part* (or the tallest bar): the section *Take a "
                    "part out* runs the model without it. KL(before ‖ after) says how much the next-token "
                    "distribution moved, the loss change what it did to the whole text. Mean-ablation replaces it "
                    "by its average output instead of zero: a gentler test.", {Attention.ABLATE: "head", Attention.MODE: "zero"}),
               Step("From the logit lens", pages.LENS,
                    "Back on the lens: pick a position and a layer under the heatmap and press *Which blocks "
                    "wrote …?*. Attribution opens on that cell: the lens's logit at that layer split over the "
                    "blocks below it.", {Lens.NORMALIZED: True}),
           )),
    Lesson("cause", "Cause, not correlation: activation patching",
           "Change one word, keep the rest, and find the states that carry the answer: the IOI experiment.",
           _IOI.clean,
           (
               Step("Where the answer travels", pages.EXPERIMENTS,
                    "Two sentences differ in one name. In the clean one the answer is *Mary* (John gave the drink, "
                    "so Mary receives it); in the corrupted one it flips to *John*. Each cell runs the corrupted "
                    "sentence with one residual state copied from the clean run: 1 means that state alone brings "
                    "*Mary* back. Early on only the changed name's column matters; from the middle layers the "
                    "answer sits at the last position: information moved between tokens.",
                    {**_IOI_PAIR, Experiments.TAB: Experiments.PATCHING_TAB, Experiments.SITE: "resid"},
                    claim=answer_moves),
               Step("Which heads move it", pages.EXPERIMENTS,
                    "The same experiment, one attention head at a time (its output at every position). A few "
                    "heads in the upper layers restore much of the answer on their own; red heads push the other "
                    "way. Click one to see the patched run's next-token distribution.",
                    {**_IOI_PAIR, Experiments.TAB: Experiments.PATCHING_TAB, Experiments.SITE: "head"},
                    claim=a_head_carries_it),
               Step("The path to the logits", pages.EXPERIMENTS,
                    "Left: each head's output copied straight into the state the unembedding reads, nothing in "
                    "between recomputed — its direct effect. Click a head to make it the receiver, and trace which "
                    "earlier heads reach it through its query: the circuit, edge by edge.",
                    {**_IOI_PAIR, Experiments.TAB: Experiments.PATHS_TAB}, claim=a_direct_path),
               Step("The route at a glance", pages.FLOW,
                    "No second sentence this time: one pass of the clean sentence, each block's attention split "
                    "into one term per token read, and an edge drawn where a term is a large share of its sum. "
                    "Follow the thick blue edges into the last token: late in the model it reads the name the "
                    "patching found, the route the heads above carry. Hover an edge for its heads.",
                    {}, claim=the_answer_is_read_late),
           )),
    Lesson("features", "What does the model represent?",
           "Neurons, and the directions a sparse autoencoder finds in the residual stream: which are specific, "
           "and what turning one up does.",
           "The capital of France is Paris, and the capital of Germany is",
           (
               Step("A prediction, spread over many neurons", pages.FEATURES,
                    "An MLP block's neurons each add their output column, scaled by their activation, to the "
                    "residual stream. The table splits block 7's direct push on the next token over its 1,536 "
                    "neurons: many share it, each one's column promotes a grab-bag of unrelated tokens, and below "
                    "the table a neuron's strongest contexts in the corpus peak on unrelated words — a neuron is "
                    "not one idea.", {Features.TAB: Features.NEURONS_TAB, Features.NEURON_LAYER: 7},
                    model="smollm2-135m", claim=neurons_share_the_work),
               Step("A latent is more specific", pages.FEATURES,
                    "A sparse autoencoder rewrites block 8's input as a few of 4,608 directions (32 per token), "
                    "trained to reconstruct it. The grid shows the strongest on each token. Click the last "
                    "token's strongest: its contexts in the corpus peak on one word again and again.",
                    {Features.TAB: Features.LATENT_TAB}, model="smollm2-135m", claim=a_latent_is_specific),
               Step("Turning a latent up", pages.FEATURES,
                    "Latent #1350 fires on *feed*, *food* and *eat*. Add 8 times its direction at block 8, at every "
                    "position, while the model continues a plain sentence: the plan turns to eating.",
                    {Features.TAB: Features.STEERING_TAB, Features.LATENT: _FEED_LATENT,
                     Features.ALPHA: _FEED_ALPHA, Features.STEER_TOKENS: 20},
                    example="This weekend I plan to", model="smollm2-135m", claim=steering_feeds_the_text),
           )),
)
