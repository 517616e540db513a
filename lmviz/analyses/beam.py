"""Beam search that keeps the whole tree: expand, evaluate, prune (seed 003).

`generate(num_beams=...)` returns only the winners; the hypotheses it pruned on
the way are gone. `beam_search(lm, text, ...)` runs its own step loop over the
KV cache and records every candidate it considered, so a page can replay the
search step by step. Its finished hypotheses, their order and their scores are
those of

    model.generate(input_ids, num_beams=K, num_return_sequences=K, do_sample=False,
                   max_new_tokens=M, length_penalty=LP, early_stopping=ES,
                   output_scores=True, return_dict_in_generate=True).sequences_scores

because the loop mirrors transformers' vectorized `_beam_search` (5.x) rule by
rule, with the same float32 tensor operations:

1. Start. The prompt is copied into K rows; beam 0 starts at score 0, the
   other K-1 at -1e9, so the first step expands the prompt only once.
2. Expand and evaluate. One forward pass over the K running beams (the new
   token only; the keys and values of everything before come from the cache)
   gives log_softmax(logits) for every beam; adding each beam's running score
   gives the cumulative log-probability of all K x vocab continuations.
3. Candidates. The best 2K of them (K x (1 + number of EOS ids), at least 2K)
   are ranked. Taking 2K rather than K guarantees K that did not just end:
   each beam contributes at most one candidate per EOS id.
4. Prune. The K best candidates that did not just end (EOS, or the length
   limit reached) become the running beams of the next step; the rest are
   pruned.
5. Finish. A candidate that just ended may join the finished list only if it
   ranks among the first K of the 2K candidates. Its score is its cumulative
   log-probability divided by length ** length_penalty, where length counts the
   generated tokens including the EOS (the prompt does not count). The finished
   list keeps the K best scores seen so far; a better newcomer pushes the
   worst one out. At the last step (max_new_tokens reached) every one of the
   first K candidates ends, so the list always holds K hypotheses at the end.
   Nothing may join once the search decided it cannot improve (rule 6), or,
   with early_stopping=True, once the list is full.
6. Stop. After each step the search asks whether the best running beam could
   still beat the worst finished hypothesis; this needs all K slots filled.
   Its best possible score is its cumulative log-probability divided by
   length ** length_penalty, with length = the tokens generated so far, except
   with early_stopping="never" and length_penalty > 0, where it is the longest
   allowed length (max_new_tokens): a positive penalty rewards length, so only
   that bound is safe. early_stopping=True stops as soon as K hypotheses are
   finished; False and "never" stop when no improvement seems possible; all
   stop at max_new_tokens. (With early_stopping=False the bound is a heuristic
   and may stop too soon; "never" with length_penalty=0 is textbook beam search.)

The default length_penalty=1.0 is not neutral: dividing a negative sum of
log-probabilities by its length favours longer hypotheses. 0 is neutral; a
negative value favours shorter ones.

Scores are the model's own log-probabilities. Settings from the model's
generation config that would change them inside generate() (a repetition
penalty, n-gram blocking, a minimum length, …) are not applied here; the tree
lists them in `ignored_settings`.

The search runs on the model's device, as generate() does, and steps
through `lmviz.forward.decoding.Decoder`. `greedy(...)` and `sample(...)` give the
greedy and a seeded sampled continuation of the same prompt through the one
decoding loop (`lmviz.forward.decoding.Decoding`), with their total
log-probabilities, equal to generate(do_sample=False) and to
generate(do_sample=True, top_k=0) after torch.manual_seed(seed).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import torch

from lmviz.forward import decoding
from lmviz.forward.cache import cached
from lmviz.errors import LmvizError
from lmviz.model.models import LoadedModel
from lmviz.analyses.sampling import Sampler, SamplingSettings
from lmviz.tokens import token_text
from lmviz.forward.trace import encode, max_tokens

MAX_BEAMS = 16  # the tree stops being readable long before this; it also bounds the work per step
MAX_NEW_TOKENS = 128  # longest continuation searched
MAX_PROMPT_TOKENS = 1024  # longest prompt: K beams each read it (1,000 tokens: ~12 s for the page's three runs on a CPU)
MAX_ALTERNATIVES = 10  # most pruned children recorded per beam and step
EARLY_STOPPING = (False, True, "never")

KEPT, PRUNED, FINISHED = "kept", "pruned", "finished"
NEG = -1.0e9  # transformers' stand-in for "impossible": big enough, yet finite in float32


@dataclass(frozen=True)
class BeamNode:
    """One hypothesis in the tree: the prompt (id 0) or the prompt plus `step` generated tokens.

    A node at step s was a candidate at step s: its parent's hypothesis plus `token_id`.
    """

    id: int
    parent: int | None  # None for the root (the prompt)
    step: int  # tokens generated so far, this one included (0 for the root)
    token_id: int | None  # None for the root
    token: str  # the exact text piece (the prompt text for the root)
    logprob: float  # log P(token | parent hypothesis); 0 for the root
    cumulative: float  # sum of log-probabilities of the generated tokens, as beam search ranks them
    score: float  # cumulative / step ** length_penalty: the score had it ended here
    status: str  # "kept" (continued as a beam), "pruned", or "finished" (joined the finished list)
    rank: int | None  # place among the step's 2K ranked candidates (0 = best); None if shown only as an alternative
    reason: str  # why it got its status, in words
    final_rank: int | None = None  # place among the returned hypotheses (0 = the winner), if it is one

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)


@dataclass(frozen=True)
class Hypothesis:
    """A finished hypothesis as generate() returns it."""

    node_id: int  # its last node in the tree
    token_ids: tuple[int, ...]  # (new_tokens,) generated ids, the EOS included when it ended with one
    tokens: tuple[str, ...]  # (new_tokens,) exact text pieces
    text: str  # the generated ids decoded
    logprob: float  # sum of the log-probabilities of the generated tokens
    length: int  # len(token_ids): the length the penalty divides by
    score: float  # logprob / length ** length_penalty, generate()'s sequences_scores
    ended: str  # "eos" or "max_new_tokens"


@dataclass(frozen=True)
class BeamTree:
    """Everything one beam search did. nodes[i].id == i; nodes[0] is the prompt."""

    model_name: str
    prompt: str
    prompt_ids: tuple[int, ...]  # (prompt_len,)
    num_beams: int
    max_new_tokens: int
    length_penalty: float
    early_stopping: bool | str
    eos_token_ids: tuple[int, ...]  # from the model's generation config, as generate() uses them
    candidates_per_step: int  # 2K (K x (1 + EOS ids) with several EOS ids)
    nodes: tuple[BeamNode, ...]  # (node,)
    final: tuple[Hypothesis, ...]  # (num_beams,) best first, as generate() orders them
    steps: int  # forward passes run: max_new_tokens unless the search stopped early
    stop_reason: str
    ignored_settings: tuple[str, ...] = ()  # generation-config settings generate() would apply and this does not

    def children(self, node_id: int) -> list[BeamNode]:
        """The recorded children of a node, best log-probability first."""
        return sorted((n for n in self.nodes if n.parent == node_id), key=lambda n: -n.logprob)

    def path(self, node_id: int) -> list[int]:
        """Node ids from the root down to `node_id`."""
        ids = []
        current: int | None = node_id
        while current is not None:
            ids.append(current)
            current = self.nodes[current].parent
        return ids[::-1]

    def winning_path(self) -> list[int]:
        """Root to the best finished hypothesis."""
        return self.path(self.final[0].node_id)

    def to_dict(self) -> dict:
        """Plain JSON-ready data: settings, `final` (best first) and every node."""
        return {
            "model": self.model_name,
            "prompt": self.prompt,
            "prompt_ids": list(self.prompt_ids),
            "num_beams": self.num_beams,
            "max_new_tokens": self.max_new_tokens,
            "length_penalty": self.length_penalty,
            "early_stopping": self.early_stopping,
            "eos_token_ids": list(self.eos_token_ids),
            "candidates_per_step": self.candidates_per_step,
            "steps": self.steps,
            "stop_reason": self.stop_reason,
            "ignored_settings": list(self.ignored_settings),
            "final": [dict(asdict(h), token_ids=list(h.token_ids), tokens=list(h.tokens)) for h in self.final],
            "nodes": [asdict(n) for n in self.nodes],
        }


@dataclass(frozen=True)
class Continuation:
    """One continuation of the prompt by a simple decoding rule, for comparison with beam search."""

    method: str  # "greedy" or "sample"
    seed: int | None  # the sampling seed
    token_ids: tuple[int, ...]  # (new_tokens,) the EOS included when it ended with one
    tokens: tuple[str, ...]  # (new_tokens,) exact text pieces
    text: str
    logprobs: tuple[float, ...]  # (new_tokens,) log P(token | everything before) under the model
    ended: str  # "eos" or "max_new_tokens"

    @property
    def logprob(self) -> float:
        """Total log-probability: the sum over the generated tokens."""
        return float(sum(self.logprobs))

    def score(self, length_penalty: float) -> float:
        """The score beam search would give it: logprob / length ** length_penalty."""
        return self.logprob / (len(self.token_ids) ** length_penalty)


# ------------------------------------------------------------------ input checks


def parse_early_stopping(value) -> bool | str:
    """True / False / "never" from a bool or a string such as "true", "False", "never"."""
    if value is True or value is False or value == "never":
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    if text == "never":
        return "never"
    raise LmvizError(f"early_stopping must be true, false or never, not {value!r}.")


# generation-config settings that change the scores inside generate(): (name, neutral value)
_SCORE_SETTINGS = (
    ("repetition_penalty", 1.0), ("no_repeat_ngram_size", 0), ("min_length", 0), ("min_new_tokens", None),
    ("bad_words_ids", None), ("suppress_tokens", None), ("begin_suppress_tokens", None),
    ("forced_bos_token_id", None), ("forced_eos_token_id", None), ("sequence_bias", None),
    ("exponential_decay_length_penalty", None), ("renormalize_logits", False), ("remove_invalid_values", False),
)


def ignored_settings_names(lm: LoadedModel) -> tuple[str, ...]:
    """Names of the settings in the model's generation config that generate() would apply and lmviz does not."""
    config = getattr(lm.model, "generation_config", None)
    return tuple(name for name, neutral in _SCORE_SETTINGS
                 if getattr(config, name, neutral) not in (neutral, None)
                 and not (name == "renormalize_logits" and not getattr(config, name)))


def ignored_settings(lm: LoadedModel) -> tuple[str, ...]:
    """Those settings with their values, e.g. ("forced_eos_token_id=2",): shown on the page."""
    config = getattr(lm.model, "generation_config", None)
    return tuple(f"{name}={getattr(config, name)}" for name in ignored_settings_names(lm))


def _prompt_ids(lm: LoadedModel, text: str, max_new_tokens: int) -> list[int]:
    lm.require_causal("beam search")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise LmvizError(f"New tokens must be a whole number of at least 1, not {max_new_tokens!r}.")
    if max_new_tokens > MAX_NEW_TOKENS:
        raise LmvizError(f"At most {MAX_NEW_TOKENS} new tokens here (asked for {max_new_tokens}).")
    ids = encode(lm, text)
    if len(ids) > MAX_PROMPT_TOKENS:
        raise LmvizError(f"The prompt is {len(ids)} tokens long; beam search here takes at most {MAX_PROMPT_TOKENS} "
                         "(every beam reads the whole prompt, and a search of 5,000 tokens takes minutes). Shorten it.")
    limit = max_tokens(lm)
    if len(ids) + max_new_tokens > limit:
        room = limit - len(ids)
        raise LmvizError(
            f"The prompt is {len(ids)} tokens and {lm.name} takes {limit} here, so "
            + (f"at most {room} new tokens fit; ask for fewer." if room >= 1 else "no new token fits; shorten it.")
        )
    return ids


def check_beams(lm: LoadedModel, num_beams) -> int:
    """num_beams as an int between 1 and the cap, or a clear LmvizError."""
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise LmvizError(f"The number of beams must be a whole number of at least 1, not {num_beams!r}.")
    if num_beams > MAX_BEAMS:
        raise LmvizError(f"At most {MAX_BEAMS} beams here (asked for {num_beams}); the tree would be unreadable.")
    keep = max(2, 1 + len(decoding.eos_ids(lm.model))) * num_beams
    if keep > lm.vocab_size:
        raise LmvizError(f"{num_beams} beams need {keep} candidates per step, more than the {lm.vocab_size} tokens.")
    return num_beams


# ------------------------------------------------------------------ beam search


def beam_search(
    lm: LoadedModel,
    text: str,
    num_beams: int = 3,
    max_new_tokens: int = 6,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    alternatives: int = 3,
) -> BeamTree:
    """Beam search over `text` that records its tree (cached). See the module docstring for the rules.

    alternatives: besides the 2K ranked candidates, each beam's `alternatives`
    most likely next tokens are recorded too, so the tree can show what every
    beam turned down.
    """
    num_beams = check_beams(lm, num_beams)
    early_stopping = parse_early_stopping(early_stopping)
    try:
        length_penalty = float(length_penalty)
    except (TypeError, ValueError):
        raise LmvizError(f"The length penalty must be a number, not {length_penalty!r}.") from None
    if not math.isfinite(length_penalty) or abs(length_penalty) > 100:
        raise LmvizError("The length penalty must be a finite number between -100 and 100.")
    if isinstance(alternatives, bool) or not isinstance(alternatives, int) or not 0 <= alternatives <= MAX_ALTERNATIVES:
        raise LmvizError(f"Alternatives per beam must be a whole number from 0 to {MAX_ALTERNATIVES}.")
    prompt_ids = _prompt_ids(lm, text, max_new_tokens)
    key = (text, decoding.eos_ids(lm.model), num_beams, max_new_tokens, length_penalty, early_stopping, alternatives)
    # no model lock: forward passes run concurrently, and tokenizing elsewhere never waits for a search
    return cached("beam", lm, key, lambda: _search(
        lm, text, prompt_ids, num_beams, max_new_tokens, length_penalty, early_stopping, alternatives,
    ))


@torch.inference_mode()
def _search(lm, text, prompt_ids, num_beams, max_new_tokens, length_penalty, early_stopping, alternatives) -> BeamTree:
    piece, decode = _tokenizer_calls(lm)
    K, M, LP, ES = num_beams, max_new_tokens, length_penalty, early_stopping
    eos = decoding.eos_ids(lm.model)
    decoder = decoding.Decoder(lm.model, torch.tensor([prompt_ids], dtype=torch.long).repeat_interleave(K, dim=0))
    device = decoder.device  # the search's tensors live where the logits are, as in generate()
    eos_tensor = torch.tensor(eos, dtype=torch.long, device=device)
    keep = max(2, 1 + len(eos)) * K  # candidates ranked per step (rule 3)
    top_k_mask = torch.arange(keep, device=device) < K  # (keep,) only the first K candidates may finish (rule 5)

    # Tree under construction: parallel lists, frozen into BeamNodes at the end.
    rows: list[dict] = [dict(
        id=0, parent=None, step=0, token_id=None, token=text, logprob=0.0, cumulative=0.0, score=0.0,
        status=KEPT, rank=None, reason="the prompt",
    )]

    # Running beams (rule 1): (1, K) scores, the node each beam slot stands for.
    running_scores = torch.zeros((1, K), dtype=torch.float, device=device)
    running_scores[:, 1:] = NEG
    running_nodes = [0] * K
    # Finished list: (1, K) scores (-1e9 = empty slot), flags, node ids.
    finished_scores = torch.full((1, K), NEG, dtype=torch.float, device=device)
    is_finished = torch.zeros((1, K), dtype=torch.bool, device=device)
    finished_nodes: list[int | None] = [None] * K
    can_improve = torch.ones((1, 1), dtype=torch.bool, device=device)

    steps, stop_reason = 0, f"reached max_new_tokens={M}"
    for step in range(1, M + 1):
        # rule 2: expand and evaluate
        _, log_probs = decoder.step()  # (K, vocab)
        vocab = log_probs.shape[-1]
        accumulated = (log_probs[None] + running_scores[:, :, None]).reshape(1, -1)  # (1, K * vocab)

        # rule 3: the best `keep` candidates over all beams
        top_scores, top_index = torch.topk(accumulated, k=keep)  # (1, keep)
        top_beam, top_token = top_index // vocab, top_index % vocab  # (1, keep)
        ends = torch.isin(top_token, eos_tensor) if len(eos) else torch.zeros_like(top_token, dtype=torch.bool)
        ends = ends | (step >= M)  # EOS, or the length limit (generate's MaxLengthCriteria)

        # rule 4: the K best candidates that did not end continue
        running_candidates = top_scores + ends.to(torch.float32) * NEG
        next_positions = torch.topk(running_candidates, k=K)[1]  # (1, K) positions among the candidates
        next_scores = torch.gather(running_candidates, 1, next_positions)  # (1, K)

        # rule 5: candidates that ended join the finished list if they are good enough
        just_finished = ends & top_k_mask[None, :]  # (1, keep)
        penalised = top_scores / (step**LP)  # (1, keep)
        list_full = bool(torch.all(is_finished)) and ES is True
        entering = penalised + float(list_full) * NEG
        entering = entering + (~can_improve).to(torch.float32) * NEG
        entering = entering + (~just_finished) * NEG
        merged_scores = torch.cat((finished_scores, entering), dim=1)  # (1, K + keep)
        merged_flags = torch.cat((is_finished, just_finished), dim=1)
        picked = torch.topk(merged_scores, k=K)[1]  # (1, K)
        finished_scores = torch.gather(merged_scores, 1, picked)
        is_finished = torch.gather(merged_flags, 1, picked)

        # record the candidates as tree nodes (read back from the device once per step)
        parents = list(running_nodes)
        real_beams = [b for b, score in enumerate(running_scores[0].tolist()) if score > NEG / 2]  # step 1: beam 0
        candidate_node: dict[tuple[int, int], int] = {}
        positions_kept = {p: slot for slot, p in enumerate(next_positions[0].tolist())}
        picked_list = picked[0].tolist()
        joined = {p - K for p, flag in zip(picked_list, is_finished[0].tolist()) if p >= K and flag}
        candidates = zip(top_beam[0].tolist(), top_token[0].tolist(), ends[0].tolist(),
                         log_probs[top_beam[0], top_token[0]].tolist(), top_scores[0].tolist(), penalised[0].tolist())
        for position, (beam, token, ended, logprob, cumulative, score) in enumerate(candidates):
            node_id = len(rows)
            candidate_node[(beam, token)] = node_id
            if ended:
                how = "ended with EOS" if token in eos else f"reached max_new_tokens={M}"
                if position in joined:
                    status, reason = FINISHED, f"{how}; joined the finished list"
                elif position >= K:
                    status = PRUNED
                    reason = f"{how}, but ranked {position + 1} of {keep}: only the first {K} may finish"
                elif list_full:
                    status, reason = PRUNED, f"{how}, but early_stopping=True and {K} hypotheses had finished"
                elif not bool(can_improve):
                    status, reason = PRUNED, f"{how}, after the search judged it could no longer improve"
                else:
                    status, reason = PRUNED, f"{how}, but scored below the {K} best finished hypotheses"
            elif position in positions_kept:
                status = KEPT
                reason = f"ranked {position + 1} of {keep}; continues as beam {positions_kept[position] + 1}"
            else:
                status, reason = PRUNED, f"ranked {position + 1} of {keep}; {K} better candidates continue"
            rows.append(dict(
                id=node_id, parent=parents[beam], step=step, token_id=token, token=piece(token),
                logprob=logprob, cumulative=cumulative, score=score, status=status, rank=position, reason=reason,
            ))
        if alternatives:
            best_logprobs, best_tokens = torch.topk(log_probs[real_beams], k=min(alternatives, vocab))  # (beam, alt)
            best_cumulative = accumulated.reshape(K, vocab)[real_beams].gather(1, best_tokens)  # (beam, alt)
            best_penalised = best_cumulative / (step**LP)
            best = zip(best_tokens.tolist(), best_logprobs.tolist(), best_cumulative.tolist(), best_penalised.tolist())
            for beam, (tokens, logprobs, cumulatives, scores) in zip(real_beams, best):
                for token, logprob, cumulative, score in zip(tokens, logprobs, cumulatives, scores):
                    if (beam, token) in candidate_node:
                        continue
                    node_id = len(rows)
                    candidate_node[(beam, token)] = node_id
                    rows.append(dict(
                        id=node_id, parent=parents[beam], step=step, token_id=token, token=piece(token),
                        logprob=logprob, cumulative=cumulative, score=score,
                        status=PRUNED, rank=None, reason=f"not among the {keep} best candidates of this step",
                    ))

        # finished list bookkeeping by node id (merged = old slots, then this step's candidates)
        merged_nodes = finished_nodes + [
            candidate_node[(beam, token)] for beam, token in zip(top_beam[0].tolist(), top_token[0].tolist())
        ]
        finished_nodes = [merged_nodes[p] for p in picked_list]

        # the next step's beams; their keys and values move with them in the cache
        beam_index = torch.gather(top_beam, 1, next_positions)[0]  # (K,)
        decoder.reorder(beam_index)
        running_scores = next_scores
        running_nodes = [merged_nodes[K + p] for p in next_positions[0].tolist()]
        decoder.append(torch.gather(top_token, 1, next_positions).reshape(K))
        steps = step

        # rule 6: stop?
        if ES == "never" and LP > 0.0:
            best_length = M
        else:
            best_length = step
        best_possible = running_scores[:, :1] / (best_length**LP)
        worst_finished = torch.where(is_finished, torch.min(finished_scores, dim=1, keepdim=True)[0], NEG)
        can_improve = can_improve & torch.any(best_possible > worst_finished, dim=-1, keepdim=True)
        if bool(torch.all(ends)):
            break
        if bool(torch.all(is_finished)) and ES is True:
            stop_reason = f"early_stopping=True: {K} hypotheses had finished after step {step}"
            break
        if not bool(torch.any(can_improve)):
            stop_reason = f"after step {step} no running beam could beat the worst of the {K} finished hypotheses"
            break

    # running beams that were never expanded because the search stopped
    if steps < M:
        for node_id in set(running_nodes):
            rows[node_id]["reason"] += "; still running when the search stopped"

    final = []
    slots = zip(finished_nodes, is_finished[0].tolist(), finished_scores[0].tolist())
    for rank, (node_id, flag, score) in enumerate(slots):
        if node_id is None or not flag:  # cannot happen: the last step always fills the list
            raise RuntimeError("beam search ended with an empty finished slot")
        rows[node_id]["final_rank"] = rank
        ids = [rows[i]["token_id"] for i in _path(rows, node_id)[1:]]
        final.append(Hypothesis(
            node_id=node_id,
            token_ids=tuple(ids),
            tokens=tuple(piece(i) for i in ids),
            text=decode(ids),
            logprob=rows[node_id]["cumulative"],
            length=len(ids),
            score=score,
            ended="eos" if ids[-1] in eos else "max_new_tokens",
        ))
    for row in rows:
        if row["status"] == FINISHED and row.get("final_rank") is None:
            row["reason"] += f", later pushed out by {K} better ones"
    return BeamTree(
        model_name=lm.name, prompt=text, prompt_ids=tuple(prompt_ids), num_beams=K, max_new_tokens=M,
        length_penalty=LP, early_stopping=ES, eos_token_ids=eos, candidates_per_step=keep,
        nodes=tuple(BeamNode(**row) for row in rows), final=tuple(final), steps=steps, stop_reason=stop_reason,
        ignored_settings=ignored_settings(lm),
    )


def _tokenizer_calls(lm: LoadedModel):
    """Token text and decoding, each holding the tokenizer's lock only for its own call."""
    def piece(token_id: int) -> str:
        with lm.lock:
            return token_text(lm.tokenizer, token_id)

    def decode(ids: list[int]) -> str:
        with lm.lock:
            return lm.tokenizer.decode(ids, skip_special_tokens=False)

    return piece, decode


def _path(rows: list[dict], node_id: int) -> list[int]:
    ids = []
    current = node_id
    while current is not None:
        ids.append(current)
        current = rows[current]["parent"]
    return ids[::-1]


# ------------------------------------------------------------------ greedy and sampling


def greedy(lm: LoadedModel, text: str, max_new_tokens: int = 6) -> Continuation:
    """The most likely token at every step, until EOS or max_new_tokens (cached)."""
    prompt_ids = _prompt_ids(lm, text, max_new_tokens)
    key = (text, decoding.eos_ids(lm.model), max_new_tokens)
    return cached("greedy", lm, key, lambda: _continue(lm, prompt_ids, max_new_tokens, decoding.greedy, None))


def sample(lm: LoadedModel, text: str, max_new_tokens: int = 6, seed: int = 0) -> Continuation:
    """Draw every token from the model's full distribution (temperature 1, no top-k/top-p), seeded (cached)."""
    seed = decoding.check_seed(seed)
    prompt_ids = _prompt_ids(lm, text, max_new_tokens)
    key = (text, decoding.eos_ids(lm.model), max_new_tokens, seed)
    return cached("sample", lm, key, lambda: _continue(
        lm, prompt_ids, max_new_tokens, Sampler(SamplingSettings(), seed), seed))


def _continue(lm: LoadedModel, prompt_ids: list[int], max_new_tokens: int, choose: decoding.Chooser,
              seed: int | None) -> Continuation:
    tokens = list(itertools.islice(decoding.Decoding(lm.model, prompt_ids, choose), max_new_tokens))
    ids = [t.id for t in tokens]
    piece, decode = _tokenizer_calls(lm)
    return Continuation(
        method="greedy" if seed is None else "sample",
        seed=seed,
        token_ids=tuple(ids),
        tokens=tuple(piece(i) for i in ids),
        text=decode(ids),
        logprobs=tuple(t.logprob for t in tokens),
        ended="eos" if tokens[-1].eos else "max_new_tokens",
    )


# ------------------------------------------------------------------ tables


