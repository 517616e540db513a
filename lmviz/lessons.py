"""Lessons: guided tours through the pages, built from the seeds' curriculum.

A lesson is a list of steps; each step is a live view (a page and its settings,
as a URL) plus a short text that teaches what to look at. The app shows the
text above the page with previous/next buttons and the lesson's progress in the
sidebar; `python -m lmviz lessons --json` lists them. A step names the kind of
model it needs ("causal", "masked", "classifier"); with another model in the
sidebar the page says which to pick.

The pages' URL paths live here too (`PAGES`), so that the app's navigation and
the lessons' links agree.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from lmviz.errors import LmvizError

# page script -> its URL path (the app's st.navigation uses these)
PAGES = {
    "views/home.py": "",
    "views/lens.py": "lens",
    "views/sampling.py": "sampling",
    "views/beam.py": "beam",
    "views/loss.py": "loss",
    "views/heads.py": "heads",
    "views/attention.py": "attention",
}


@dataclass(frozen=True)
class Step:
    title: str
    page: str  # the page script, a key of PAGES
    text: str  # Markdown: what to look at, with the seeds' numbers where they apply
    params: dict[str, str] = field(default_factory=dict)  # the page's settings (URL query parameters)
    needs: str = "causal"  # the kind of model the step is about


@dataclass(frozen=True)
class Lesson:
    id: str
    title: str
    summary: str
    steps: tuple[Step, ...]


def step_params(lesson: Lesson, index: int) -> dict[str, str]:
    """The URL query parameters of a step (counting from 1): the lesson, the step, the page's settings."""
    return {"lesson": lesson.id, "step": str(index), **lesson.steps[index - 1].params}


def step_url(lesson: Lesson, index: int) -> str:
    """'/lens?lesson=…&step=2&lens_k=5…': the page's path and its query string (step counts from 1)."""
    return "/" + PAGES[lesson.steps[index - 1].page] + "?" + urllib.parse.urlencode(step_params(lesson, index))


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
         "steps": [{"title": step.title, "page": step.page, "url": step_url(lesson, i), "needs": step.needs}
                   for i, step in enumerate(lesson.steps, start=1)]}
        for lesson in LESSONS
    ]}


LESSONS: tuple[Lesson, ...] = (
    Lesson("logits", "Logits → softmax → temperature",
           "From a vector of scores to a probability distribution, first on the lecture's table, then on the model.",
           (
               Step("The lecture's table", "views/sampling.py",
                    "Open the tab **Toy logits (the lecture's table)**. The five logits (1, −4, 2, 4, 3) of the "
                    "lecture become probabilities with softmax: σ(z)ᵢ = e^{zᵢ} / Σⱼ e^{zⱼ}. The rows are the "
                    "lecture's temperatures 1, 0.3 and 10: every logit is divided by T before the softmax. Move "
                    "the constant c: adding it to every logit changes nothing, because softmax only sees "
                    "differences.", {"sampling_tab": "Toy logits (the lecture's table)"}, needs="causal"),
               Step("The model's real distribution", "views/sampling.py",
                    "The same computation on the model's 49,152 logits after the sidebar's text. At T = 1 the "
                    "bars are the model's own probabilities; the entropy and the number of tokens holding 90% of "
                    "the mass say how sure it is.", {"sampling_temperature": "1.0", "sampling_tab": "Next token"}),
               Step("Cooler: T = 0.5", "views/sampling.py",
                    "Dividing by T < 1 stretches the gaps between logits: the top token takes more of the mass and "
                    "the entropy falls. The order of the tokens never changes.", {"sampling_temperature": "0.5"}),
               Step("Hotter: T = 2", "views/sampling.py",
                    "T > 1 shrinks the gaps: the distribution flattens and rare tokens get a real chance. The "
                    "sweep chart below shows entropy over all temperatures at once.",
                    {"sampling_temperature": "2.0"}),
           )),
    Lesson("decoding", "Decoding: greedy, sampling, beam search",
           "Three ways to turn next-token distributions into a text, step by step on the model.",
           (
               Step("Greedy and sampled, token by token", "views/sampling.py",
                    "Open **Step by step**: greedy decoding takes the most probable token every time; sampling "
                    "draws from the distribution (after temperature and the filters). Inspect a step to see the "
                    "distribution it drew from. Under **What if…?**, take another token at any step and compare the "
                    "branches' log-probabilities.",
                    {"sampling_temperature": "1.0", "sampling_seed": "0", "sampling_tab": "Step by step"}),
               Step("Top-k and top-p filters", "views/sampling.py",
                    "With top-k = 5 only the five best tokens can be drawn, with top-p = 0.9 the fewest tokens "
                    "holding 90% of the mass. Grey bars are removed by a filter; the rest is renormalized.",
                    {"sampling_top_k": "5", "sampling_top_p": "0.9", "sampling_tab": "Next token"}),
               Step("Beam search, the lecture's algorithm", "views/beam.py",
                    "Beam search keeps the K best partial texts by cumulative log-probability. Replay it with the "
                    "slider: each step expands every beam, evaluates 2K candidates and prunes to K.",
                    {"beam_beams": "3", "beam_new": "6", "beam_frame": "1"}),
               Step("The finished search", "views/beam.py",
                    "The winning path is orange; finished hypotheses are ranked by log-probability divided by "
                    "length^α (the length penalty). Compare greedy, beam and sampling in the table below.",
                    {"beam_beams": "3", "beam_new": "6"}),
           )),
    Lesson("evaluating", "Evaluating: likelihood, NLL, cross-entropy, perplexity",
           "How surprised the model is by a text, and how the usual numbers come out of the logits.",
           (
               Step("Token by token", "views/loss.py",
                    "Every token's negative log-likelihood −ln p(token | what came before): redder is more "
                    "surprising. The formulas below use this text's numbers: the mean NLL is the cross-entropy "
                    "H, and perplexity is e^H.", {"loss_view": "Token by token", "loss_colour": "Surprisal"}),
               Step("Perplexity in base e and 2", "views/loss.py",
                    "e^H (nats) and 2^(H / ln 2) (bits) are the same number: perplexity does not depend on the "
                    "base. Bits per byte divides the total by the text's bytes, which compares across "
                    "tokenizers.", {"loss_view": "Token by token", "loss_colour": "Rank bucket"}),
               Step("Word order is worth something", "views/loss.py",
                    "The class example: a sentence and the same words scrambled. Same words, much higher "
                    "perplexity: the model predicts from order.", {"loss_view": "Two texts"}),
           )),
    Lesson("notebook", "The notebook: tokens, embeddings, the logit lens",
           "Seed 004 step by step: what the model reads, what it stores, what every layer would say.",
           (
               Step("Tokens and padding", "views/home.py",
                    "The text as token ids, and a batch of two texts padded on the left (the pad is the EOS token "
                    "when the tokenizer has none), with its attention mask.", {"batch_with": "Hi"}),
               Step("Embeddings, tied weights and neighbours", "views/heads.py",
                    "Open **Tied embeddings**: SmolLM2's output layer is its input embedding matrix. Sending a "
                    "token's embedding through the output layer ranks every token by its dot product: the "
                    "neighbour table of the notebook.",
                    {"heads_k": "10", "heads_metric": "dot", "heads_tab": "Tied embeddings"}),
               Step("The logit lens, raw", "views/lens.py",
                    "lm_head(hidden_states[i]) for every layer, without the final norm: exactly the notebook's "
                    "tables. Early and middle rows look strange: the residual stream has another scale there.",
                    {"lens_normalized": "False", "lens_table": "by layer"}),
               Step("The logit lens, normalized", "views/lens.py",
                    "With the final norm applied at every layer, as the last layer has it, the guesses settle "
                    "layer by layer; the top row is the model's real output.", {"lens_normalized": "True"}),
           )),
    Lesson("heads", "Heads: masked LM and classification",
           "The same hidden states, read by other heads: fill-in-the-blank and labels.",
           (
               Step("The masked-LM head and its loss", "views/heads.py",
                    "Pick **antiberty** (or any BERT-style model) in the sidebar and open **Masked LM**: the head "
                    "predicts the token behind each [MASK]; its loss is the cross-entropy at the masked "
                    "positions only.", {"heads_mask_k": "5", "heads_tab": "Masked LM"}, needs="masked"),
               Step("Classification logits → labels", "views/heads.py",
                    "Open **Classification**: a sequence classifier turns one pooled hidden state into one logit "
                    "per label; softmax gives the label probabilities and the loss per label is −log p(label).",
                    {"heads_labels": "negative, positive", "heads_tab": "Classification"}, needs="causal"),
           )),
    Lesson("why", "Why this token? Attention, attribution, ablation",
           "Which heads move information, which blocks write the prediction, and what breaks without them.",
           (
               Step("A previous-token head", "views/attention.py",
                    "Every cell of the grid is one head, coloured by how much it looks at the token just before "
                    "the query. The page opens on the strongest one: its heatmap is a bright line just below the "
                    "diagonal. Click other cells to compare; many heads instead park on the first token.",
                    {"att_stat": "previous"}),
               Step("An induction head", "views/attention.py",
                    "Type a text that repeats itself in the sidebar (\"The cat sat on the mat. The cat sat on "
                    "the\"). An induction head looks from a token to the token that *followed* its earlier copy "
                    "(A B … A → B): the mechanism that lets a model continue a pattern it has just seen.",
                    {"att_stat": "induction"}),
               Step("Which blocks wrote the prediction", "views/attention.py",
                    "The logit of the top token, split into the embedding, every attention and MLP block and "
                    "every head. The final norm is held at the scale the whole residual got, so the parts add up "
                    "to the logit: compare *Sum of the parts* with *Logit*. Tall bars near the top layers wrote "
                    "most of it.", {"att_target_kind": "top prediction", "att_upto": "30"}),
               Step("Take a head out", "views/attention.py",
                    "Click the darkest blue head in *Every head's part* (or the tallest bar): the last section "
                    "runs the model without it. KL(before ‖ after) says how much the next-token distribution "
                    "moved, the loss change what it did to the whole text. Mean-ablation replaces it by its "
                    "average output instead of zero: a gentler test.", {"att_ablate": "head", "att_mode": "zero"}),
               Step("From the logit lens", "views/lens.py",
                    "Back on the lens: pick a position and a layer under the heatmap and press *Which blocks "
                    "wrote …?*. Attribution opens on that cell: the lens's logit at that layer split over the "
                    "blocks below it.", {"lens_normalized": "True"}),
           )),
)
