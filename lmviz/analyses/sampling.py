"""Logits -> probabilities -> the next token: temperature, top-k, top-p, min-p, typical-p, sampling.

A language model gives one logit per vocabulary token. Decoding turns them
into a choice in a fixed order, the order `model.generate()` uses:

1. repetition penalty (optional): the logit of every token already in the
   text is divided by the penalty when positive, multiplied when negative;
2. temperature T: logits / T. Dividing by one positive number never changes
   which token is ahead of which (the ordering), only how far apart they are:
   T < 1 sharpens the softmax, T > 1 flattens it. T = 0 is greedy decoding
   (always the argmax); nothing is divided by 0;
3. the filters, each on what the previous one left: top-k (keep the k best),
   top-p (the smallest set whose probability reaches p), min-p (drop tokens
   below min_p x the top probability), typical-p (keep tokens whose surprise
   is close to the entropy);
4. softmax over what is left (float32, the full vocabulary, no top-50
   shortcut), then one draw with `torch.multinomial`.

Every step uses transformers' own logits processors, so the numbers here are
the numbers `generate` works with. Results:

- `Distribution`: one position's next-token distribution before and after
  each stage, which filter removed each token, entropy, effective vocabulary;
- `ToyTable`: softmax with temperature on a short hand-typed logit vector (the
  lecture's [1, -4, 2, 4, 3]) and the shift-invariance of softmax;
- `Sweep`: entropy and top-token probability as functions of T;
- `Generation`: step-by-step greedy or seeded sampling, each step's
  distribution kept; equal to `generate(do_sample=...)` token for token.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from dataclasses import dataclass, replace

import torch
from transformers import (
    LogitsProcessor,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from lmviz.forward import decoding
from lmviz.forward.cache import CACHE, cached
from lmviz.errors import LmvizError
from lmviz.model.models import LoadedModel
from lmviz.tokens import display_token, token_text

# What removed a token, as stored in Distribution.removed_by (0 = still in the running).
STAGES = ("kept", "top-k", "top-p", "min-p", "typical-p", "greedy")
NOT_REMOVED, TOP_K, TOP_P, MIN_P, TYPICAL_P, GREEDY = range(len(STAGES))

MIN_TEMPERATURE = 1e-4  # below this, logits / T overflow float32; T = 0 (greedy) is the limit anyway
MASS = 0.9  # effective vocabulary: how many tokens hold this much of the probability
MAX_STEPS = 200  # most tokens one step-by-step generation produces


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class SamplingSettings:
    """How the next token is chosen. Each field's neutral value switches it off.

    Unlike `generate()`, which applies top_k=50 when it is not given, nothing
    here is on unless set: the default is plain sampling from the model.
    Invalid values raise LmvizError when the settings are made.
    """

    temperature: float = 1.0  # 0 = greedy (argmax, no sampling); otherwise logits / T
    top_k: int | None = None  # None = off; keep the k most probable tokens
    top_p: float = 1.0  # 1 = off; keep the smallest set whose probability reaches top_p
    min_p: float = 0.0  # 0 = off; drop tokens below min_p x the top token's probability
    typical_p: float = 1.0  # 1 = off; keep the most "typical" tokens up to this mass
    repetition_penalty: float = 1.0  # 1 = off; > 1 discourages tokens already in the text

    def __post_init__(self):
        t = _number(self.temperature, "Temperature")
        if t < 0:
            raise LmvizError(f"Temperature must be 0 (greedy) or positive, not {t:g}.")
        if 0 < t < MIN_TEMPERATURE:
            raise LmvizError(
                f"Temperature {t:g} is too close to 0 for float32 arithmetic; use at least {MIN_TEMPERATURE:g}, "
                "or 0 for greedy decoding (its limit)."
            )
        object.__setattr__(self, "temperature", t)
        if self.top_k is not None:
            k = _number(self.top_k, "top-k")
            if k != int(k) or k <= 0:
                raise LmvizError(
                    f"top-k must be a whole number of at least 1, not {k:g}; leave it out to keep every token."
                )
            object.__setattr__(self, "top_k", int(k))
        p = _number(self.top_p, "top-p")
        if not 0 < p <= 1:
            raise LmvizError(f"top-p must be in (0, 1] (1 = off), not {p:g}.")
        object.__setattr__(self, "top_p", p)
        m = _number(self.min_p, "min-p")
        if not 0 <= m <= 1:
            raise LmvizError(f"min-p must be in [0, 1] (0 = off), not {m:g}.")
        object.__setattr__(self, "min_p", m)
        typical = _number(self.typical_p, "typical-p")
        if not 0 < typical <= 1:
            raise LmvizError(f"typical-p must be in (0, 1] (1 = off), not {typical:g}.")
        object.__setattr__(self, "typical_p", typical)
        penalty = _number(self.repetition_penalty, "Repetition penalty")
        if penalty <= 0:
            raise LmvizError(f"The repetition penalty must be positive (1 = off), not {penalty:g}.")
        object.__setattr__(self, "repetition_penalty", penalty)

    @property
    def greedy(self) -> bool:
        """Temperature 0: always take the most probable token (generate(do_sample=False))."""
        return self.temperature == 0

    def for_vocabulary(self, vocab_size: int) -> tuple[SamplingSettings, tuple[str, ...]]:
        """These settings with top-k clamped to the vocabulary, and a note saying so when it was."""
        if self.top_k is not None and self.top_k > vocab_size:
            note = (f"top-k {self.top_k:,} is more than the {vocab_size:,} tokens of the vocabulary: "
                    f"using {vocab_size:,}, which keeps every token.")
            return replace(self, top_k=vocab_size), (note,)
        return self, ()

    def describe(self) -> str:
        """A short label, e.g. 'T=0.7 · top-k 50 · top-p 0.9'."""
        if self.greedy:
            parts = ["greedy (T=0)"]
        else:
            parts = [f"T={self.temperature:g}"]
            if self.top_k is not None:
                parts.append(f"top-k {self.top_k}")
            if self.top_p < 1:
                parts.append(f"top-p {self.top_p:g}")
            if self.min_p > 0:
                parts.append(f"min-p {self.min_p:g}")
            if self.typical_p < 1:
                parts.append(f"typical-p {self.typical_p:g}")
        if self.repetition_penalty != 1:
            parts.append(f"repetition penalty {self.repetition_penalty:g}")
        return " · ".join(parts)

    def generate_kwargs(self) -> dict:
        """The `model.generate(...)` arguments that decode exactly like these settings.

        top_k is always passed when sampling (0 = off), because generate()
        otherwise falls back to its default top_k=50.
        """
        if self.greedy:
            kwargs: dict = {"do_sample": False}
        else:
            kwargs = dict(do_sample=True, temperature=self.temperature, top_k=self.top_k or 0, top_p=self.top_p,
                          min_p=self.min_p or None, typical_p=self.typical_p)
        kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs

    def processors(self, input_ids: torch.Tensor | None = None) -> list[tuple[int, LogitsProcessor]]:
        """transformers' logits processors for these settings, in generate()'s order.

        Each comes with the STAGES code of what it removes (NOT_REMOVED for those
        that only rescale: repetition penalty, temperature). Greedy settings
        get only the repetition penalty, as generate(do_sample=False) does.
        """
        stages: list[tuple[int, LogitsProcessor]] = []
        if self.repetition_penalty != 1.0 and input_ids is not None:
            stages.append((NOT_REMOVED, RepetitionPenaltyLogitsProcessor(float(self.repetition_penalty))))
        if self.greedy:
            return stages
        if self.temperature != 1.0:
            stages.append((NOT_REMOVED, TemperatureLogitsWarper(float(self.temperature))))
        if self.top_k is not None:
            stages.append((TOP_K, TopKLogitsWarper(top_k=int(self.top_k), min_tokens_to_keep=1)))
        if self.top_p < 1.0:
            stages.append((TOP_P, TopPLogitsWarper(top_p=self.top_p, min_tokens_to_keep=1)))
        if self.min_p > 0:
            stages.append((MIN_P, MinPLogitsWarper(min_p=self.min_p, min_tokens_to_keep=1)))
        if self.typical_p < 1.0:
            stages.append((TYPICAL_P, TypicalLogitsWarper(mass=self.typical_p, min_tokens_to_keep=1)))
        return stages


def _number(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LmvizError(f"{name} must be a number, not {value!r}.") from None
    if not math.isfinite(number):
        raise LmvizError(f"{name} must be a finite number, not {value!r}.")
    return number


# -------------------------------------------------------------- distribution


@dataclass(frozen=True, eq=False)
class Distribution:
    """One position's next-token distribution, stage by stage. Tensors are CPU, read-only.

    Rows are tokens, most probable first (rank 1 = the top token after the
    repetition penalty; temperature never changes this order). A full
    distribution has one row per vocabulary entry; `top(n)` keeps the first n
    rows. The summaries (entropy, effective vocabulary, kept count) always
    describe the full vocabulary.

    model_probs is the model's own distribution (T = 1, nothing removed);
    tempered_probs is after the repetition penalty and temperature, before the
    filters; probs is what a token is finally drawn from: zero where a filter
    removed the token, the rest renormalized to sum to 1. With T = 0 (greedy)
    tempered_probs and probs put all the mass on the argmax.
    """

    settings: SamplingSettings
    vocab_size: int
    token_ids: torch.Tensor  # (row,) int64 vocabulary ids
    rank: torch.Tensor  # (row,) int64, 1 = most probable
    logits: torch.Tensor  # (row,) the model's raw logits
    scores: torch.Tensor  # (row,) after every processor (what generate samples from); -inf where removed
    model_probs: torch.Tensor  # (row,) softmax(logits): T = 1, no filter
    model_logprobs: torch.Tensor  # (row,) log_softmax(logits)
    tempered_probs: torch.Tensor  # (row,) after repetition penalty and temperature, before the filters
    probs: torch.Tensor  # (row,) final: 0 where removed, the rest sums to 1
    logprobs: torch.Tensor  # (row,) log(probs): -inf where removed
    removed_by: torch.Tensor  # (row,) int8 index into STAGES; 0 = kept
    model_entropy: float  # nats, of model_probs over the full vocabulary
    entropy: float  # nats, of probs over the full vocabulary
    model_effective_vocab: int  # fewest tokens holding MASS of model_probs
    effective_vocab: int  # fewest tokens holding MASS of probs
    n_kept: int  # tokens that can still be drawn
    notes: tuple[str, ...] = ()  # what the user should know (greedy, clamped top-k …)

    @property
    def greedy(self) -> bool:
        return self.settings.greedy

    @property
    def top_id(self) -> int:
        """The token greedy decoding picks."""
        return int(self.token_ids[0])

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])

    def top(self, n: int, include: tuple[int, ...] | list[int] = ()) -> Distribution:
        """The first n rows, plus the rows of the vocabulary ids in `include` (kept in rank order)."""
        rows = torch.zeros(len(self), dtype=torch.bool)
        rows[: max(0, int(n))] = True
        if include:
            rows |= torch.isin(self.token_ids, torch.as_tensor(list(include), dtype=torch.int64))
        index = rows.nonzero().squeeze(1)
        subset = {name: getattr(self, name)[index] for name in _ROW_FIELDS}
        return replace(self, **subset)

    def kept(self) -> Distribution:
        """Only the rows that can still be drawn, in rank order. Not top(n_kept): typical-p can remove the
        most probable tokens and keep less probable ones."""
        index = (self.removed_by == NOT_REMOVED).nonzero().squeeze(1)
        return replace(self, **{name: getattr(self, name)[index] for name in _ROW_FIELDS})

    def row_of(self, token_id: int) -> int:
        """Row index of a vocabulary id (raises LmvizError if this distribution does not hold it)."""
        hits = (self.token_ids == int(token_id)).nonzero()
        if hits.numel() == 0:
            raise LmvizError(f"Token id {token_id} is not among the {len(self)} rows kept.")
        return int(hits[0, 0])

    def status(self) -> list[str]:
        """'kept' or 'removed by top-p' etc., per row."""
        return ["kept" if code == NOT_REMOVED else f"removed by {STAGES[code]}" for code in self.removed_by.tolist()]


_ROW_FIELDS = ("token_ids", "rank", "logits", "scores", "model_probs", "model_logprobs", "tempered_probs",
               "probs", "logprobs", "removed_by")


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats over the last dimension (0 log 0 = 0)."""
    return torch.special.entr(probs.double()).sum(-1)


def effective_vocabulary(probs: torch.Tensor, mass: float = MASS) -> int:
    """The fewest tokens whose probabilities add up to at least `mass`."""
    ordered = torch.sort(probs.double().flatten(), descending=True).values
    cumulative = ordered.cumsum(0)
    return int(min(int(torch.searchsorted(cumulative, mass * float(cumulative[-1]))) + 1, ordered.numel()))


def check_logits(logits: torch.Tensor, what: str = "The logits") -> torch.Tensor:
    """A 1-D floating tensor without NaN or inf, or LmvizError."""
    logits = torch.as_tensor(logits)
    if logits.ndim != 1 or logits.numel() == 0:
        raise LmvizError(f"{what} must be one non-empty vector of numbers.")
    if not logits.is_floating_point():
        logits = logits.double()
    if not torch.isfinite(logits).all():
        bad = (~torch.isfinite(logits)).nonzero()[0, 0].item()
        raise LmvizError(f"{what} contain {logits[bad].item()} at position {bad}: every logit must be a finite number.")
    return logits


def distribution(
    logits: torch.Tensor,
    settings: SamplingSettings = SamplingSettings(),
    input_ids: torch.Tensor | list[int] | None = None,
) -> Distribution:
    """Apply `settings` to one position's logits (vocab,), stage by stage, and record everything.

    input_ids (pos,) are the tokens so far; the repetition penalty uses them.
    Softmax runs in the logits' dtype (float32 for a model, float64 for a
    hand-typed toy vector) over the full vocabulary, on the logits' device (a
    GPU's softmax is generate()'s there); the result's tensors are on the CPU.
    """
    logits = check_logits(logits)
    vocab, device = logits.shape[0], logits.device
    settings, notes = settings.for_vocabulary(vocab)
    ids = None if input_ids is None else torch.as_tensor(input_ids, dtype=torch.int64, device=device).reshape(1, -1)
    scores = logits.unsqueeze(0).clone()  # (1, vocab): processors work on batches; never touch the caller's tensor
    removed_by = torch.zeros(vocab, dtype=torch.int8, device=device)
    tempered = None
    for code, processor in settings.processors(ids):
        if code != NOT_REMOVED and tempered is None:
            tempered = scores  # the filters start here
        scores = processor(ids if ids is not None else torch.zeros((1, 0), dtype=torch.int64, device=device), scores)
        newly_removed = torch.isneginf(scores[0]) & (removed_by == NOT_REMOVED)
        removed_by[newly_removed] = code
    if tempered is None:
        tempered = scores
    final_probs = torch.softmax(scores, -1)[0]  # as generate() does it: softmax over (batch, vocab)
    scores, tempered = scores[0], tempered[0]

    order = torch.sort(tempered, descending=True, stable=True).indices  # rank order; T > 0 keeps it
    if settings.greedy:
        # generate(do_sample=False) takes torch.argmax: the first of equal maxima.
        winner = torch.argmax(scores, dim=0, keepdim=True)
        order = torch.cat([winner, order[order != winner]])
        one_hot = torch.zeros_like(scores)
        one_hot[winner] = 1
        removed_by[:] = GREEDY
        removed_by[winner] = NOT_REMOVED
        tempered_probs = probs = one_hot
        logprobs = torch.where(one_hot > 0, 0.0, -math.inf).to(scores.dtype)
        notes = ("Temperature 0 is greedy decoding: the most probable token is always chosen, nothing is "
                 "drawn, and top-k / top-p / min-p / typical-p play no part (generate(do_sample=False) "
                 "ignores them too).",) + notes
    else:
        tempered_probs = torch.softmax(tempered, -1)
        probs = final_probs
        logprobs = torch.log_softmax(scores, -1)
    model_logprobs = torch.log_softmax(logits, -1)
    model_probs = model_logprobs.exp()
    rank = torch.empty(vocab, dtype=torch.int64, device=device)
    rank[order] = torch.arange(1, vocab + 1, device=device)
    rows = dict(rank=rank, logits=logits, scores=scores, model_probs=model_probs, model_logprobs=model_logprobs,
                tempered_probs=tempered_probs, probs=probs, logprobs=logprobs, removed_by=removed_by)
    return Distribution(
        settings=settings,
        vocab_size=vocab,
        token_ids=order.cpu(),
        **{name: values[order].cpu() for name, values in rows.items()},
        model_entropy=float(entropy(model_probs)),
        entropy=float(entropy(probs)),
        model_effective_vocab=effective_vocabulary(model_probs),
        effective_vocab=effective_vocabulary(probs),
        n_kept=int((removed_by == NOT_REMOVED).sum()),
        notes=notes,
    )


def next_token(lm: LoadedModel, text: str, settings: SamplingSettings = SamplingSettings()) -> Distribution:
    """The distribution of the token that follows `text` (from the cached trace of the text; kept in the cache
    too, per settings)."""
    from lmviz.forward import trace as tracing

    lm.require_causal("next-token sampling")
    traced = tracing.trace(lm, text)
    return cached("next token", lm, (text, settings),
                  lambda: distribution(traced.last_logits, settings, traced.input_ids))


def next_token_sweep(lm: LoadedModel, text: str) -> Sweep:
    """The temperature sweep (`temperature_sweep`) of the model's own distribution after `text`."""
    from lmviz.forward import trace as tracing

    lm.require_causal("the temperature sweep")
    traced = tracing.trace(lm, text)
    return cached("temperature sweep", lm, (text,), lambda: temperature_sweep(traced.last_logits))


def label_tokens(lm: LoadedModel, token_ids) -> list[str]:
    """Display strings ('·' for a space) for these vocabulary ids."""
    with lm.lock:
        return [display_token(lm.tokenizer, int(token_id)) for token_id in token_ids]


# ------------------------------------------------------------------ toy mode

LECTURE_LOGITS = (1.0, -4.0, 2.0, 4.0, 3.0)  # seed 003's example vector
LECTURE_TEMPERATURES = (1.0, 0.3, 10.0)  # the rows of its table


def parse_numbers(text: str, what: str = "logits") -> list[float]:
    """'1, -4, 2, 4, 3' (commas, spaces or semicolons; brackets allowed) -> [1.0, -4.0, 2.0, 4.0, 3.0]."""
    cleaned = (text or "").strip().strip("[]()").strip()
    if not cleaned:
        raise LmvizError(f"Type the {what} as numbers separated by commas, e.g. 1, -4, 2, 4, 3.")
    values = []
    for piece in re.split(r"[,;\s]+", cleaned):
        if not piece:
            continue
        try:
            value = float(piece)
        except ValueError:
            raise LmvizError(f"'{piece}' is not a number. Type the {what} as numbers separated by commas, "
                             "e.g. 1, -4, 2, 4, 3.") from None
        if not math.isfinite(value):
            raise LmvizError(f"The {what} must be finite numbers; '{piece}' is not.")
        values.append(value)
    if not values:
        raise LmvizError(f"Type the {what} as numbers separated by commas, e.g. 1, -4, 2, 4, 3.")
    return values


@dataclass(frozen=True, eq=False)
class ToyTable:
    """Softmax with temperature, sigma_T(x)_i = exp(x_i / T) / sum_j exp(x_j / T), on a short vector.

    Computed in float64 with transformers' TemperatureLogitsWarper (T = 0:
    greedy, all mass on the largest logit). The shifted rows add the same
    constant to every logit: softmax only sees differences between logits, so
    they equal the unshifted rows.
    """

    logits: torch.Tensor  # (token,) float64, as typed
    temperatures: tuple[float, ...]  # (temp,)
    probs: torch.Tensor  # (temp, token) sigma_T(x)
    shift: float  # the constant added to every logit
    shifted_probs: torch.Tensor  # (temp, token) sigma_T(x + shift)

    @property
    def max_shift_change(self) -> float:
        """Largest |sigma_T(x + shift) - sigma_T(x)|: rounding error only (about 1e-16)."""
        return float((self.shifted_probs - self.probs).abs().max())


def toy_softmax(logits, temperatures=LECTURE_TEMPERATURES, shift: float = 0.0) -> ToyTable:
    """sigma_T of a hand-typed logit vector for each temperature (the lecture's table by default)."""
    x = check_logits(torch.as_tensor(list(logits), dtype=torch.float64), "The logits")
    shift = _number(shift, "The shift")
    if not torch.isfinite(x + shift).all():
        raise LmvizError("Logits plus the shift overflow: use a smaller shift.")
    temps = tuple(SamplingSettings(temperature=t).temperature for t in temperatures)
    if not temps:
        raise LmvizError("Give at least one temperature.")
    rows, shifted = [], []
    for t in temps:
        settings = SamplingSettings(temperature=t)
        rows.append(distribution(x, settings))
        shifted.append(distribution(x + shift, settings))

    def in_input_order(dist: Distribution) -> torch.Tensor:
        probs = torch.empty_like(dist.probs)
        probs[dist.token_ids] = dist.probs
        return probs

    return ToyTable(
        logits=x,
        temperatures=temps,
        probs=torch.stack([in_input_order(d) for d in rows]),
        shift=shift,
        shifted_probs=torch.stack([in_input_order(d) for d in shifted]),
    )


def lecture_number(value: float, digits: int = 4) -> str:
    """A probability written the way seed 003's table writes it: 0.03205 -> '.0321', 1 -> '1.0000'."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("0.") else text


def probs_in_input_order(dist: Distribution) -> torch.Tensor:
    """A full distribution's final probabilities indexed by vocabulary id (vocab,)."""
    if len(dist) != dist.vocab_size:
        raise LmvizError("This distribution was cut to its top rows; use the full one.")
    probs = torch.empty_like(dist.probs)
    probs[dist.token_ids] = dist.probs
    return probs


# --------------------------------------------------------------------- sweep


@dataclass(frozen=True, eq=False)
class Sweep:
    """How temperature alone reshapes one position's distribution (no filters, no penalty).

    Entropy grows with T from 0 (greedy: one token) towards log(vocab)
    (uniform); the top token's probability falls from 1 towards 1 / vocab.
    The ranking never changes, so the top token is the same at every T.
    """

    temperatures: torch.Tensor  # (temp,) float64, increasing
    entropy: torch.Tensor  # (temp,) nats
    top_prob: torch.Tensor  # (temp,) probability of the most probable token
    effective_vocab: torch.Tensor  # (temp,) int64, fewest tokens holding MASS
    vocab_size: int

    @property
    def max_entropy(self) -> float:
        """log(vocab): the entropy of the uniform distribution, the T -> infinity limit."""
        return math.log(self.vocab_size)


def temperatures(low: float = 0.05, high: float = 10.0, points: int = 50) -> torch.Tensor:
    """`points` log-spaced temperatures from low to high (float64)."""
    low, high = _number(low, "The lowest temperature"), _number(high, "The highest temperature")
    if not MIN_TEMPERATURE <= low < high:
        raise LmvizError(
            f"The sweep needs {MIN_TEMPERATURE:g} <= lowest < highest temperature, not {low:g} .. {high:g}."
        )
    if not 2 <= int(points) <= 1000:
        raise LmvizError("A sweep has between 2 and 1000 points.")
    return torch.logspace(math.log10(low), math.log10(high), int(points), dtype=torch.float64)


def temperature_sweep(logits: torch.Tensor, temps: torch.Tensor | None = None) -> Sweep:
    """Entropy, top probability and effective vocabulary of softmax(logits / T) for each T.

    One batched pass over the full vocabulary: (temp, vocab) in float32.
    Since dividing by T > 0 keeps the order, the logits are sorted once and
    the effective vocabulary is a cumulative sum along that one order.
    """
    logits = check_logits(logits).float()
    temps = temperatures() if temps is None else torch.as_tensor(temps, dtype=torch.float64)
    if temps.ndim != 1 or temps.numel() == 0 or not bool((temps >= MIN_TEMPERATURE).all()):
        raise LmvizError(f"Sweep temperatures must be at least {MIN_TEMPERATURE:g}.")
    ordered = torch.sort(logits, descending=True).values  # (vocab,)
    with torch.inference_mode():
        # z = (logit - top logit) / T <= 0, so exp(z) cannot overflow and the top token's term is exp(0) = 1.
        z = (ordered - ordered[0]).unsqueeze(0) / temps.float().unsqueeze(1)  # (temp, vocab)
        e = torch.exp(z)  # (temp, vocab), unnormalized probabilities
        total = e.sum(-1)  # (temp,) the softmax denominator
        # H = -sum p log p with p = e / total, log p = z - log total:  H = log total - sum(e z) / total
        ent = total.log() - torch.linalg.vecdot(e, z) / total
        top = 1.0 / total  # p of the top token = exp(0) / total
        cumulative = e.cumsum(-1)  # (temp, vocab), nondecreasing along each row
        # fewest tokens holding MASS: the first index whose cumulative sum reaches MASS x total, plus one
        effective = torch.searchsorted(cumulative, (MASS * total).unsqueeze(1)).squeeze(1) + 1
        effective = effective.clamp(max=logits.numel())
    return Sweep(temperatures=temps, entropy=ent.double(), top_prob=top.double(),
                 effective_vocab=effective.long(), vocab_size=logits.numel())


# -------------------------------------------------------- step-by-step generation


@dataclass(frozen=True, eq=False)
class Step:
    """One generated token and the distribution it was chosen from."""

    index: int  # 0 = the first generated token
    token_id: int
    text: str  # the exact piece of text
    token: str  # the piece made visible ('·' for a space)
    prob: float  # its probability in the final distribution (1.0 when greedy)
    model_prob: float  # its probability under the model alone (T = 1, no filter)
    rank: int  # 1 = it was the most probable token
    distribution: Distribution  # top rows of that step's distribution, the chosen token included


@dataclass(frozen=True, eq=False)
class Generation:
    """A prompt continued one token at a time, each step's distribution kept.

    Greedy settings (T = 0) take the argmax; otherwise each token is drawn
    as generate() draws it after torch.manual_seed(seed) (see `Sampler`). The
    same seed and settings give the same tokens, here and in generate().
    """

    model_name: str
    prompt: str
    prompt_ids: tuple[int, ...]  # (pos,)
    settings: SamplingSettings
    seed: int | None  # None when greedy
    steps: tuple[Step, ...]
    completion: str  # the generated tokens decoded together
    finished: bool  # an end-of-sequence token was generated

    @property
    def token_ids(self) -> list[int]:
        """Generated ids only."""
        return [step.token_id for step in self.steps]

    @property
    def text(self) -> str:
        return self.prompt + self.completion


class Sampler:
    """The chooser (`lmviz.forward.decoding.Chooser`) for sampling settings: generate()'s processors, then its pick.

    Each step's `Distribution` is computed on the logits' device, where
    generate() computes it. T = 0 takes its top token (the argmax after the
    repetition penalty); otherwise one torch.multinomial draw from its
    probabilities, with a private torch.Generator on that device seeded with
    `seed`. torch.manual_seed(seed) seeds every device's default generator
    the same way, so the draws equal generate()'s on the CPU and on a GPU.
    `last` keeps the latest step's distribution: its top `keep` rows and the
    chosen token's.
    """

    def __init__(self, settings: SamplingSettings, seed: int | None, keep: int = 0):
        self.settings = settings
        self.seed = seed  # None only when greedy
        self.keep = keep
        self.rng: torch.Generator | None = None  # made at the first draw, on the logits' device
        self.last: Distribution | None = None

    def __call__(self, logits: torch.Tensor, ids: torch.Tensor) -> int:
        dist = distribution(logits, self.settings, ids)
        if self.settings.greedy:
            token = dist.top_id
        else:
            if self.rng is None:
                self.rng = torch.Generator(device=logits.device).manual_seed(self.seed)
            # generate(): probs = softmax(processed scores), (1, vocab); torch.multinomial(probs, num_samples=1)
            probs = probs_in_input_order(dist).to(logits.device).unsqueeze(0)
            token = int(torch.multinomial(probs, num_samples=1, generator=self.rng)[0, 0])
        self.last = dist.top(self.keep, include=(token,))
        return token


class _Run:
    """A generation in progress, so it can go on: its decoding loop (with the KV cache) and its sampler."""

    def __init__(self, lm: LoadedModel, prompt_ids: list[int], settings: SamplingSettings, seed: int | None,
                 keep: int):
        self.lock = threading.Lock()
        self.sampler = Sampler(settings, seed, keep)
        self.tokens = decoding.Decoding(lm.model, prompt_ids, self.sampler)
        self.steps: list[Step] = []


def generate(
    lm: LoadedModel,
    text: str,
    settings: SamplingSettings = SamplingSettings(temperature=0.0),
    steps: int = 20,
    seed: int | None = 0,
    keep: int = 20,
) -> Generation:
    """Continue `text` for up to `steps` tokens (fewer if an end-of-sequence token comes first).

    Runs are remembered: asking again for more steps of the same (model,
    text, settings, seed) continues the earlier run from where it stopped
    instead of starting over, and gives the same tokens as a fresh run.
    Each step keeps the top `keep` rows of its distribution (and the chosen token).
    """
    from lmviz.forward import trace as tracing

    lm.require_causal("generating text")
    steps = int(_number(steps, "The number of steps"))
    if not 1 <= steps <= MAX_STEPS:
        raise LmvizError(f"Generate between 1 and {MAX_STEPS} tokens at a time, not {steps}.")
    seed = None if settings.greedy else decoding.check_seed(seed)
    prompt_ids = tracing.encode(lm, text)
    limit = tracing.max_tokens(lm)
    if len(prompt_ids) + steps > limit:
        raise LmvizError(f"The prompt is {len(prompt_ids)} tokens and {lm.name} takes at most {limit} here: "
                         f"generate at most {max(0, limit - len(prompt_ids))} tokens, or shorten the text.")
    settings, notes = settings.for_vocabulary(lm.vocab_size)
    # a run holds its KV cache (~46 KB per token on SmolLM2) and grows: measured again after each call
    key = ("generation", *lm.cache_key, tuple(prompt_ids), settings, seed, int(keep))
    run = CACHE.get(key, lambda: _Run(lm, prompt_ids, settings, seed, int(keep)))
    with run.lock:
        for token in itertools.islice(run.tokens, max(0, steps - len(run.steps))):
            run.steps.append(_step(lm, len(run.steps), token, run.sampler.last))
        chosen = tuple(run.steps[:steps])
    CACHE.remeasure(key)
    with lm.lock:
        completion = lm.tokenizer.decode([s.token_id for s in chosen], clean_up_tokenization_spaces=False)
    return Generation(
        model_name=lm.name, prompt=text, prompt_ids=tuple(prompt_ids), settings=settings, seed=seed,
        steps=chosen, completion=completion, finished=run.tokens.ended and len(chosen) == len(run.steps),
    )


def _step(lm: LoadedModel, index: int, token: decoding.Token, dist: Distribution) -> Step:
    """A generated token with (the top rows of) the distribution it was chosen from."""
    with lm.lock:
        piece = token_text(lm.tokenizer, token.id)
        shown = display_token(lm.tokenizer, token.id)
    row = dist.row_of(token.id)
    return Step(
        index=index, token_id=token.id, text=piece, token=shown,
        prob=float(dist.probs[row]), model_prob=float(dist.model_probs[row]), rank=int(dist.rank[row]),
        distribution=dist,
    )
