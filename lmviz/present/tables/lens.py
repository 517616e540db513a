"""The logit lens's tables: seed 004's top-k table, every (layer, position) in long form, watched tokens."""

from __future__ import annotations

import pandas as pd
import torch

from lmviz.analyses import lens
from lmviz.errors import LmvizError
from lmviz.tokens import visible


def lens_table(result: lens.LensResult, layer: int | None = None, position: int | None = None,
               values: str = "token", show_whitespace: bool = True):
    """The seed-style top-k table as a pandas DataFrame.

    layer=i (default: the last layer): rows = rank 0..k-1, columns = positions,
    like seed 004's `pd.DataFrame([[decode(x) for x in y] for y in topk]).T`.
    position=p: rows = layers 0..L, columns = rank, what one position looks like
    as it goes up the model. values: "token" (the text), "prob", "id", or
    "token+prob" ("·visit 0.231").
    """
    if values not in ("token", "prob", "id", "token+prob"):
        raise LmvizError("values must be one of: token, prob, id, token+prob.")
    if layer is not None and position is not None:
        raise LmvizError("Give a layer or a position, not both.")
    if position is not None:
        column = result.column(position)
        ids, probs = result.top_ids[:, column], result.top_probs[:, column]  # (layer+1, k)
        cells = _cells(result, ids, probs, values, show_whitespace)
        frame = pd.DataFrame(cells, index=pd.Index(range(result.n_layers + 1), name="layer"))
        frame.columns.name = "rank"
        return frame
    layer = result.check_layer(-1 if layer is None else layer)
    ids, probs = result.top_ids[layer], result.top_probs[layer]  # (pos, k)
    cells = _cells(result, ids, probs, values, show_whitespace)
    frame = pd.DataFrame(cells).T  # (k, pos): rows = rank, columns = position
    frame.columns = result.positions
    frame.index.name, frame.columns.name = "rank", "position"
    return frame


def lens_long_table(result: lens.LensResult):
    """Every (layer, position, rank) as one row, with that cell's statistics: for CSV export."""
    n_layers, n_pos, k = result.top_ids.shape
    layer = torch.arange(n_layers).view(-1, 1, 1).expand(n_layers, n_pos, k).reshape(-1)
    pos = torch.arange(n_pos).view(1, -1, 1).expand(n_layers, n_pos, k).reshape(-1)
    cell = lambda t: t.unsqueeze(-1).expand(n_layers, n_pos, k).reshape(-1).numpy()  # noqa: E731
    ids = result.top_ids.reshape(-1).tolist()
    next_tokens = [result.next_token(p) for p in result.positions]
    frame = pd.DataFrame({
        "layer": layer.numpy(),
        "position": pos.numpy() + result.first_position,
        "input_token": [result.tokens[p] for p in pos.tolist()],
        "next_token": [next_tokens[p] for p in pos.tolist()],
        "rank": torch.arange(k).repeat(n_layers * n_pos).numpy(),
        "token_id": ids,
        "token": [visible(result.pieces[i]) for i in ids],
        "prob": result.top_probs.reshape(-1).numpy(),
        "entropy": cell(result.entropy),
        "kl_to_final": cell(result.kl_to_final),
        "next_token_nll": cell(result.next_token_nll),
        "next_token_rank": cell(result.next_token_rank),
    })
    frame["normalized"] = result.normalized
    return frame


def watched_table(result: lens.LensResult, position: int):
    """(layer+1) rows: probability and rank of each watched token at one (text) position."""
    column = result.column(position)
    rows = []
    for j, token_id in enumerate(result.watched_ids):
        for layer in range(result.n_layers + 1):
            rows.append({
                "layer": layer,
                "token": visible(result.pieces[token_id]),
                "token_id": token_id,
                "prob": float(result.watched_probs[layer, column, j]),
                "rank": int(result.watched_ranks[layer, column, j]),
            })
    return pd.DataFrame(rows, columns=["layer", "token", "token_id", "prob", "rank"])


def _cells(result: lens.LensResult, ids: torch.Tensor, probs: torch.Tensor, values: str,
           show_whitespace: bool) -> list[list]:
    if values == "id":
        return ids.tolist()
    if values == "prob":
        return probs.tolist()
    names = [[result.token(i, show_whitespace) for i in row] for row in ids.tolist()]
    if values == "token":
        return names
    return [[f"{name} {p:.3f}" for name, p in zip(row, prow)] for row, prow in zip(names, probs.tolist())]
