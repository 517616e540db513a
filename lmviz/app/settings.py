"""Every page's settings as objects: the one place that names them.

A `Setting` is one control of a page: its key (the widget's key in the session
and its parameter in the URL, the same name), its default, which values it
takes (its parser: `parse`) and its label. The page draws its widget with
`setting.label` and `key=setting.key`; `ui.init` gives it its
first value from the URL; `ui.sync` writes it back, so a link opens the same
view. Lessons and links between pages (the lens's "Which blocks wrote …?")
name settings and values through these objects, never through strings, so a
renamed key or tab label cannot silently break a lesson: a `Step` checks its
values when it is made.

Some limits depend on the text or the model (the last position, the output
layer). Such a setting has no static `high`; the page passes it to `ui.init`,
and `LAST` stands for it in a lesson or a URL ("the output layer", not `30`).
No Streamlit here: the CLI lists lesson URLs from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lmviz.analyses import attention, classification, flow, lens, patching, saliency, sampling, steering
from lmviz.analyses.features import DEFAULT_ALPHA
from lmviz.analyses.sae import DEFAULT_SAE
from lmviz.analyses.whatif import decode_branches, encode_branches

class _Last:
    """The highest value the current text or model allows: the last position, the output layer ("last" in a URL)."""

    def __repr__(self) -> str:
        return "LAST"

    def __str__(self) -> str:
        return "last"


LAST = _Last()


@dataclass(frozen=True)
class Setting:
    key: str  # the widget's session key and the URL parameter
    default: object  # a value, or LAST
    choices: tuple = ()  # when not empty: the values it takes
    low: float | None = None
    high: float | None = None  # None for an int setting: the page gives the limit (LAST stands for it)
    decode: Callable[[str], object] | None = None  # URL text -> value for a structured value (else by type)
    encode: Callable[[object], str] = str  # value -> URL text
    label: str = ""  # the widget's label on its page

    @property
    def kind(self) -> type:
        return int if self.default is LAST else type(self.default)

    def parse(self, raw: str, high: float | None = None):
        """The value a URL's text stands for; ValueError when this setting does not take it."""
        if raw == str(LAST) and self.kind is int:
            if high is None:
                raise ValueError(raw)
            return high
        if self.decode is not None:
            return self.decode(raw)
        if self.kind is bool:
            return raw.strip().lower() in ("true", "1", "yes")
        if self.kind is tuple:  # a range slider's (low, high)
            low, top = (int(part) for part in raw.strip("()[] ").split(","))
            value = (low, top)
        else:
            value = self.kind(raw)
        if not self.allows(value, high):
            raise ValueError(raw)
        return value

    def allows(self, value, high: float | None = None) -> bool:
        """Whether `value` is one this setting takes (with `high`, the page's limit, where it has one)."""
        if value is LAST:
            return self.kind is int and self.high is None
        if self.choices:
            return value in self.choices
        if isinstance(value, tuple):
            return all(self.allows(v, high) for v in value) if self.kind is tuple else False
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return isinstance(value, self.kind)
        if self.kind not in (int, float, tuple):
            return False
        top = self.high if high is None else high
        return (self.low is None or value >= self.low) and (top is None or value <= top)

    def text(self, value) -> str:
        """The value as the URL writes it (parse(text(v)) == v)."""
        return self.encode(value)


# ---------------------------------------------------------------- the sidebar, on every page
class Sidebar:
    TEXT = Setting("text", "This weekend I plan to")
    PRESENT = Setting("present", False)  # presenter mode


# ---------------------------------------------------------------- Model & tokens
class Home:
    BATCH_WITH = Setting("batch_with", "Hi", label="Batch the sidebar text with")


# ---------------------------------------------------------------- Logit lens
class Lens:
    STATISTIC = Setting("lens_stat", "top1_prob", choices=tuple(lens.STATISTICS), label="Colour by")
    NORMALIZED = Setting("lens_normalized", True, label="Normalized (final norm at every layer)")
    K = Setting("lens_k", 10, low=1, high=20, label="top-k")
    STRIDE = Setting("lens_stride", 1, low=1, high=64, label="Layer stride (the output layer is always kept)")
    TABLE = Setting("lens_table", "by layer", choices=("by layer", "by position"), label="Table")
    VALUES = Setting("lens_values", "token", choices=("token", "token+prob", "prob", "id"), label="Cells")
    WATCH = Setting("lens_watch", "visit, go", label="Watch tokens (comma-separated)")
    SPACE = Setting("lens_space", True, label="Add a leading space")
    WATCH_VALUE = Setting("lens_watch_value", "prob", choices=("prob", "rank"), label="Show")
    # the heatmap's positions; default: the last 24
    WINDOW = Setting("lens_window", (0, 0), low=0, label="Positions shown")
    LAYER = Setting("lens_layer", LAST, low=0, label="Layer")
    POSITION = Setting("lens_pos", LAST, low=0, label="Position")
    WATCH_POSITION = Setting("lens_watch_pos", LAST, low=0, label="After position")
    SHOWN_COLUMNS = 24  # the window a text opens with
    MAX_COLUMNS = 60  # the most positions the heatmap shows at once, so that cells stay readable


# ---------------------------------------------------------------- Temperature & sampling
class Sampling:
    NEXT_TAB, STEPS_TAB, TOY_TAB = "Next token", "Step by step", "Toy logits (the lecture's table)"
    TEMPERATURE = Setting("sampling_temperature", 1.0, low=0.0, high=5.0, label="Temperature T")
    TOP_K = Setting("sampling_top_k", 0, low=0, high=10**7, label="top-k (0 = off)")
    TOP_P = Setting("sampling_top_p", 1.0, low=0.01, high=1.0, label="top-p (1 = off)")
    MIN_P = Setting("sampling_min_p", 0.0, low=0.0, high=1.0, label="min-p (0 = off)")
    TYPICAL_P = Setting("sampling_typical_p", 1.0, low=0.01, high=1.0, label="typical-p (1 = off)")
    PENALTY = Setting("sampling_penalty", 1.0, low=0.5, high=2.0, label="Repetition penalty (1 = off)")
    TOP_N = Setting("sampling_top_n", 20, low=5, high=60, label="Tokens shown")
    SEED = Setting("sampling_seed", 0, low=0, high=2**31 - 1, label="Seed")
    TAB = Setting("sampling_tab", NEXT_TAB, choices=(NEXT_TAB, STEPS_TAB, TOY_TAB))
    BRANCHES = Setting("sampling_branches", [()], decode=decode_branches,  # what-if forks; the model's own first
                       encode=lambda branches: encode_branches(branches[1:]))
    TOY_LOGITS = Setting("sampling_toy_logits", ", ".join(f"{v:g}" for v in sampling.LECTURE_LOGITS), label="Logits x")
    TOY_TEMPERATURES = Setting("sampling_toy_temps", ", ".join(f"{v:g}" for v in sampling.LECTURE_TEMPERATURES),
                               label="Temperatures T")
    TOY_SHIFT = Setting("sampling_toy_shift", 0.0, low=-50.0, high=50.0, label="Constant c added to every logit")


# ---------------------------------------------------------------- Beam search
class Beam:
    EARLY_STOPPING_LABELS = {"false": "False (default)", "true": "True", "never": "never"}
    BEAMS = Setting("beam_beams", 3, low=1, high=8, label="Beams K")
    NEW_TOKENS = Setting("beam_new", 6, low=1, high=20, label="New tokens")
    LENGTH_PENALTY = Setting("beam_lp", 1.0, low=-3.0, high=3.0, label="Length penalty")
    EARLY_STOPPING = Setting("beam_es", "false", choices=tuple(EARLY_STOPPING_LABELS), label="Early stopping")
    PRUNED = Setting("beam_pruned", 2, low=0, high=5, label="Pruned shown per beam")
    SEED = Setting("beam_seed", 0, low=0, high=2**31 - 1, label="Sampling seed")
    # the replay's frame; LAST: the finished search
    FRAME = Setting("beam_frame", LAST, low=1, label="Replay the search")


# ---------------------------------------------------------------- Loss & perplexity
class Loss:
    TOKENS_VIEW, TWO_TEXTS, TWO_MODELS, BY_LAYER, CONTEXT = (
        "Token by token", "Two texts", "Two models", "By layer", "Context length")
    SIDEBAR_TEXT, LONG_SAMPLE = "Sidebar text", "Long sample (Pride and Prejudice, ch. 1–3)"
    SURPRISAL, RANK_BUCKET = "Surprisal", "Rank bucket"
    VIEW = Setting("loss_view", TOKENS_VIEW, choices=(TOKENS_VIEW, TWO_TEXTS, TWO_MODELS, BY_LAYER, CONTEXT),
                   label="View")
    SOURCE = Setting("loss_source", SIDEBAR_TEXT, choices=(SIDEBAR_TEXT, LONG_SAMPLE), label="Text")
    COLOUR = Setting("loss_colour", SURPRISAL, choices=(SURPRISAL, RANK_BUCKET), label="Colour by")
    # the page caps it at the model's context
    WINDOW_LENGTH = Setting("loss_max_length", 1024, low=1, high=10**9, label="Window: max length (tokens)")
    STRIDE = Setting("loss_stride", 512, low=1, high=10**9, label="Stride (new tokens per window)")
    TEXT_A = Setting("loss_text_a", "", label="Text A")  # the page's default: the class example and its scrambled twin
    TEXT_B = Setting("loss_text_b", "", label="Text B")


# ---------------------------------------------------------------- Heads & embeddings
class Heads:
    TIED_TAB, MASKED_TAB, CLASSIFICATION_TAB = "Tied embeddings", "Masked LM", "Classification"
    K = Setting("heads_k", 10, low=1, high=20, label="Neighbours per token (k)")
    METRIC = Setting("heads_metric", "dot", choices=("dot", "cosine"), label="Score")
    MASK_K = Setting("heads_mask_k", 5, low=1, high=20, label="Tokens per mask (k)")
    SOURCE = Setting("heads_source", "random", choices=("random", "fitted"), label="Head")
    LABELS = Setting("heads_labels", "negative, positive", label="Labels, in id order (comma-separated)")
    SEED = Setting("heads_seed", 0, low=0, high=2**31 - 1, label="Seed")
    # "first" for a masked LM
    POOLING = Setting("heads_pooling", "last", choices=classification.POOLINGS, label="Pooling")
    TAB = Setting("heads_tab", TIED_TAB, choices=(TIED_TAB, MASKED_TAB, CLASSIFICATION_TAB))


# ---------------------------------------------------------------- Attention & attribution
class Attention:
    TOP_PREDICTION, NEXT_TOKEN, TYPED = "top prediction", "actual next token", "a token I type"
    STATISTIC = Setting("att_stat", "previous", choices=tuple(attention.STATISTICS), label="Colour heads by")
    # the queries shown; default: the last DEFAULT_WINDOW
    WINDOW = Setting("att_window", (0, 0), low=0, label="Queries shown")
    LAYER = Setting("att_layer", 0, low=0, label="Layer")  # default: the strongest head for the statistic
    HEAD = Setting("att_head", 0, low=0, label="Head")
    QUERY = Setting("att_query", LAST, low=0, label="From query")
    POSITION = Setting("att_position", LAST, low=0, label="After position")
    TARGET = Setting("att_target_kind", TOP_PREDICTION, choices=(TOP_PREDICTION, NEXT_TOKEN, TYPED),
                     label="Explain the logit of")
    TARGET_TEXT = Setting("att_target_text", "", label="Token (text or id)")
    UP_TO = Setting("att_upto", LAST, low=0)  # LAST: the output layer, the model's own logit
    ABLATE = Setting("att_ablate", "head", choices=("head", "attn", "mlp"), label="Part")
    ABLATE_LAYER = Setting("att_ablate_layer", 0, low=0, label="Layer ")
    ABLATE_HEAD = Setting("att_ablate_head", 0, low=0, label="Head ")
    MODE = Setting("att_mode", "zero", choices=("zero", "mean"), label="Replace by")


# ---------------------------------------------------------------- Information flow
class InformationFlow:
    POSITION = Setting("flow_pos", LAST, low=0, label="Into position")
    THRESHOLD = Setting("flow_tau", flow.DEFAULT_THRESHOLD, low=0.0, high=1.0,
                        label="Threshold τ (the least importance an edge keeps)")
    # the node whose links are offered (a click picks it); default: the chosen position's final residual
    NODE_LAYER = Setting("flow_node_layer", LAST, low=0, label="Node's layer")
    NODE_POSITION = Setting("flow_node_pos", LAST, low=0, label="Node's position")
    NODE_MID = Setting("flow_node_mid", False, label="Inside the block, after its attention")


# ---------------------------------------------------------------- Experiments
class Experiments:
    PATCHING_TAB, LENS_TAB, ATP_TAB, PATHS_TAB, TOKENS_TAB, STEERING_TAB = (
        "Patching", "Patch lens", "Attribution patching", "Paths", "Which tokens mattered", "Steering")
    EXAMPLE = Setting("exp_example", patching.EXAMPLES[0].name, choices=tuple(e.name for e in patching.EXAMPLES),
                      label="Ready-made pair")
    CLEAN = Setting("exp_clean", patching.EXAMPLES[0].clean, label="Clean text")
    CORRUPTED = Setting("exp_corrupted", patching.EXAMPLES[0].corrupted, label="Corrupted text (as many tokens)")
    ANSWER = Setting("exp_answer", patching.EXAMPLES[0].answer, label="Answer")
    WRONG = Setting("exp_wrong", patching.EXAMPLES[0].wrong, label="Wrong token")
    SITE = Setting("exp_site", "resid", choices=tuple(patching.SITES), label="Patch")
    MODE = Setting("exp_mode", "denoise", choices=patching.MODES, label="Direction")
    METRIC = Setting("exp_metric", "normalized", choices=patching.METRICS, label="Metric")
    LAYER = Setting("exp_layer", 0, low=0, label="Layer")  # the chosen cell; default: the strongest one
    COLUMN = Setting("exp_column", 0, low=0, label="Position or head")
    RECEIVER_LAYER = Setting("exp_recv_layer", 0, low=0, label="Receiver layer")  # default: the strongest head
    RECEIVER_HEAD = Setting("exp_recv_head", 0, low=0, label="Receiver head")
    RECEIVER_INPUT = Setting("exp_recv_input", "q", choices=("q", "k", "v"), label="Through its")
    EXPLAIN = Setting("exp_explain", "contrast", choices=("contrast", "top"), label="Explain")
    METHOD = Setting("exp_method", "integrated_gradients", choices=saliency.METHODS, label="Estimate")
    STEPS = Setting("exp_steps", 64, low=1, high=saliency.MAX_STEPS, label="Integrated-gradient steps")
    STEER_TEXT = Setting("exp_steer_text", "I think that you are", label="Prompt")
    STEER_FROM = Setting("exp_steer_from", " hate", label="From (A)")
    STEER_TO = Setting("exp_steer_to", " love", label="To (B)")
    STEER_LAYER = Setting("exp_steer_layer", steering.DEFAULT_LAYER, low=0, label="Add at the input of block")
    STEER_SCALES = Setting("exp_steer_scales", "-1, 1, 2", label="Scales (comma-separated)")
    STEER_TOKENS = Setting("exp_steer_tokens", 20, low=1, high=steering.MAX_NEW_TOKENS, label="New tokens")
    TAB = Setting("exp_tab", PATCHING_TAB, choices=(PATCHING_TAB, LENS_TAB, ATP_TAB, PATHS_TAB, TOKENS_TAB,
                                                    STEERING_TAB))


# ---------------------------------------------------------------- Features
class Features:
    LATENT_TAB, STEERING_TAB, NEURONS_TAB = "The latent", "Steering with it", "Neurons"
    SAE = Setting("feat_sae", DEFAULT_SAE, label="SAE: an embedded one's name, or a folder in SAELens's format")
    LATENT = Setting("feat_latent", 0, low=0, label="Latent")  # default: the strongest at the chosen position
    POSITION = Setting("feat_pos", LAST, low=0, label="Position")
    ALPHA = Setting("feat_alpha", DEFAULT_ALPHA, low=-1000.0, high=1000.0, label="α (× the latent's decoder row)")
    STEER_TOKENS = Setting("feat_tokens", 20, low=1, high=steering.MAX_NEW_TOKENS, label="New tokens")
    NEURON_LAYER = Setting("feat_neuron_layer", 0, low=0, label="Neurons of block")  # default: the SAE's block − 1
    NEURON = Setting("feat_neuron", 0, low=0, label="Neuron (its contexts)")  # default: the top one
    TAB = Setting("feat_tab", LATENT_TAB, choices=(LATENT_TAB, STEERING_TAB, NEURONS_TAB))
