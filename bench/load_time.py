"""Cold and warm start of the embedded model, and the first trace after a warm load.

Cold: the GGUF is dequantized and saved as float32 safetensors (a fresh cache dir).
Warm: the saved copy is loaded. Each runs in a fresh Python process, so the
figures exclude nothing but the imports, which are timed separately.
Goal (issue 2): warm load + first trace under 3 s, imports excluded.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, time, sys
started = time.perf_counter()
from lmviz.forward import trace
from lmviz.model import models
imported = time.perf_counter()
lm = models.load("smollm2-135m")
loaded = time.perf_counter()
t = trace.trace(lm, "This weekend I plan to")
traced = time.perf_counter()
print(json.dumps({"imports": imported - started, "load": loaded - imported, "first_trace": traced - loaded}))
"""


def run(cache: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True,
        env={"LMVIZ_CACHE": cache, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        cold = run(cache)
        warm = [run(cache) for _ in range(3)]
    best = min(warm, key=lambda r: r["load"] + r["first_trace"])
    print(f"imports            {best['imports']:.2f} s")
    print(f"cold load          {cold['load']:.2f} s   (GGUF dequantize + save float32 copy, once)")
    print(f"warm load          {best['load']:.2f} s   (float32 safetensors copy; best of 3)")
    print(f"first trace        {best['first_trace']:.2f} s")
    total = best["load"] + best["first_trace"]
    print(f"warm load + trace  {total:.2f} s   goal < 3 s: {'met' if total < 3 else 'NOT met'}")
    print(f"cold / warm load   {cold['load'] / best['load']:.1f}x")


if __name__ == "__main__":
    main()
