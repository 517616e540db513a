"""The next-token distribution and the lecture's toy table."""

from __future__ import annotations

import pandas as pd

from lmviz.analyses import sampling


def distribution_table(dist: sampling.Distribution, labels: list[str] | None = None):
    """The rows of a distribution as a pandas DataFrame (labels: display strings, one per row)."""
    frame = pd.DataFrame({
        "rank": dist.rank.tolist(),
        "id": dist.token_ids.tolist(),
        "logit": dist.logits.tolist(),
        "p (model, T=1)": dist.model_probs.tolist(),
        "log p (model)": dist.model_logprobs.tolist(),
        "p after T": dist.tempered_probs.tolist(),
        "p final": dist.probs.tolist(),
        "log p final": dist.logprobs.tolist(),
        "status": dist.status(),
    })
    if labels is not None:
        frame.insert(1, "token", labels)
    return frame


def toy_table(toy: sampling.ToyTable, shifted: bool = False):
    """The lecture's table as a DataFrame of strings: a row x (or x + shift), then one row per
    temperature, σ_T(x) written like the slides (.0321); one column per logit."""
    x = toy.logits + toy.shift if shifted else toy.logits
    probs = toy.shifted_probs if shifted else toy.probs
    columns = [str(i + 1) for i in range(x.numel())]
    rows = {("x + c" if shifted else "x"): [f"{v:g}" for v in x.tolist()]}
    for t, row in zip(toy.temperatures, probs.tolist()):
        name = f"σ_{t:g}(x + c)" if shifted else f"σ_{t:g}(x)"
        rows[name + (" greedy" if t == 0 else "")] = [sampling.lecture_number(v) for v in row]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)
