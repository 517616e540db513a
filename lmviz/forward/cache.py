"""The one cache every analysis shares: bounded in bytes, least recently used out, single-flight.

Pages rerun on every slider move, and many sessions ask for the same text, so
each result (a trace, a lens, a loss report, a beam tree, a generation run, a
fitted head) is computed once and kept while it fits. One budget covers them
all: `$LMVIZ_TRACE_CACHE_MB` (default 1024) bounds lmviz's cached memory,
models aside.

- **Single-flight.** The first caller of a key computes it; a caller arriving
  meanwhile waits for that result instead of computing it again. The entry is
  stored before the waiters are released.
- **No global lock across a computation.** The cache's own lock is held only
  to look up, insert and evict; computations of different keys run at once.
- **Keyed by content.** Keys name the analysis, the model (`lm.cache_key`:
  name and load serial) and the inputs, never an object's `id()`, and results
  hold no reference to a cached trace, so evicting a trace frees it.
- **Sizes** are measured by walking the value (`nbytes`): tensors, arrays,
  dataclasses, containers and plain objects; models (`nn.Module`) are never counted.
  A value larger than the whole budget is returned but not kept.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
import sys
import threading
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

import numpy as np
import torch
from torch import nn

T = TypeVar("T")


def nbytes(value, _seen: set[int] | None = None, _depth: int = 0) -> int:
    """Bytes a cached value holds: tensors and arrays exactly, everything else approximately."""
    seen = set() if _seen is None else _seen
    if id(value) in seen or _depth > 12 or isinstance(value, nn.Module):
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if hasattr(value, "nbytes") and isinstance(getattr(value, "nbytes"), int):  # numpy arrays
        return int(value.nbytes)
    if isinstance(value, (str, bytes, int, float, bool, type(None))):
        return sys.getsizeof(value)
    if hasattr(value, "memory_usage") and callable(value.memory_usage):  # pandas
        try:
            return int(value.memory_usage(deep=True).sum())
        except (TypeError, ValueError):
            return sys.getsizeof(value)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(nbytes(k, seen, _depth + 1) + nbytes(v, seen, _depth + 1)
                                          for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sys.getsizeof(value) + sum(nbytes(v, seen, _depth + 1) for v in value)
    if dataclasses.is_dataclass(value):
        return sys.getsizeof(value) + sum(nbytes(getattr(value, f.name), seen, _depth + 1)
                                          for f in dataclasses.fields(value))
    if hasattr(value, "__dict__"):
        return sys.getsizeof(value) + nbytes(vars(value), seen, _depth + 1)
    return sys.getsizeof(value)


class Cache:
    """Least-recently-used values bounded in bytes; one computation per key even under threads."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()  # key -> (value, bytes)
        self._computing: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value of `key`, computed by `compute()` on the first call (and kept while it fits)."""
        while True:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return self._entries[key][0]  # type: ignore[return-value]
                running = self._computing.get(key)
                if running is None:
                    done = self._computing[key] = threading.Event()
                    break
            running.wait()  # another thread is computing this key: take its result (or retry if it failed)
        try:
            value = compute()
            size = nbytes(value)
            with self._lock:
                self.misses += 1
                if size <= self.max_bytes:
                    self._entries[key] = (value, size)
                    self.bytes += size
                    self._evict()
            return value
        finally:
            with self._lock:
                del self._computing[key]
            done.set()

    def remeasure(self, key: Hashable) -> None:
        """Measure an entry again after it grew (a generation run that took more steps)."""
        with self._lock:
            if key not in self._entries:
                return
            value, old = self._entries[key]
        size = nbytes(value)
        with self._lock:
            if key in self._entries and self._entries[key][0] is value:
                self._entries[key] = (value, size)
                self.bytes += size - old
                self._evict(keep=key)

    def _evict(self, keep: Hashable | None = None) -> None:
        """Drop least recently used entries until the total fits (call with the lock held)."""
        for key in list(self._entries):
            if self.bytes <= self.max_bytes:
                break
            if key == keep:
                continue
            _, size = self._entries.pop(key)
            self.bytes -= size
        if self.bytes > self.max_bytes and keep in self._entries:  # it alone is too big now
            _, size = self._entries.pop(keep)
            self.bytes -= size

    def forget(self, analysis: str) -> None:
        """Drop every entry of one analysis (keys made by `cached(analysis, …)`), e.g. to time it afresh."""
        with self._lock:
            for key in [k for k in self._entries if isinstance(k, tuple) and k and k[0] == analysis]:
                self.bytes -= self._entries.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries


def budget_bytes() -> int:
    """$LMVIZ_TRACE_CACHE_MB (default 1024) in bytes: all of lmviz's cached results together."""
    return int(float(os.environ.get("LMVIZ_TRACE_CACHE_MB", "1024")) * 2**20)


CACHE = Cache(budget_bytes())


def cached(analysis: str, lm, key: tuple, compute: Callable[[], T]) -> T:
    """`CACHE.get` with the usual key: (analysis, model name, model load serial, *key)."""
    return CACHE.get((analysis, *lm.cache_key, *key), compute)


def is_cached_result(analysis: str, lm, key: tuple) -> bool:
    """Whether `cached(analysis, lm, key, …)` would return a stored value without computing."""
    return (analysis, *lm.cache_key, *key) in CACHE


PRIMITIVES = (type(None), bool, int, float, complex, str, bytes)


def fingerprint(value) -> bytes:
    """A digest of a value's content, for keys built from results rather than from their inputs: equal
    digests mean equal values. Tensors and arrays count by dtype, shape and bytes, dataclasses by class and
    fields, containers by their items in order, numbers and strings by their repr (exact for floats).
    Anything else (a model, a function, a DataFrame) raises TypeError: it has no fingerprint."""
    digest = hashlib.blake2b(digest_size=20)
    _feed(digest, value, 0)
    return digest.digest()


def _feed(digest, value, depth: int) -> None:
    def put(tag: str, data: bytes) -> None:  # a tag and a length before the bytes: no two values run together
        digest.update(f"{tag}:{len(data)}:".encode())
        digest.update(data)

    if depth > 12:
        raise TypeError("too deeply nested to fingerprint")
    kind = type(value)
    if kind in PRIMITIVES:
        put(kind.__name__, repr(value).encode())
    elif isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1).contiguous().cpu()
        put(f"tensor {flat.dtype} {tuple(value.shape)}", flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("an array of Python objects has no fingerprint")
        put(f"array {value.dtype.str} {value.shape}", np.ascontiguousarray(value).tobytes())
    elif isinstance(value, enum.Enum):
        put("enum", f"{kind.__module__}.{kind.__qualname__}.{value.name}".encode())
    elif isinstance(value, tuple) and hasattr(kind, "_fields"):  # a named tuple: its class, then its items
        put("namedtuple", f"{kind.__module__}.{kind.__qualname__}".encode())
        _feed(digest, tuple(value), depth + 1)
    elif kind in (list, tuple) and all(type(item) in PRIMITIVES for item in value):
        put(kind.__name__, repr(value).encode())  # one repr for a list of numbers or strings: fast, exact
    elif kind in (list, tuple, dict):
        items = value.items() if kind is dict else value
        put(kind.__name__, str(len(value)).encode())
        for item in items:
            _feed(digest, item, depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        put("dataclass", f"{kind.__module__}.{kind.__qualname__}".encode())
        for field in dataclasses.fields(value):
            _feed(digest, getattr(value, field.name), depth + 1)
    else:
        raise TypeError(f"a {kind.__qualname__} has no fingerprint")
