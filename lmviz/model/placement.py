"""Where a model runs and in which dtype: device, dtype, device_map, and why.

    placement(device=None, dtype=None) -> Placement

- device: "cpu", "cuda", "cuda:N", or "auto" (cuda where available, else
  cpu); default $LMVIZ_DEVICE, else "auto".
- dtype: "float32", "bfloat16", "float16", "float64", or "auto"; default
  $LMVIZ_DTYPE, else "float32". "auto" is bfloat16 on a GPU; on a CPU,
  bfloat16 only where the CPU multiplies bfloat16 matrices natively (AMX or
  AVX512-BF16, read from its flags), float32 elsewhere: on an AVX2-only CPU a
  bfloat16 matrix product ran 6x slower than float32.
- $LMVIZ_DEVICE_MAP=auto loads a model larger than one device with
  accelerate's device_map="auto" (its layers spread over the GPUs and the CPU).

Every analysis then runs where the weights are and reduces in float32
(log-softmax, entropy, KL, NLL, ranks); traces and results come back to the
CPU, where the cache keeps them.

In bfloat16 and float16 the model itself computes differently, so its numbers
move away from float32's. `TOLERANCES` states how far, as measured against
float32 over every layer of the logit lens (SmolLM2 and Gemma-3, 14,000
layer-positions), with room to spare; tests/test_placement.py checks them on
other texts, and the sidebar and --json print them. They are measurements, not
bounds: 0.4% of top-1 tokens with a float32 margin above 0.01 flipped in
bfloat16. float16 overflows on models whose residual stream passes 65,504
(Gemma-3 reaches 1e5), and such a model is refused in float16 at load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import torch

from lmviz.errors import LmvizError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # native bfloat16 matrix products


# dtype -> what its numbers may differ from float32's (measured maxima: SmolLM2 bf16 0.070 / 0.51 / 0.18,
# fp16 0.013 / 0.19 / 0.056; Gemma-3 bf16 0.136 / 2.50 / 0.54 for probability / per-token NLL / entropy)
TOLERANCES = {
    torch.bfloat16: {"probability": 0.2, "nll": 4.0, "entropy": 1.0},
    torch.float16: {"probability": 0.03, "nll": 0.5, "entropy": 0.15},
}


def tolerance(dtype: torch.dtype) -> dict[str, float] | None:
    """How far this dtype's probabilities, per-token NLL (nats) and entropies (nats) may be from float32's;
    None for float32 and float64 (exact up to float rounding, which the tests bound)."""
    return TOLERANCES.get(dtype)


def tolerance_note(dtype: torch.dtype) -> str | None:
    """The tolerance in words, for the sidebar."""
    stated = tolerance(dtype)
    if stated is None:
        return None
    name = str(dtype).removeprefix("torch.")
    return (f"{name}: probabilities ±{stated['probability']:g}, cross-entropies ±{stated['nll']:g} nats per token, "
            f"entropies ±{stated['entropy']:g} nats of float32's (measured, not a bound)")


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu", "cuda", "cuda:N"; with a device_map, where the inputs go (the first layer's device)
    dtype: torch.dtype
    device_map: str | None  # "auto": accelerate spreads the layers; None: the whole model on `device`
    reason: str  # why this dtype, in words (the sidebar and --json show it)

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.device, self.dtype_name, self.device_map)


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's native bfloat16 matrix flags (AMX, AVX512-BF16), from /proc/cpuinfo; () when none or unknown."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return ()
    return tuple(flag for flag in CPU_BF16_FLAGS if flag in flags)


def placement(device: str | None = None, dtype: str | None = None) -> Placement:
    """Resolve the requested (or configured) device and dtype; raise a one-line LmvizError for bad values."""
    device = (device or os.environ.get("LMVIZ_DEVICE") or "auto").strip().lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise LmvizError(f"Unknown device '{device}': use cpu, cuda, cuda:N or auto.") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise LmvizError(f"Device '{device}' asked for, but this machine has no CUDA GPU that torch can use.")
    if parsed.type not in ("cpu", "cuda"):
        raise LmvizError(f"Device '{device}' is not supported: use cpu, cuda, cuda:N or auto.")
    device_map = (os.environ.get("LMVIZ_DEVICE_MAP") or "").strip() or None
    if device_map not in (None, "auto"):
        raise LmvizError(f"LMVIZ_DEVICE_MAP must be 'auto' or unset, not '{device_map}'.")
    name = (dtype or os.environ.get("LMVIZ_DTYPE") or "float32").strip().lower()
    if name == "auto":
        chosen, reason = _auto_dtype(parsed.type)
        return Placement(device, chosen, device_map, reason)
    if name not in DTYPES:
        raise LmvizError(f"Unknown dtype '{name}': use {', '.join(DTYPES)} or auto.")
    return Placement(device, DTYPES[name], device_map, f"{name} as asked")


def _auto_dtype(device_type: str) -> tuple[torch.dtype, str]:
    if device_type == "cuda":
        return torch.bfloat16, "auto: bfloat16 on a GPU"
    flags = cpu_bf16_flags()
    if flags:
        return torch.bfloat16, f"auto: this CPU multiplies bfloat16 natively ({', '.join(flags)})"
    return torch.float32, "auto: float32, this CPU has no native bfloat16 matrix support (no AMX or AVX512-BF16)"
