"""Activation patching: which internal states carry the answer from one input to another.

Two texts with the same number of tokens differ in what matters, e.g. the IOI
pair "When Mary and John went to the store, John gave a drink to" (answer
" Mary") and the same with the second "John" replaced by "Mary" (now " John"
is right). The **metric** m is logit(answer) − logit(wrong) at the last
position. Run both texts once and record every site. Then, for each site,
copy the *clean* run's value into the *corrupted* run (denoising) and see how
much of the clean metric comes back:

    normalized = (m_patched − m_corrupted) / (m_clean − m_corrupted)

0 means the patch restored nothing, 1 everything. Noising copies the corrupted
value into the clean run instead (a site the clean run needs drops toward 0).
Also kept per cell: the raw logit difference, p(answer) and KL(clean ‖ patched)
of the next-token distribution, in nats.

Sites (`SITES`): "resid" is block l's input at position p (values[layer][position]);
"attn" and "mlp" what block l's attention or MLP adds to the residual at p;
"head" one head's slice of the output projection's input, at every position
(values[layer][head]), or at one position.

Each cell is one forward pass with one `Edit` of the seam. The passes are not
run one at a time: the corrupted text is copied into a batch, each row gets
its own patch (`Edit.rows`), and one pass runs dozens of experiments.

**Attribution patching** (AtP, Nanda; Kramár et al. 2024) estimates every cell
at once from one backward pass: m_patched ≈ m_base + (h_source − h_base) · ∂m/∂h.
It is a first-order guess, shown beside the exact values with its error; it
fails where the model is far from linear in h, e.g. attention that saturates.

**Path patching, direct:** a sender head's effect on the logits through the
residual stream alone: its output patched into the state the unembedding
reads, nothing in between recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmviz.analyses.attribution import resolve_target
from lmviz.errors import LmvizError
from lmviz.forward import trace as trace_module
from lmviz.forward.cache import cached
from lmviz.model import interventions
from lmviz.model.interventions import Edit, Recording, Site
from lmviz.model.models import LoadedModel
from lmviz.tokens import display_tokens

SITES = {"resid": "hook_resid_pre", "attn": "hook_attn_out", "mlp": "hook_mlp_out", "head": "attn.hook_z"}
MODES = ("denoise", "noise")
METRICS = ("normalized", "logit_diff", "prob", "kl")
MAX_TOKENS = 64  # patching every (layer, position) of a longer text is not an interactive experiment
BATCH_TOKENS = 2048  # tokens per batched pass (rows × text length); measured in bench/patching.py
MAX_ROWS = 128  # and at most this many experiments per pass


@dataclass(frozen=True)
class Example:
    """A ready-made pair: on SmolLM2 and Gemma-3 270M both texts have one length, the clean text prefers
    `answer` and the corrupted one `wrong` (tests/test_patching.py checks it)."""

    name: str
    clean: str
    corrupted: str
    answer: str
    wrong: str
    what: str  # what the corruption changes, in a sentence


EXAMPLES = (
    Example("Indirect object (IOI)", "When Mary and John went to the store, John gave a drink to",
            "When Mary and John went to the store, Mary gave a drink to", " Mary", " John",
            "The second name changes: whoever is named twice is not the one who receives the drink."),
    Example("Factual recall", "The Eiffel Tower is located in the city of",
            "The Colosseum is located in the city of", " Paris", " Rome",
            "The subject changes, and with it the fact the model must recall."),
    Example("Induction", "The blue lamp stood by the window. The blue lamp stood by the",
            "The blue lamp stood by the door. The blue lamp stood by the", " window", " door",
            "The first sentence changes: the model copies what followed the same words before."),
    Example("Greater-than", "The war lasted from the year 1782 to the year 17",
            "The war lasted from the year 1722 to the year 17", '"8"', '"2"',
            "The start year changes: the end year's next digit should be at least the start's."),
)


@dataclass(frozen=True)
class Run:
    """One text's plain pass: its ids, every block's value at every site (`SITES`), and the last logits."""

    ids: torch.Tensor  # (1, pos)
    states: dict[str, tuple[torch.Tensor, ...]]  # hook -> per layer (pos, width), as the model computed it
    last_logits: torch.Tensor  # (vocab,) float64


@dataclass(frozen=True)
class Pair:
    """The clean and corrupted runs of an experiment and the two tokens its metric compares."""

    clean: Run
    corrupted: Run
    tokens: tuple[str, ...]  # the clean text's tokens (display)
    corrupted_tokens: tuple[str, ...]
    answer_id: int
    wrong_id: int
    answer: str  # display
    wrong: str

    def base_and_source(self, mode: str) -> tuple[Run, Run]:
        """(the run that is patched, the run the values come from)."""
        if mode not in MODES:
            raise LmvizError(f"Patching denoises (clean into corrupted) or noises (corrupted into clean), "
                             f"not '{mode}'.")
        return (self.corrupted, self.clean) if mode == "denoise" else (self.clean, self.corrupted)


@dataclass(frozen=True)
class Metrics:
    """The metrics of one or more runs' last positions (each (n,) float64)."""

    logit_diff: np.ndarray  # logit(answer) − logit(wrong)
    prob: np.ndarray  # p(answer)
    kl: np.ndarray  # KL(clean ‖ this run), nats


@dataclass(frozen=True)
class Patching:
    """Every cell of one patching experiment: values[row][column] per metric, rows = layers, columns =
    positions (resid, attn, mlp) or heads (head)."""

    model_name: str
    clean_text: str
    corrupted_text: str
    tokens: tuple[str, ...]
    corrupted_tokens: tuple[str, ...]
    answer_id: int
    wrong_id: int
    answer: str
    wrong: str
    site: str
    mode: str
    position: int | None  # head patching at one position; None: at every position
    clean: Metrics  # of the unpatched clean run (one value each)
    corrupted: Metrics
    cells: Metrics  # (layers, columns) each

    def values(self, metric: str = "normalized") -> np.ndarray:
        """(layers, columns) float64: the chosen metric per cell."""
        return _values(self, metric)

    @property
    def columns(self) -> str:
        return "head" if self.site == "head" else "position"


def normalize(m: np.ndarray, clean: float, corrupted: float) -> np.ndarray:
    """(m − m_corrupted) / (m_clean − m_corrupted): 0 = the corrupted run, 1 = the clean run."""
    return (m - corrupted) / (clean - corrupted)


def _check_texts(lm: LoadedModel, clean: str, corrupted: str) -> tuple[list[int], list[int]]:
    lm.require_causal("patching")
    lm.arch.require_decomposition()
    a, b = trace_module.encode(lm, clean), trace_module.encode(lm, corrupted)
    if len(a) != len(b):
        with lm.lock:
            shown_a, shown_b = display_tokens(lm.tokenizer, a), display_tokens(lm.tokenizer, b)
        raise LmvizError(
            f"The clean text has {len(a)} tokens and the corrupted text {len(b)}; patching copies states "
            f"position by position, so both need the same number. Clean: {' | '.join(shown_a)}  ·  "
            f"corrupted: {' | '.join(shown_b)}")
    if a == b:
        raise LmvizError("The clean and corrupted texts are the same tokens, so patching one into the other "
                         "changes nothing (every normalized value would be 0/0). Change the corrupted text.")
    if len(a) > MAX_TOKENS:
        raise LmvizError(f"The texts are {len(a)} tokens long; patching takes at most {MAX_TOKENS}.")
    return a, b


def _run(lm: LoadedModel, text: str, ids: list[int]) -> Run:
    def compute() -> Run:
        sites = {hook: [Site(f"blocks.{layer}.{hook}") for layer in range(lm.n_layers)] for hook in SITES.values()}
        recording = Recording([site for layer_sites in sites.values() for site in layer_sites])
        output = interventions.forward(lm, torch.tensor([ids]), record=recording, **_last_only(lm))
        states = {hook: tuple(recording[site] for site in layer_sites) for hook, layer_sites in sites.items()}
        return Run(torch.tensor([ids]), states, output.logits[0, -1].double().cpu())
    return cached("patching-run", lm, (text,), compute)


def pair(lm: LoadedModel, clean: str, corrupted: str, answer: str, wrong: str) -> Pair:
    """Both runs (cached per text) and the metric's two tokens, typed as on the attribution page."""
    a, b = _check_texts(lm, clean, corrupted)
    answer_id, wrong_id = resolve_target(lm, answer), resolve_target(lm, wrong)
    if not (0 <= answer_id < lm.vocab_size and 0 <= wrong_id < lm.vocab_size):
        raise LmvizError(f"Token ids go from 0 to {lm.vocab_size - 1}.")
    if answer_id == wrong_id:
        raise LmvizError("The answer and the wrong token are the same token, so their logit difference is 0.")
    with lm.lock:
        tokens = tuple(display_tokens(lm.tokenizer, a))
        corrupted_tokens = tuple(display_tokens(lm.tokenizer, b))
        shown = display_tokens(lm.tokenizer, [answer_id, wrong_id])
    return Pair(_run(lm, clean, a), _run(lm, corrupted, b), tokens, corrupted_tokens, answer_id, wrong_id,
                *shown)


def metrics(pair: Pair, last_logits: torch.Tensor) -> Metrics:
    """Metrics of (n, vocab) last-position logits, in float64."""
    logits = last_logits.double()
    log_p = torch.log_softmax(logits, dim=-1)
    clean_log_p = torch.log_softmax(pair.clean.last_logits, dim=-1)
    kl = (clean_log_p.exp() * (clean_log_p - log_p)).sum(-1).clamp_min(0.0)
    return Metrics((logits[:, pair.answer_id] - logits[:, pair.wrong_id]).numpy(),
                   log_p[:, pair.answer_id].exp().numpy(), kl.numpy())


def _shape(lm: LoadedModel, site: str, n_pos: int) -> tuple[int, int]:
    if site not in SITES:
        raise LmvizError(f"Patch one of {', '.join(SITES)}, not '{site}'.")
    return lm.n_layers, lm.arch.require_decomposition().n_heads if site == "head" else n_pos


def _edits(lm: LoadedModel, site: str, cells: list[tuple[int, int]], source: Run,
           position: int | None) -> list[Edit]:
    """The edits that patch cell i of `cells` into batch row i."""
    hook = SITES[site]
    if site == "head":
        width = lm.arch.decomposition.d_head
        at = slice(None) if position is None else position
        return [Edit(Site(f"blocks.{layer}.{hook}", unit=head),
                     source.states[hook][layer][at, head * width:(head + 1) * width], at=position, rows=[row])
                for row, (layer, head) in enumerate(cells)]
    edits = []
    for layer in sorted({layer for layer, _ in cells}):
        rows = [row for row, cell in enumerate(cells) if cell[0] == layer]
        positions = [cells[row][1] for row in rows]
        edits.append(Edit(Site(f"blocks.{layer}.{hook}"), source.states[hook][layer][positions],
                          at=positions, rows=rows))
    return edits


def _last_only(lm: LoadedModel) -> dict:
    """Model arguments that compute the logits of the last position only, where the model takes them."""
    return {"logits_to_keep": 1} if trace_module.accepts_logits_to_keep(lm.model) else {}


def patched_logits(lm: LoadedModel, base: Run, edits: list[Edit], rows: int) -> torch.Tensor:
    """(rows, vocab) float64 last-position logits of `rows` copies of the base text, each edited as `edits`
    say (`Edit.rows`)."""
    output = interventions.forward(lm, base.ids.expand(rows, -1), edits=edits, **_last_only(lm))
    return output.logits[:, -1].double().cpu()


def patch(lm: LoadedModel, clean: str, corrupted: str, answer: str, wrong: str, site: str = "resid",
          mode: str = "denoise", position: int | None = None, progress=None) -> Patching:
    """Every cell of `site` patched from one run into the other (cached). `position` restricts head
    patching to one position. `progress(done, total)` is called after each batched pass."""
    runs = pair(lm, clean, corrupted, answer, wrong)
    n_layers, n_columns = _shape(lm, site, runs.clean.ids.shape[1])
    if position is not None:
        if site != "head":
            raise LmvizError("Only head patching takes one position; the other sites have a column per position.")
        if not -runs.clean.ids.shape[1] <= position < runs.clean.ids.shape[1]:
            raise LmvizError(f"Position {position} is outside the text's {runs.clean.ids.shape[1]} tokens.")
        position %= runs.clean.ids.shape[1]

    def compute() -> Patching:
        base, source = runs.base_and_source(mode)
        cells = [(layer, column) for layer in range(n_layers) for column in range(n_columns)]
        per_pass = max(1, min(MAX_ROWS, BATCH_TOKENS // base.ids.shape[1]))
        logits = []
        for start in range(0, len(cells), per_pass):
            chunk = cells[start:start + per_pass]
            logits.append(patched_logits(lm, base, _edits(lm, site, chunk, source, position), len(chunk)))
            if progress is not None:
                progress(start + len(chunk), len(cells))
        cell_metrics = metrics(runs, torch.cat(logits))
        grid = Metrics(*(values.reshape(n_layers, n_columns) for values in (
            cell_metrics.logit_diff, cell_metrics.prob, cell_metrics.kl)))
        return Patching(lm.name, clean, corrupted, runs.tokens, runs.corrupted_tokens, runs.answer_id,
                        runs.wrong_id, runs.answer, runs.wrong, site, mode, position,
                        *_ends(runs), grid)
    return cached("patching", lm, (clean, corrupted, runs.answer_id, runs.wrong_id, site, mode, position), compute)


# ---------------------------------------------------------------- attribution patching


@dataclass(frozen=True)
class AttributionPatching:
    """AtP's estimate of every cell beside the exact values (`exact`), for one metric."""

    metric: str
    estimate: np.ndarray  # (layers, columns) the estimated metric after patching each cell
    exact: Patching
    correlation: float  # Pearson's r between estimate and exact over all cells
    worst: tuple[tuple[int, int, float, float], ...]  # (layer, column, estimate, exact), largest |error| first

    @property
    def max_error(self) -> float:
        return float(np.abs(self.estimate - self.exact.values(self.metric)).max())


def _scalar(runs: Pair, metric: str, last_logits: torch.Tensor) -> torch.Tensor:
    """The metric of one run's (vocab,) last logits as a differentiable scalar (before normalizing)."""
    if metric in ("normalized", "logit_diff"):
        return last_logits[runs.answer_id] - last_logits[runs.wrong_id]
    log_p = torch.log_softmax(last_logits.double(), dim=-1)
    if metric == "prob":
        return log_p[runs.answer_id].exp()
    clean_log_p = torch.log_softmax(runs.clean.last_logits, dim=-1).to(log_p.device)
    return (clean_log_p.exp() * (clean_log_p - log_p)).sum()


def attribution_patch(lm: LoadedModel, clean: str, corrupted: str, answer: str, wrong: str,
                      site: str = "resid", mode: str = "denoise", metric: str = "normalized",
                      worst: int = 5) -> AttributionPatching:
    """AtP's estimate of every cell of `site` (one pass with gradients) beside exhaustive patching."""
    if metric not in METRICS:
        raise LmvizError(f"The metric is one of {', '.join(METRICS)}, not '{metric}'.")
    exact = patch(lm, clean, corrupted, answer, wrong, site, mode)
    runs = pair(lm, clean, corrupted, answer, wrong)

    def compute() -> np.ndarray:
        base, source = runs.base_and_source(mode)
        hook = SITES[site]
        sites = [Site(f"blocks.{layer}.{hook}") for layer in range(lm.n_layers)]
        recording = Recording(sites, graph=True)
        output = interventions.forward(lm, base.ids, record=recording, grad=True)
        m = _scalar(runs, metric, output.logits[0, -1])
        gradients = torch.autograd.grad(m, [recording[s] for s in sites])
        rows = []
        for layer, gradient in enumerate(gradients):
            delta = (source.states[hook][layer] - base.states[hook][layer]).to(gradient.device, gradient.dtype)
            effect = (delta * gradient[0]).double()  # (pos, width)
            if site == "head":
                effect = effect.sum(0).reshape(-1, lm.arch.decomposition.d_head)  # (heads, d_head)
            rows.append(effect.sum(-1).cpu().numpy())
        return float(m.detach()) + np.stack(rows)

    estimate = cached("attribution-patching", lm, (clean, corrupted, runs.answer_id, runs.wrong_id, site, mode,
                                                   metric), compute)
    if metric == "normalized":
        estimate = normalize(estimate, exact.clean.logit_diff[0], exact.corrupted.logit_diff[0])
    truth = exact.values(metric)
    error = np.abs(estimate - truth)
    order = np.argsort(-error, axis=None)[:worst]
    cells = tuple((int(i // truth.shape[1]), int(i % truth.shape[1]), float(estimate.flat[i]), float(truth.flat[i]))
                  for i in order)
    correlation = float(np.corrcoef(estimate.ravel(), truth.ravel())[0, 1]) if truth.std() > 0 and \
        estimate.std() > 0 else float("nan")
    return AttributionPatching(metric, estimate, exact, correlation, cells)


# ---------------------------------------------------------------- path patching


@dataclass(frozen=True)
class DirectPaths:
    """Each head's direct effect on the logits: its output patched from the source run into the final
    residual stream of the base run, nothing in between recomputed. values[layer][head] per metric."""

    clean: Metrics  # of the unpatched runs (one value each)
    corrupted: Metrics
    cells: Metrics  # (layers, heads) each

    def values(self, metric: str = "normalized") -> np.ndarray:
        return _values(self, metric)


def _values(result, metric: str) -> np.ndarray:
    """(rows, columns) float64: the chosen metric per cell of a result with clean, corrupted and cells."""
    if metric not in METRICS:
        raise LmvizError(f"The metric is one of {', '.join(METRICS)}, not '{metric}'.")
    if metric == "normalized":
        return normalize(result.cells.logit_diff, result.clean.logit_diff[0], result.corrupted.logit_diff[0])
    return getattr(result.cells, metric)


def direct_paths(lm: LoadedModel, clean: str, corrupted: str, answer: str, wrong: str,
                 mode: str = "denoise") -> DirectPaths:
    """Every head's direct path to the logits at the last position (see DirectPaths)."""
    runs = pair(lm, clean, corrupted, answer, wrong)
    runs.base_and_source(mode)
    head = lm.head

    def compute() -> Metrics:
        base, source = runs.base_and_source(mode)
        parts = lm.arch.decomposition
        final = Site(f"blocks.{lm.n_layers - 1}.hook_resid_post")
        recording = Recording([final], at=-1)
        interventions.run(lm, base.ids, record=recording, logits_at=-1)
        last = recording[final]  # (d_model,) what the final norm reads at the last position
        width = parts.d_head
        rows = []
        with torch.inference_mode():
            for layer in range(lm.n_layers):
                z = base.states["attn.hook_z"][layer][-1]  # (heads · d_head,)
                patched = z.repeat(parts.n_heads, 1)
                for h in range(parts.n_heads):
                    patched[h, h * width:(h + 1) * width] = source.states["attn.hook_z"][layer][-1,
                                                                                              h * width:(h + 1) * width]
                device = next(parts.out_projs[layer].parameters()).device
                write = parts.attn_post_norm(layer) or torch.nn.Identity()
                before = write(parts.out_projs[layer](z[None].to(device)))
                after = write(parts.out_projs[layer](patched.to(device)))
                rows.append(head.logits((last.to(device) + (after - before))[:, None, :])[:, 0])
        return metrics(runs, torch.cat(rows))

    cells = cached("direct-paths", lm, (clean, corrupted, runs.answer_id, runs.wrong_id, mode), compute)
    shape = (lm.n_layers, lm.arch.decomposition.n_heads)
    return DirectPaths(*_ends(runs), Metrics(*(v.reshape(shape) for v in (cells.logit_diff, cells.prob, cells.kl))))


def _ends(runs: Pair) -> tuple[Metrics, Metrics]:
    """The metrics of the unpatched clean and corrupted runs."""
    return metrics(runs, runs.clean.last_logits[None]), metrics(runs, runs.corrupted.last_logits[None])


@dataclass(frozen=True)
class ReceiverPaths:
    """Each sender head's effect through one receiver head's query, key or value input alone: the sender's
    output patched from the source run, reaching the receiver through the residual stream only (every
    attention and MLP block in between held at the base run), and read by the receiver's `input`
    projection alone; everything after the receiver then runs as usual. values[layer][head] for the
    senders in the layers before the receiver's."""

    receiver: tuple[int, int]  # (layer, head)
    input: str  # "q" | "k" | "v"
    shared_by: tuple[int, ...]  # the query heads that read this key or value (grouped-query attention)
    clean: Metrics  # of the unpatched runs (one value each)
    corrupted: Metrics
    cells: Metrics  # (receiver layer, heads) each

    def values(self, metric: str = "normalized") -> np.ndarray:
        return _values(self, metric)


def receiver_paths(lm: LoadedModel, clean: str, corrupted: str, answer: str, wrong: str,
                   receiver: tuple[int, int], input: str = "q", mode: str = "denoise",
                   progress=None) -> ReceiverPaths:
    """Every earlier head's path into `receiver`'s query, key or value (see ReceiverPaths): two batched
    passes per chunk of senders, the first recording what the receiver's projection would read, the
    second feeding it in."""
    runs = pair(lm, clean, corrupted, answer, wrong)
    runs.base_and_source(mode)
    parts = lm.arch.require_decomposition()
    if input not in ("q", "k", "v"):
        raise LmvizError(f"A receiver head reads a query, key or value input (q, k, v), not '{input}'.")
    if parts.qkv_projs is None:
        raise LmvizError(parts.qkv_refusal)
    layer, head = receiver
    if not (0 < layer < lm.n_layers and 0 <= head < parts.n_heads):
        raise LmvizError(f"A receiver is a head of layers 1..{lm.n_layers - 1} (heads 0..{parts.n_heads - 1}), "
                         f"so that some heads come before it; not L{layer}.H{head}.")
    group = parts.n_heads // parts.n_kv_heads
    unit = head if input == "q" else head // group
    shared = (head,) if input == "q" else tuple(range(unit * group, (unit + 1) * group))

    def compute() -> Metrics:
        base, source = runs.base_and_source(mode)
        into = Site(f"blocks.{layer}.attn.hook_{input}", unit=unit)
        senders = [(l, h) for l in range(layer) for h in range(parts.n_heads)]
        per_pass = max(1, min(MAX_ROWS, BATCH_TOKENS // base.ids.shape[1]))
        logits = []
        for start in range(0, len(senders), per_pass):
            chunk = senders[start:start + per_pass]
            edits = _edits(lm, "head", chunk, source, None)
            for k in range(chunk[0][0], layer):  # hold every block between sender and receiver at the base run
                held = {"hook_mlp_out": [r for r, (l, _) in enumerate(chunk) if l <= k],
                        "hook_attn_out": [r for r, (l, _) in enumerate(chunk) if l < k]}
                edits += [Edit(Site(f"blocks.{k}.{hook}"), base.states[hook][k], rows=rows)
                          for hook, rows in held.items() if rows]
            reads = Recording([into], every_row=True)
            interventions.forward(lm, base.ids.expand(len(chunk), -1), record=reads, edits=edits, **_last_only(lm))
            logits.append(patched_logits(lm, base, [Edit(into, reads[into], rows=list(range(len(chunk))))],
                                         len(chunk)))
            if progress is not None:
                progress(start + len(chunk), len(senders))
        return metrics(runs, torch.cat(logits))

    cells = cached("receiver-paths", lm, (clean, corrupted, runs.answer_id, runs.wrong_id, receiver, input, mode),
                   compute)
    shape = (layer, parts.n_heads)
    return ReceiverPaths(receiver, input, shared, *_ends(runs),
                         Metrics(*(v.reshape(shape) for v in (cells.logit_diff, cells.prob, cells.kl))))


# ---------------------------------------------------------------- one patched run, whole


def patched_trace(lm: LoadedModel, clean: str, corrupted: str, answer: str, wrong: str, site: str, layer: int,
                  column: int | None, mode: str = "denoise") -> trace_module.Trace:
    """The base run with one cell patched (column None: every position, or every head), recorded whole as a
    `Trace`: its logits at every position and its residual stream, for the next-token distribution and the
    logit lens of the patched run (the Patch-Lens view). Cached."""
    runs = pair(lm, clean, corrupted, answer, wrong)
    n_layers, n_columns = _shape(lm, site, runs.clean.ids.shape[1])
    if not 0 <= layer < n_layers or not (column is None or 0 <= column < n_columns):
        raise LmvizError(f"No cell (layer {layer}, {'head' if site == 'head' else 'position'} {column}) here: "
                         f"layers 0..{n_layers - 1}, columns 0..{n_columns - 1}.")
    base, source = runs.base_and_source(mode)
    hook = SITES[site]
    if column is None:
        edits = [Edit(Site(f"blocks.{layer}.{hook}"), source.states[hook][layer])]
    elif site == "head":
        edits = _edits(lm, site, [(layer, column)], source, None)
    else:
        edits = [Edit(Site(f"blocks.{layer}.{hook}"), source.states[hook][layer][column], at=column)]
    text = corrupted if mode == "denoise" else clean
    where = "every " + ("head" if site == "head" else "position") if column is None else \
        f"{'head' if site == 'head' else 'position'} {column}"
    label = f"{site} of layer {layer} at {where}, from the {'clean' if mode == 'denoise' else 'corrupted'} text"
    key = (clean, corrupted, site, layer, column, mode)
    return cached("patched-trace", lm, key, lambda: trace_module.run_trace(lm, text, edits=edits, patched=label))
