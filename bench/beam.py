"""Beam search with the whole tree recorded vs transformers' generate(), 5 beams x 20 new tokens,
embedded model. Goal: lmviz.analyses.beam.beam_search <= 1.5 x generate(). Runs alternate, best of 3 each."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lmviz.analyses import beam
from lmviz.model import models  # noqa: E402
from lmviz.forward.cache import CACHE  # noqa: E402
from lmviz.forward.trace import encode  # noqa: E402

PROMPT = "This weekend I plan to"
BEAMS, NEW_TOKENS, REPEATS = 5, 20, 3


def main() -> None:
    lm = models.load(models.DEFAULT_MODEL)
    ids = torch.tensor([encode(lm, PROMPT)])

    def run_generate():
        with torch.inference_mode():
            return lm.model.generate(
                ids, num_beams=BEAMS, num_return_sequences=BEAMS, do_sample=False, max_new_tokens=NEW_TOKENS,
                output_scores=True, return_dict_in_generate=True,
            )

    def run_lmviz():
        CACHE.forget("beam")  # measure the search, not the result cache
        return beam.beam_search(lm, PROMPT, BEAMS, NEW_TOKENS, alternatives=5)  # as the page records it

    run_generate(), run_lmviz()  # warm up
    times = {"generate": [], "lmviz": []}
    for _ in range(REPEATS):
        for name, function in (("generate", run_generate), ("lmviz", run_lmviz)):
            started = time.perf_counter()
            result = function()
            times[name].append(time.perf_counter() - started)
            if name == "generate":
                expected = result.sequences_scores.tolist()
            else:
                assert len(result.final) == len(expected) and all(
                    abs(h.score - s) < 1e-5 for h, s in zip(result.final, expected)), "results differ"
    best = {name: min(values) for name, values in times.items()}
    tree = run_lmviz()
    print(f"torch threads: {torch.get_num_threads()}; {BEAMS} beams x {NEW_TOKENS} new tokens, best of {REPEATS}")
    print(f"generate(): {best['generate']:.3f} s")
    print(f"lmviz beam_search (tree of {len(tree.nodes)} nodes): {best['lmviz']:.3f} s")
    print(f"ratio lmviz / generate: {best['lmviz'] / best['generate']:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
