"""A class that follows its teacher: which view each running class is on, shared by the server's sessions.

One store per server process (`STORE`, and the module's functions over it), thread-safe, no Streamlit.
A teacher's session `start()`s a class and gets a public code (what the students type or scan:
`/?class=CODE`) and a secret teacher key (kept in the teacher's own URL, so that a reload keeps
teaching; the code never gives it away). The teacher's session `publish()`es the URL of its view
(a page's path and query string, e.g. "lens?lesson=notebook&step=3&class=CODE") on every run; the
students' sessions poll `current(code)` and go to that URL when its version changed.

A class holds that one URL and its version, nothing about the students and no text beyond the URL;
it is forgotten `ttl` seconds (3 hours) after its last publish, or when the teacher ends it.
"""

from __future__ import annotations

import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read off a projector without mistakes
CODE_LENGTH = 5  # 31^5 = 28 million codes
TTL_S = 3 * 3600.0
MAX_CLASSES = 10_000  # a guard against a loop opening ?class=new: the oldest class goes first
MAX_URL = 8192


@dataclass
class _Class:
    code: str
    url: str
    version: int
    touched: float  # the clock's time of the last start/publish


def normalize(code: str | None) -> str:
    """A code as typed: case and spaces don't matter."""
    return "".join((code or "").split()).upper()


def refines(old: str, new: str) -> bool:
    """Whether `new` is `old` with only parameters added (same path, every old parameter kept as it was): what
    a page does when it writes its default settings into the URL. Students who followed `old` already show it."""
    old_path, _, old_query = old.partition("?")
    new_path, _, new_query = new.partition("?")
    if old_path != new_path:
        return False
    new_params = dict(urllib.parse.parse_qsl(new_query, keep_blank_values=True))
    return all(new_params.get(key) == value
               for key, value in urllib.parse.parse_qsl(old_query, keep_blank_values=True))


class Classes:
    """The running classes. `clock`: seconds, monotonic (tests pass their own)."""

    def __init__(self, ttl: float = TTL_S, clock: Callable[[], float] = time.monotonic,
                 max_classes: int = MAX_CLASSES):
        self.ttl, self.clock, self.max_classes = ttl, clock, max_classes
        self._lock = threading.Lock()
        self._by_code: dict[str, _Class] = {}
        self._by_key: dict[str, str] = {}  # teacher key -> code

    def _expire(self, now: float) -> None:
        for key, code in list(self._by_key.items()):
            if now - self._by_code[code].touched > self.ttl:
                del self._by_key[key], self._by_code[code]

    def start(self, url: str = "") -> tuple[str, str]:
        """A new class showing `url` (version 1): returns (code, teacher_key)."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            while len(self._by_code) >= self.max_classes:
                oldest = min(self._by_key, key=lambda key: self._by_code[self._by_key[key]].touched)
                del self._by_code[self._by_key.pop(oldest)]
            code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
            while code in self._by_code:
                code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
            key = secrets.token_urlsafe(18)
            self._by_code[code] = _Class(code, url[:MAX_URL], 1, now)
            self._by_key[key] = code
            return code, key

    def code_of(self, teacher_key: str | None) -> str | None:
        """The code of the class this teacher key runs, or None (unknown, ended or expired)."""
        with self._lock:
            self._expire(self.clock())
            return self._by_key.get(teacher_key or "")

    def publish(self, teacher_key: str, url: str) -> int | None:
        """The teacher's view is now `url`: returns the class's version (one more when the students have to
        move; the same when `url` only adds parameters to the last one, see `refines`), or None when the key
        runs no class. Every publish keeps the class alive for another `ttl`."""
        url = url[:MAX_URL]
        with self._lock:
            now = self.clock()
            self._expire(now)
            code = self._by_key.get(teacher_key or "")
            if code is None:
                return None
            room = self._by_code[code]
            if url != room.url:
                if not refines(room.url, url):
                    room.version += 1
                room.url = url
            room.touched = now
            return room.version

    def current(self, code: str | None) -> tuple[str, int] | None:
        """(url, version) of the class `code`, or None when no such class runs (ended, expired, mistyped)."""
        with self._lock:
            room = self._by_code.get(normalize(code))
            if room is None or self.clock() - room.touched > self.ttl:
                return None
            return room.url, room.version

    def end(self, teacher_key: str) -> bool:
        """The teacher ends the class: its code stops working at once."""
        with self._lock:
            code = self._by_key.pop(teacher_key or "", None)
            if code is not None:
                del self._by_code[code]
            return code is not None

    def __len__(self) -> int:
        with self._lock:
            self._expire(self.clock())
            return len(self._by_code)


STORE = Classes()  # the server process's classes


def start(url: str = "") -> tuple[str, str]:
    return STORE.start(url)


def code_of(teacher_key: str | None) -> str | None:
    return STORE.code_of(teacher_key)


def publish(teacher_key: str, url: str) -> int | None:
    return STORE.publish(teacher_key, url)


def current(code: str | None) -> tuple[str, int] | None:
    return STORE.current(code)


def end(teacher_key: str) -> bool:
    return STORE.end(teacher_key)
