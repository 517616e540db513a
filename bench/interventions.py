"""Head ablation through plain torch hooks against nnsight 0.8.1: speed, equality, and thread safety.

Run from the repo root: `.venv/bin/python bench/interventions.py [--layer 5] [--head 3] [--runs 10]`.
nnsight is optional: with it on the path (e.g. `pip install --target /tmp/nnsight-pkgs --no-deps
nnsight==0.8.1 cloudpickle zstandard websocket-client`, then `PYTHONPATH=/tmp/nnsight-pkgs`) the
nnsight rows are added; without it the script says so in one line and measures the hooks only.

On the embedded model (smollm2-135m: 30 layers, 9 heads of 64 dims) it zero-ablates one head, i.e.
zeros that head's 64 columns of the input of layer L's `self_attn.o_proj` (the heads side by side),
and reads the last position's logits, on a ~14-token and a ~200-token text:

- baseline: the plain forward pass, before anything is hooked or wrapped (measured in the same run);
- hooks: one forward pre-hook per o_proj, registered once before timing, acting only when a
  `threading.local` names its layer (so idle hooks cost is also printed); they stay registered, idle,
  for the nnsight rows too;
- nnsight: `NNsight(model)` and `with wrapped.trace(ids): ...o_proj.input[..., a:b] = 0`, the logits
  saved from `lm_head.output`; the max abs difference from the hooks' logits is printed.

Timings are the median of --runs runs after --warmup runs (the machine may be shared), the methods of
one setup taken in turn each round; "x base" is against the baseline, and the ratios under the table
compare methods timed in the same rounds (hooks / plain with the hooks registered; nnsight / hooks
with the model wrapped). Then concurrency: --threads threads at once, each running
--iterations ablations of its own head on the short text (--concurrent-text long for the other) (thread i: layer i, head i % 9) on the same model, every result
compared with that head's single-threaded reference: hooks (the head read from a threading.local),
nnsight with one shared wrapper, one wrapper per thread, nnsight next to plain (unablated) forwards in
other threads, and nnsight behind one lock. These run last (so the hooks' run sees the model already
wrapped, its controllers idle). It prints wall times, wrong results, exceptions, nnsight's warnings
and hung threads. About 4 minutes on 2 shared cores. No timing is asserted. On a machine shared with
other work, `LMVIZ_THREADS=1` gives steadier figures: with 2 torch threads and a core taken elsewhere,
a forward waits on its descheduled second thread and single runs took 4-8x longer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lmviz.forward import trace
from lmviz.model import compute, interventions, models  # noqa: E402

try:
    import nnsight  # noqa: E402
    from nnsight import NNsight  # noqa: E402
except ImportError as missing:
    nnsight, NNsight, NNSIGHT_MISSING = None, None, str(missing)
else:
    NNSIGHT_MISSING = ""

SHORT = "The capital of France is Paris, and the capital of England is"
PARAGRAPH = (
    "This weekend I plan to visit Paris with my friends. The capital of France is Paris, and the capital "
    "of England is London. A language model predicts the next token from the tokens before it. "
)
WRONG = 1e-4  # a result further than this from its reference counts as wrong


class Hooks:
    """One forward pre-hook per o_proj, registered once; it zeros a head only for the thread that asks."""

    def __init__(self, model, head_dim: int):
        self.wanted = threading.local()  # .target: (layer, head) or None
        self.head_dim = head_dim
        self.handles = [layer.self_attn.o_proj.register_forward_pre_hook(self._hook(index))
                        for index, layer in enumerate(model.model.layers)]

    def _hook(self, index: int):
        def hook(module, args):
            target = getattr(self.wanted, "target", None)
            if target is None or target[0] != index:
                return None
            heads = args[0].clone()
            heads[..., target[1] * self.head_dim:(target[1] + 1) * self.head_dim] = 0
            return (heads, *args[1:])
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def last_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids).logits[0, -1].clone()


def hooks_ablate(model, hooks: Hooks, ids: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    hooks.wanted.target = (layer, head)
    try:
        return last_logits(model, ids)
    finally:
        hooks.wanted.target = None


def nnsight_ablate(wrapped, ids: torch.Tensor, layer: int, head: int, head_dim: int) -> torch.Tensor:
    logits = None
    with torch.inference_mode():  # noqa: SIM117 - nnsight reads the trace's own `with` block from the source
        with wrapped.trace(ids):
            wrapped.model.layers[layer].self_attn.o_proj.input[..., head * head_dim:(head + 1) * head_dim] = 0
            logits = wrapped.lm_head.output[0, -1].save()
    if logits is None:  # the block's worker died and nnsight only warned: nothing was saved
        raise RuntimeError("the trace ended without error but its block never finished (nothing saved)")
    return logits.clone()


def medians_ms(works: dict, runs: int, warmup: int) -> dict[str, float]:
    """Median ms of each work, the works taken in turn in every round so a burst of load elsewhere on a
    shared machine hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in works}
    for round_ in range(warmup + runs):
        for name, work in works.items():
            started = time.perf_counter()
            work()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def timed(rows: dict, works: dict, texts: dict, runs: int, warmup: int) -> None:
    """Add a row per work (a function of the ids), measured interleaved, per text."""
    for text, ids in texts.items():
        for name, ms in medians_ms({name: (lambda w=work, x=ids: w(x)) for name, work in works.items()},
                                   runs, warmup).items():
            rows.setdefault(name, {})[text] = ms


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def concurrently(jobs, timeout: float) -> dict:
    """Run jobs (callables, each: one iteration -> (result, reference)) on threads started together.

    jobs: list of (work, iterations, label). Returns wall time, results, wrong (also by label), exceptions, hung."""
    barrier = threading.Barrier(len(jobs))
    report = {"ok": 0, "wrong": 0, "errors": Counter(), "worst": 0.0, "runs": 0, "wrong_by": Counter()}
    lock = threading.Lock()

    def run(work, iterations, label):
        barrier.wait()
        for _ in range(iterations):
            try:
                got, reference = work()
                error = diff(got, reference)
                with lock:
                    report["worst"] = max(report["worst"], error)
                    report["ok" if error <= WRONG else "wrong"] += 1
                    report["wrong_by"][label] += error > WRONG
            except Exception as exception:  # noqa: BLE001 - counted and reported
                first = (str(exception).strip().splitlines() or [""])[0]
                with lock:
                    report["errors"][f"{label}: {type(exception).__name__}: {first[:110]}"] += 1
            with lock:
                report["runs"] += 1

    threads = [threading.Thread(target=run, args=job, daemon=True) for job in jobs]
    report["warnings"] = Counter()

    def count(message, category, *rest):  # nnsight warns (not raises) some of a failed run's errors
        with lock:
            report["warnings"][f"{category.__name__}: {str(message).splitlines()[0][:90]}"] += 1

    with warnings.catch_warnings():  # restores the filters and showwarning afterwards
        warnings.simplefilter("always")
        warnings.showwarning = count
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        deadline = started + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.perf_counter()))
        report["wall"] = time.perf_counter() - started
        report["hung"] = sum(thread.is_alive() for thread in threads)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=5)
    parser.add_argument("--head", type=int, default=3)
    parser.add_argument("--long-tokens", type=int, default=200)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per figure (the median is printed)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=5, help="ablations per thread")
    parser.add_argument("--concurrent-text", choices=["short", "long"], default="short")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds before a concurrency run's threads count as hung")
    args = parser.parse_args()
    compute.configure_threads()

    lm = models.load("smollm2-135m")
    model = lm.model
    config = model.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    head_dim = model.model.layers[0].self_attn.o_proj.in_features // n_heads
    layer, head = args.layer, args.head
    short_ids = torch.tensor([trace.encode(lm, SHORT)])
    long_ids = torch.tensor([trace.encode(lm, PARAGRAPH * (args.long_tokens // 30 + 2))[: args.long_tokens]])
    texts = {"short": short_ids, "long": long_ids}
    print(f"model {lm.name}: {n_layers} layers, {n_heads} heads of {head_dim}; ablating layer {layer} head {head}; "
          f"texts of {short_ids.shape[1]} and {long_ids.shape[1]} tokens; torch threads {torch.get_num_threads()}; "
          f"median of {args.runs} runs after {args.warmup} warm-up")
    if nnsight is None:
        print(f"nnsight is not importable ({NNSIGHT_MISSING}): measuring the hooks only.")
    else:
        print(f"nnsight {nnsight.__version__} from {Path(nnsight.__file__).parent}", flush=True)

    rows: dict[str, dict[str, float]] = {}
    plain_ref = {name: last_logits(model, ids) for name, ids in texts.items()}
    timed(rows, {"plain forward (baseline)": lambda ids: last_logits(model, ids)}, texts, args.runs, args.warmup)

    hooks = Hooks(model, head_dim)  # registered once, before timing, and left in place (idle) for what follows
    timed(rows, {f"plain, {n_layers} idle hooks": lambda ids: last_logits(model, ids),
                 "hooks: ablate": lambda ids: hooks_ablate(model, hooks, ids, layer, head)},
          texts, args.runs, args.warmup)
    hook_out = {name: hooks_ablate(model, hooks, ids, layer, head) for name, ids in texts.items()}
    seam_edit = (interventions.Edit(interventions.Component("head", layer, head).site),)
    timed(rows, {"lmviz.model.interventions.run: ablate": lambda ids: interventions.run(lm, ids, edits=seam_edit,
                                                                                   logits_at=-1)},
          texts, args.runs, args.warmup)
    seam_diff = max(diff(interventions.run(lm, ids, edits=seam_edit, logits_at=-1), hook_out[name])
                    for name, ids in texts.items())
    print(f"lmviz's seam (hooks installed on load, thread-local edits) vs these hooks: max |diff| {seam_diff:.3g}")
    concurrent_ids = texts[args.concurrent_text]
    targets = [(i % n_layers, i % n_heads) for i in range(args.threads)]
    references = [hooks_ablate(model, hooks, concurrent_ids, *target) for target in targets]

    diffs, notes = {}, []
    if nnsight is not None:
        # Single-threaded timings all come before any concurrency run: right after 8 threads have run the
        # model, this shared 2-core machine showed short forwards slowing down for a while.
        wrapped = NNsight(model)  # installs a controller as each module's forward, for good
        timed(rows, {"plain, wrapped + idle hooks": lambda ids: last_logits(model, ids),
                     "hooks: ablate, model wrapped": lambda ids: hooks_ablate(model, hooks, ids, layer, head),
                     "nnsight: ablate": lambda ids: nnsight_ablate(wrapped, ids, layer, head, head_dim)},
              texts, args.runs, args.warmup)
        for name, ids in texts.items():
            diffs[name] = diff(nnsight_ablate(wrapped, ids, layer, head, head_dim), hook_out[name])
        single = max(diff(nnsight_ablate(wrapped, concurrent_ids, *target, head_dim), reference)
                     for target, reference in zip(targets, references))
        notes.append(f"nnsight single-threaded vs hooks, the {args.threads} concurrency heads: max |diff| {single:.3g}")

    effect = {name: diff(hook_out[name], plain_ref[name]) for name in texts}
    print()
    header = f"{'method':<34}" + "".join(f"{f'{ids.shape[1]} tok ms':>12}{'x base':>8}" for ids in texts.values())
    print(header)
    print("-" * len(header))
    base = rows["plain forward (baseline)"]
    for method, times in rows.items():
        print(f"{method:<34}" + "".join(f"{times[name]:>12.1f}{times[name] / base[name]:>8.2f}" for name in texts))
    print()
    for name, ids in texts.items():
        idle = rows[f"plain, {n_layers} idle hooks"][name]
        line = f"{ids.shape[1]:>4} tokens: hooks / plain {rows['hooks: ablate'][name] / idle:.2f}"
        if "nnsight: ablate" in rows:
            line += (f" | nnsight / hooks {rows['nnsight: ablate'][name] / rows['hooks: ablate, model wrapped'][name]:.2f}"
                     f" | nnsight vs hooks logits max |diff| {diffs[name]:.3g}")
        print(line + f" | ablation's effect on the logits max |diff| {effect[name]:.3g}")
    for note in notes:
        print(note)

    print()
    print(f"concurrency: {args.threads} threads x {args.iterations} ablations on {concurrent_ids.shape[1]} tokens, "
          f"thread i ablates layer i head i % {n_heads}; wrong = |diff| > {WRONG:g} from the single-threaded reference")
    header = (f"{'variant':<36}{'wall s':>8}{'x hooks':>9}{'ok':>5}{'wrong':>7}{'errors':>8}{'warned':>8}{'hung':>6}"
              f"{'max |diff|':>12}")
    print(header)
    print("-" * len(header), flush=True)
    details: list[str] = []
    hooks_wall = None

    def show(name: str, report: dict) -> None:
        nonlocal hooks_wall
        hooks_wall = hooks_wall or report["wall"]
        errors = sum(report["errors"].values())
        print(f"{name:<36}{report['wall']:>8.2f}{report['wall'] / hooks_wall:>9.2f}{report['ok']:>5}{report['wrong']:>7}"
              f"{errors:>8}{sum(report['warnings'].values()):>8}{report['hung']:>6}{report['worst']:>12.3g}", flush=True)
        if set(report["wrong_by"]) - {"hooks", "nnsight"}:
            details.append(f"  {name}: wrong results by kind of thread: " + ", ".join(
                f"{label} {count}" for label, count in report["wrong_by"].items()))
        details.extend(f"  {name}: {count} x {message}" for message, count in report["errors"].most_common(4))
        details.extend(f"  {name}: warned {count} x {message}" for message, count in report["warnings"].most_common(2))

    show("hooks (threading.local)", concurrently(
        [(lambda i=i: (hooks_ablate(model, hooks, concurrent_ids, *targets[i]), references[i]), args.iterations,
          "hooks") for i in range(args.threads)], args.timeout))

    if nnsight is not None:
        def nnsight_job(envoy, i, guard=None):
            def work():
                if guard is None:
                    return nnsight_ablate(envoy, concurrent_ids, *targets[i], head_dim), references[i]
                with guard:
                    return nnsight_ablate(envoy, concurrent_ids, *targets[i], head_dim), references[i]
            return work, args.iterations, "nnsight"

        plain_concurrent = last_logits(model, concurrent_ids)
        half = max(1, args.threads // 2)
        lock = threading.Lock()
        variants = {
            "nnsight, one shared wrapper": lambda: [nnsight_job(wrapped, i) for i in range(args.threads)],
            "nnsight, one wrapper per thread": lambda: [nnsight_job(NNsight(model), i) for i in range(args.threads)],
            f"nnsight x{half} + plain forward x{args.threads - half}": lambda: (
                [nnsight_job(wrapped, i) for i in range(half)]
                + [((lambda: (last_logits(model, concurrent_ids), plain_concurrent)), args.iterations, "plain")
                   for _ in range(args.threads - half)]),
            "nnsight, shared wrapper + one lock": lambda: [nnsight_job(wrapped, i, lock) for i in range(args.threads)],
        }
        for name, jobs in variants.items():
            report = concurrently(jobs(), args.timeout)
            show(name, report)
            if report["hung"]:
                details.append(f"{name}: {report['hung']} thread(s) still running after {args.timeout:.0f} s; "
                               "later concurrency variants skipped")
                break
        healthy_plain = diff(last_logits(model, concurrent_ids), plain_concurrent)
        try:
            healthy_nn = f"{diff(nnsight_ablate(wrapped, concurrent_ids, *targets[0], head_dim), references[0]):.3g}"
        except Exception as exception:  # noqa: BLE001 - reported
            healthy_nn = f"raises {type(exception).__name__}: {str(exception).splitlines()[0][:80]}"
        details.append(f"after the concurrency runs: plain forward |diff| {healthy_plain:.3g}, single nnsight "
                       f"ablation |diff| {healthy_nn}, interleaver.interleaving={wrapped.interleaver.interleaving}")
    for line in details:
        print(line)


if __name__ == "__main__":
    main()
