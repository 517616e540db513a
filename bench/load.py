"""A classroom on one server: N sessions at once, the server measured apart from its clients.

Starts `streamlit run app.py` pinned to some cores (`taskset`; default: all
but the last) and drives N sessions from this process, pinned to the
remaining core. The clients speak Streamlit's own websocket protocol, as a
browser tab does, but render nothing: each session sends "run this page"
(the page's URL path and query string, as a browser sends on opening a link),
reads the server's messages until the script has finished, and counts an
error for every exception or error box on the page. So the times are the
server's: from the request to the last element of a complete page.

Scenario: N students open the link at once (or, with --arrival S, spread over
S seconds), each with their own ~50-token text (or, with --same-text, the
teacher's one link); each opens the logit lens, then (same session) the
sampling page.
Printed per N: p50/p95 time to a complete page, errors, the server's peak
RSS and CPU seconds per session. The baseline, measured in the same run, is
one session alone on the same server.

    .venv/bin/python bench/load.py --sessions 10 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamlit.proto.BackMsg_pb2 import BackMsg  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from tests.browser.conftest import free_port, start_server  # noqa: E402

SUBJECTS = ["The capital of France", "A recipe for bread", "The history of the bicycle", "How rain forms",
            "The rules of chess", "Why the sky is blue", "The life of a honeybee", "How a compass works"]
PAGES = ("lens", "sampling")
LIMIT_S = 600  # liveness: a page not finished by then counts as an error


def student_text(i: int) -> str:
    """A different ~50-token text for each session (so nothing is shared through the cache)."""
    subject = SUBJECTS[i % len(SUBJECTS)]
    return (f"{subject}, explained for student number {i}: this short paragraph is long enough to fill a "
            f"screen of the logit lens, and it ends with a sentence that the model has to continue, so that "
            f"every layer has something to predict about {subject.lower()} and number {i} in the")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakMemory(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.1)


@dataclass
class PageLoad:
    page: str
    seconds: float
    errors: list[str] = field(default_factory=list)
    elements: Counter = field(default_factory=Counter)  # element kind -> how many the page drew


def problems(message: ForwardMsg) -> list[str]:
    """Exceptions and error boxes in one message from the server."""
    if message.WhichOneof("type") != "delta" or message.delta.WhichOneof("type") != "new_element":
        return []
    element = message.delta.new_element
    kind = element.WhichOneof("type")
    if kind == "exception":
        return [f"exception: {element.exception.type}: {element.exception.message[:200]}"]
    if kind == "alert" and element.alert.format == element.alert.ERROR:
        return [f"error box: {element.alert.body[:200]}"]
    return []


async def open_page(connection, page: str, query: str) -> PageLoad:
    """Ask for a page as a browser opening /page?query does; wait until its script has finished."""
    request = BackMsg()
    request.rerun_script.query_string = query
    request.rerun_script.page_name = page
    started = time.perf_counter()
    await connection.send(request.SerializeToString())
    errors: list[str] = []
    elements: Counter = Counter()
    while True:
        try:
            raw = await asyncio.wait_for(connection.recv(), timeout=LIMIT_S)
        except ConnectionClosed:
            return PageLoad(page, time.perf_counter() - started, errors + ["connection closed"], elements)
        message = ForwardMsg.FromString(raw)
        errors += problems(message)
        if message.WhichOneof("type") == "delta" and message.delta.WhichOneof("type") == "new_element":
            elements[message.delta.new_element.WhichOneof("type")] += 1
        if message.WhichOneof("type") == "script_finished":
            status = message.script_finished
            if status == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                continue  # st.navigation reran the script for the page asked for
            if status != ForwardMsg.FINISHED_SUCCESSFULLY:
                errors.append(f"script finished with status {status}")
            return PageLoad(page, time.perf_counter() - started, errors, elements)


async def student(url: str, i: int, salt: str, delay: float = 0.0, **params) -> list[PageLoad]:
    """One session: the lens page, then the sampling page, with this student's own text (params: more
    URL query parameters)."""
    await asyncio.sleep(delay)
    query = urllib.parse.urlencode({"text": f"{student_text(i)} ({salt})", **params})
    try:
        connection = await connect(url, subprotocols=["streamlit"], max_size=2**30, ping_interval=None)
    except OSError as error:
        return [PageLoad(page, 0.0, [f"could not connect: {error}"]) for page in PAGES]
    loads = []
    try:
        for page in PAGES:
            try:
                loads.append(await open_page(connection, page, query))
            except asyncio.TimeoutError:
                loads.append(PageLoad(page, LIMIT_S, [f"not finished within {LIMIT_S} s"]))
    finally:
        await connection.close()
    return loads


async def classroom(url: str, n: int, salt: str, arrival: float = 0.0, same_text: bool = False) -> list[PageLoad]:
    """n sessions; session i starts at i/n x `arrival` seconds (0: all at once). same_text: all open the
    same link (the teacher's), else each has its own text."""
    sessions = await asyncio.gather(*(student(url, 0 if same_text else i, salt, arrival * i / n) for i in range(n)))
    return [load for loads in sessions for load in loads]


def compute_policy(server_cpus: set[int]) -> str:
    """lmviz.model.compute's policy as the server sees it (its affinity is server_cpus)."""
    from lmviz.model import compute

    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, server_cpus)
    try:
        policy = compute.policy()
    finally:
        os.sched_setaffinity(0, saved)
    return f"{policy['slots']} compute slot(s) x {policy['threads_per_slot']} torch thread(s)"


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--same-text", action="store_true",
                        help="every session opens the same link (default: each its own text)")
    parser.add_argument("--arrival", type=float, default=0.0,
                        help="seconds over which the sessions start, evenly (default 0: all at once)")
    cpus = sorted(os.sched_getaffinity(0))
    parser.add_argument("--server-cpus", default=",".join(map(str, cpus[:-1] or cpus)),
                        help="cores the server runs on (taskset -c); the clients take the others")
    args = parser.parse_args()
    server_cpus = {int(c) for c in args.server_cpus.split(",")}
    client_cpus = set(cpus) - server_cpus or set(cpus)
    os.sched_setaffinity(0, client_cpus)
    port = free_port()
    server = start_server(port, wrapper=["taskset", "-c", args.server_cpus])
    url = f"ws://127.0.0.1:{port}/_stcore/stream"
    memory = PeakMemory(server.pid)
    memory.start()
    print(f"server on cores {sorted(server_cpus)} (pid {server.pid}), clients on {sorted(client_cpus)}; "
          f"compute policy: {compute_policy(server_cpus)}")
    try:
        asyncio.run(classroom(url, 1, "warm-up"))  # loads the model
        alone = {load.page: load.seconds for load in asyncio.run(classroom(url, 1, "alone"))}
        print("one session alone (baseline): " + ", ".join(f"/{page} {s:.2f} s" for page, s in alone.items()))
        for run, n in enumerate(args.sessions):
            cpu_before = cpu_seconds(server.pid)
            started = time.perf_counter()
            loads = asyncio.run(classroom(url, n, f"run {run}", args.arrival, args.same_text))
            wall = time.perf_counter() - started
            server_cpu = cpu_seconds(server.pid) - cpu_before
            times = [load.seconds for load in loads]
            errors = [error for load in loads for error in load.errors]
            p50, p95 = percentile(times, 50), percentile(times, 95)
            per_page = ", ".join(f"/{page} p95 {percentile([l.seconds for l in loads if l.page == page], 95):.2f} s"
                                 for page in PAGES)
            base = statistics.mean(alone.values())
            arrival = f"arriving over {args.arrival:.0f} s" if args.arrival else "all at once"
            arrival += ", one shared text" if args.same_text else ", own texts"
            print(f"N={n:3d} {arrival}: {len(loads)} pages, p50 {p50:6.2f} s  p95 {p95:6.2f} s "
                  f"({p50 / base:.1f}x / {p95 / base:.1f}x a page alone; {per_page}); errors {len(errors)}; "
                  f"all done in {wall:.1f} s; peak server RSS {memory.peak:,.0f} MB; "
                  f"server CPU {server_cpu / n:.2f} s/session")
            for error in errors[:5]:
                print("   ", error)
    finally:
        memory.running = False
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
