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

Scenario "followers" (--followers N): a class follows its teacher (lmviz.app.classroom). A teacher session
opens /?class=new, then a lesson step (with its teacher key, as its own reload would); N follower sessions
open /?class=CODE and are switched to that step. Then the teacher opens the next step, which publishes it
at the start of the teacher's run; each follower's fragment (st.fragment(run_every=...)) notices within its
interval and switches page. Printed: each follower's time from the teacher's request (an upper bound of the
time from the publish) to its page showing the new step (the lesson panel's line), and to the page
complete; errors. A browser reruns a fragment with run_every from its own timer: so does this client (it
reads the AutoRerun message, fragment id and interval, and sends `rerun_script` with that fragment id,
is_auto_rerun, and the page and query string it last saw, as the frontend does).

    .venv/bin/python bench/load.py --followers 30                          # lesson logits, step 2 -> 3
    .venv/bin/python bench/load.py --followers 30 --lesson why --step 1    # attention, step 1 -> 2
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


async def open_page(connection, page: str, query: str, seen: dict | None = None) -> PageLoad:
    """Ask for a page as a browser opening /page?query does; wait until its script has finished. seen: gets
    the URL's query string as the server last set it ("query") and the markdown drawn ("markdown")."""
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
        if seen is not None:
            if message.WhichOneof("type") == "delta":
                seen.setdefault("first_delta", time.perf_counter())
            if message.WhichOneof("type") == "page_info_changed":
                seen["query"] = message.page_info_changed.query_string
            if message.WhichOneof("type") == "delta" and message.delta.new_element.WhichOneof("type") == "markdown":
                seen.setdefault("markdown", []).append(message.delta.new_element.markdown.body)
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


# ---------------------------------------------------------------- a class follows its teacher

@dataclass
class Follower:
    """One follower session as this client sees it: the page and query string the server last set (what a
    browser would send again), its fragments' timers, and when each lesson step's line first showed."""

    index: int
    page_hash: str = ""
    query: str = ""
    timers: dict = field(default_factory=dict)  # fragment id -> (interval, asyncio task)
    shown: dict = field(default_factory=dict)  # marker -> perf_counter() when a markdown with it arrived
    complete: dict = field(default_factory=dict)  # marker -> perf_counter() at the script run's end after it
    errors: list = field(default_factory=list)
    fragment_runs: int = 0
    statuses: list = field(default_factory=list)  # every script_finished status, in order


def step_marker(lesson, index: int) -> str:
    """What the lesson panel's markdown says on step `index` (lmviz.app.ui.lesson_panel)."""
    return f"{index}/{len(lesson.steps)}: **{lesson.steps[index - 1].title}**"


async def fragment_timer(connection, follower: Follower, fragment_id: str, interval: float) -> None:
    """What the frontend does for an AutoRerun message: every `interval` s, rerun that fragment."""
    while True:
        await asyncio.sleep(interval)
        request = BackMsg()
        request.rerun_script.query_string = follower.query
        request.rerun_script.page_script_hash = follower.page_hash
        request.rerun_script.fragment_id = fragment_id
        request.rerun_script.is_auto_rerun = True
        follower.fragment_runs += 1
        try:
            await connection.send(request.SerializeToString())
        except ConnectionClosed:
            return


async def follow_class(url: str, code: str, follower: Follower, markers: list[str], stop: asyncio.Event) -> None:
    """A student's session: open /?class=CODE, then read everything the server sends until `stop`, rerunning
    the fragments as a browser does, and note when each marker shows and its page is complete."""
    try:
        connection = await connect(url, subprotocols=["streamlit"], max_size=2**30, ping_interval=None)
    except OSError as error:
        follower.errors.append(f"could not connect: {error}")
        return
    request = BackMsg()
    request.rerun_script.query_string = f"class={code}"
    request.rerun_script.page_name = ""
    follower.query = request.rerun_script.query_string
    await connection.send(request.SerializeToString())
    pending: set[str] = set()  # markers shown whose run has not finished yet
    try:
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(connection.recv(), timeout=0.5)
            except asyncio.TimeoutError:
                continue
            message = ForwardMsg.FromString(raw)
            kind = message.WhichOneof("type")
            follower.errors += problems(message)
            if kind == "new_session":
                follower.page_hash = message.new_session.page_script_hash
            elif kind == "page_info_changed":
                follower.query = message.page_info_changed.query_string
            elif kind == "auto_rerun":
                fragment_id, interval = message.auto_rerun.fragment_id, message.auto_rerun.interval
                if follower.timers.get(fragment_id, (None,))[0] != interval:
                    if fragment_id in follower.timers:
                        follower.timers[fragment_id][1].cancel()
                    follower.timers[fragment_id] = (interval, asyncio.create_task(
                        fragment_timer(connection, follower, fragment_id, interval)))
            elif kind == "stop_auto_rerun":
                for fragment_id in message.stop_auto_rerun.fragment_ids:
                    if fragment_id in follower.timers:
                        follower.timers.pop(fragment_id)[1].cancel()
            elif kind == "delta" and message.delta.new_element.WhichOneof("type") == "markdown":
                body = message.delta.new_element.markdown.body
                for marker in markers:
                    if marker in body:
                        follower.shown.setdefault(marker, time.perf_counter())
                        pending.add(marker)  # complete when a run that shows it finishes
            elif kind == "script_finished":
                follower.statuses.append(message.script_finished)
            if kind == "script_finished" and message.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
                for marker in pending:
                    follower.complete.setdefault(marker, time.perf_counter())
                pending.clear()
    except ConnectionClosed:
        follower.errors.append("connection closed")
    finally:
        for _, task in follower.timers.values():
            task.cancel()
        await connection.close()


async def wait_until(condition, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def followers(url: str, n: int, lesson_id: str = "logits", first: int = 2, server_pid: int = 0) -> dict:
    """The teacher on step `first` of a lesson, n followers there, the teacher moves to the next step: each
    follower's seconds from the teacher's request to the step shown / its page complete, and the errors."""
    import re

    from lmviz.app import lessons

    lesson = lessons.find(lesson_id)
    before, after = step_marker(lesson, first), step_marker(lesson, first + 1)
    teacher = await connect(url, subprotocols=["streamlit"], max_size=2**30, ping_interval=None)
    errors: list[str] = []
    try:
        seen: dict = {}
        errors += (await open_page(teacher, "", "class=new", seen)).errors
        key = urllib.parse.parse_qs(seen["query"])["teach"][0]
        code = next(match.group(1) for body in seen.get("markdown", [])
                    if (match := re.search(r"Teaching class \*\*(\w+)\*\*", body)))

        def teacher_opens(index: int, seen: dict | None = None):
            query = urllib.parse.urlencode({**lessons.step_params(lesson, index), "teach": key})
            return open_page(teacher, lesson.steps[index - 1].page.url_path, query, seen)

        errors += (await teacher_opens(first)).errors
        stop = asyncio.Event()
        class_ = [Follower(i) for i in range(n)]
        tasks = [asyncio.create_task(follow_class(url, code, f, [before, after], stop)) for f in class_]
        joined = time.perf_counter()
        all_there = await wait_until(lambda: all(before in f.complete or f.errors for f in class_), 60)
        join_s = [f.complete[before] - joined for f in class_ if before in f.complete]
        idle_cpu = cpu_seconds(server_pid) if server_pid else 0.0
        await asyncio.sleep(3)  # every follower's fragment ticking, nothing else running
        idle_cpu = ((cpu_seconds(server_pid) if server_pid else 0.0) - idle_cpu) / 3
        moved = time.perf_counter()
        teacher_seen: dict = {}
        teacher_run = await teacher_opens(first + 1, teacher_seen)
        errors += teacher_run.errors
        await wait_until(lambda: all(after in f.complete or f.errors for f in class_), 60)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        await teacher.close()
    errors += [f"follower {f.index}: {error}" for f in class_ for error in f.errors]
    errors += [] if all_there else [f"follower {f.index} did not join within 60 s (its runs ended "
                                    f"{[ForwardMsg.ScriptFinishedStatus.Name(x) for x in f.statuses[-6:]]}, the last 6)"
                                    for f in class_ if before not in f.complete and not f.errors]
    errors += [f"follower {f.index} did not show the new step within 60 s" for f in class_ if after not in f.shown]
    errors += [f"follower {f.index} did not finish the new step's page within 60 s (its runs ended "
               f"{[ForwardMsg.ScriptFinishedStatus.Name(x) for x in f.statuses[-6:]]}, the last 6)"
               for f in class_ if after in f.shown and after not in f.complete]
    return {"shown": [f.shown[after] - moved for f in class_ if after in f.shown],
            "complete": [f.complete[after] - moved for f in class_ if after in f.complete],
            "join": join_s, "teacher_s": teacher_run.seconds, "errors": errors, "idle_cpu": idle_cpu,
            "teacher_first_s": teacher_seen.get("first_delta", float("nan")) - moved,
            "fragment_runs": sum(f.fragment_runs for f in class_), "code": code}


def report_followers(url: str, n: int, memory: "PeakMemory", server_pid: int, lesson_id: str, first: int) -> None:
    cpu_before = cpu_seconds(server_pid)
    started = time.perf_counter()
    result = asyncio.run(followers(url, n, lesson_id, first, server_pid=server_pid))
    wall = time.perf_counter() - started
    shown, complete = result["shown"], result["complete"]
    line = (f"followers N={n} (class {result['code']}): new step shown p50 {percentile(shown, 50):.2f} s "
            f"p95 {percentile(shown, 95):.2f} s max {max(shown):.2f} s; page complete p50 "
            f"{percentile(complete, 50):.2f} s p95 {percentile(complete, 95):.2f} s"
            if shown and complete else f"followers N={n}: no follower moved")
    print(f"{line}; errors {len(result['errors'])}; teacher's own run {result['teacher_s']:.2f} s; "
          f"(first element after {result['teacher_first_s']:.2f} s); server CPU while following: "
          f"{result['idle_cpu']:.2f} core; {len(complete)}/{n} pages complete; joining p95 {percentile(result['join'], 95) if result['join'] else float('nan'):.2f} s; "
          f"{result['fragment_runs']} fragment reruns sent; {wall:.1f} s in all; peak server RSS "
          f"{memory.peak:,.0f} MB; server CPU {cpu_seconds(server_pid) - cpu_before:.1f} s")
    print(f"    shown by {len(shown)}/{n}, at (s): " + " ".join(f"{t:.2f}" for t in sorted(shown)))
    for error in result["errors"][:5]:
        print("   ", error)


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
    parser.add_argument("--followers", type=int, nargs="*", default=None,
                        help="the followers scenario instead: N sessions follow a teacher (default 30)")
    parser.add_argument("--lesson", default="logits", help="followers: the lesson (default logits)")
    parser.add_argument("--step", type=int, default=2, help="followers: the teacher moves from this step to the next")
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
        if args.followers is not None:
            for n in args.followers or [30]:
                report_followers(url, n, memory, server.pid, args.lesson, args.step)
            return
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
