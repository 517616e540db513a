"""A class that follows the teacher, in the app (the store is lmviz.app.classroom, without Streamlit).

- The teacher opens `/?class=new`: a class starts, the URL becomes `?teach=KEY` (secret: a reload keeps
  teaching; the key stays in the session too, so the lessons' links, which drop it, keep teaching), and
  every run publishes the teacher's view (page and query string, its `teach`/`present` removed, `class=CODE`
  added). In presenter mode the QR code carries `/?class=CODE` (`join_url`), never the teacher's URL.
- A student opens `/?class=CODE` and is switched to the teacher's view; a fragment in the sidebar polls the
  store every POLL_S seconds and switches again when the class's version changed. "Leave class" stops
  following (the student explores), "Rejoin" jumps to the teacher's current view.

main.py calls `run(page)` right after st.navigation and `published(page)` once the page has run.
"""

from __future__ import annotations

import os
import urllib.parse

import streamlit as st

from lmviz.app import classroom, pages

CLASS, TEACH = "class", "teach"  # URL parameters: the public code (or "new"), the teacher's secret key
TEACHER, STUDENT = "_class_teacher", "_class_student"  # session state; every key of ours starts with "_class"
POLL_S = 1.0  # a student's page follows within about this (plus the new page's run)
NOT_SHARED = (TEACH, CLASS, "present")  # the teacher's own parameters; a student's laptop is not a projector


def run(page: st.Page) -> None:
    """Before the sidebar and the page: start a class (?class=new), publish the teacher's view, or bring a
    student to the teacher's view; then the status line at the top of the sidebar."""
    raw = st.query_params.get(CLASS)
    if raw is not None and raw.strip().lower() == "new":
        code, key = classroom.start()
        st.session_state.pop(STUDENT, None)
        st.session_state[TEACHER] = key
        st.query_params.pop(CLASS, None)
        st.query_params[TEACH] = key
    elif raw is not None and TEACH not in st.query_params:  # a student's link
        code = classroom.normalize(raw)
        state = st.session_state.get(STUDENT)
        st.session_state.pop(TEACHER, None)
        if state is None or state["code"] != code:
            st.session_state[STUDENT] = {"code": code, "following": True, "seen": None}
    if teacher_code() is not None:
        published(page)
        teacher_status()
    elif st.session_state.get(STUDENT) is not None:
        student_run(page)


def teacher_code() -> str | None:
    """The code of the class this session teaches (the URL's key first, else the session's), or None. An
    unknown or expired key is dropped with one line that says so."""
    key = st.query_params.get(TEACH) or st.session_state.get(TEACHER)
    if not key:
        return None
    code = classroom.code_of(key)
    if code is None:
        st.session_state.pop(TEACHER, None)
        st.query_params.pop(TEACH, None)
        st.warning("This class has ended (or expired after 3 hours without a change). Open `/?class=new` to "
                   "start another.", icon="🏫")
        return None
    st.session_state[TEACHER] = key
    st.query_params[TEACH] = key  # after a lesson's link: a reload keeps teaching
    st.query_params.pop(CLASS, None)
    return code


def view_url(page: st.Page, code: str) -> str:
    """What the students open: this page and its query string, the teacher's own parameters removed."""
    params = {key: value for key, value in st.query_params.to_dict().items() if key not in NOT_SHARED}
    return page.url_path + "?" + urllib.parse.urlencode({**params, CLASS: code})


def published(page: st.Page) -> None:
    """A teacher's session: publish the view as it now stands (again once the page has written its settings
    into the URL; adding parameters doesn't move the students again, see classroom.refines)."""
    key = st.session_state.get(TEACHER)
    code = classroom.code_of(key)
    if code is not None:
        classroom.publish(key, view_url(page, code))


def end_class() -> None:
    classroom.end(st.session_state.pop(TEACHER, ""))
    st.query_params.pop(TEACH, None)


def teacher_status() -> None:
    code = classroom.code_of(st.session_state.get(TEACHER))
    with st.sidebar.container(key="class_status"):
        line, button = st.columns([3, 1], vertical_alignment="center")
        line.caption(f"🏫 Teaching class **{code}**: students open `{join_url()}`")
        button.button("End", key="_class_end", type="tertiary", on_click=end_class,
                      help="End the class: its code stops working.")


def student_run(page: st.Page) -> None:
    state = st.session_state[STUDENT]
    now = classroom.current(state["code"])
    if now is None:
        st.session_state.pop(STUDENT, None)
        st.query_params.pop(CLASS, None)
        st.warning(f"There is no class {state['code']} running: it has ended, or the code is mistyped. "
                   f"Ask your teacher for the code.", icon="🏫")
        return
    st.query_params[CLASS] = state["code"]  # a reload stays in the class
    if state["following"] and now[1] != state["seen"]:
        go(state, now, page)
    with st.sidebar.container(key="class_status", gap=None):  # no gap: the empty element takes no room
        if (state["seen"] or 0) % 2:  # each step's poll is another fragment (its id follows its place): see below
            st.empty()
        follow()


def go(state: dict, now: tuple[str, int], page: st.Page | None = None) -> None:
    """Switch this student to the teacher's view `now` (url, version), the remembered settings dropped so
    that the URL's win. Does nothing more when the student already shows it (`page`: the current one)."""
    url, version = now
    state["seen"] = version
    path, _, query = url.partition("?")
    params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    if page is not None and page.url_path == path and classroom.refines(url, current_url(page)):
        return
    for key in list(st.session_state):
        if not str(key).startswith("_class"):
            del st.session_state[key]
    st.switch_page(pages.BY_NAME.get(path or "home", pages.HOME).script, query_params=params)


def current_url(page: st.Page) -> str:
    return page.url_path + "?" + urllib.parse.urlencode(st.query_params.to_dict())


def leave() -> None:
    st.session_state[STUDENT]["following"] = False


def rejoin() -> None:
    st.session_state[STUDENT].update(following=True, seen=None)


@st.fragment(run_every=POLL_S)
def follow() -> None:
    """A student's status line, and every POLL_S seconds: has the teacher moved? Then go there (a full run).

    A poll the browser sent before the switch may reach a busy server after the new page's run has finished
    but before its messages went out; were it a poll of a fragment the new page still has, Streamlit would
    start it at once and drop the rest of that run's messages, leaving the page half drawn (bench/load.py,
    30 followers: 3 to 9 of 30). So the fragment moves one place down on every other step (`student_run`):
    its id changes, and Streamlit ignores the old poll."""
    state = st.session_state.get(STUDENT)
    if state is None:
        return
    now = classroom.current(state["code"])
    if now is None:  # ended or expired: the full run says so, and stops polling
        st.rerun(scope="app")
    if state["following"] and now[1] != state["seen"]:
        go(state, now)
    line, button = st.columns([3, 1], vertical_alignment="center")
    if state["following"]:
        line.caption(f"🏫 Following class **{state['code']}**")
        button.button("Leave", key="_class_leave", type="tertiary", on_click=leave,
                      help="Explore on your own; Rejoin brings you back to the class.")
    else:
        line.caption(f"🏫 Class **{state['code']}**: you are exploring")
        button.button("Rejoin", key="_class_rejoin", type="tertiary", on_click=rejoin,
                      help="Back to the teacher's current step.")


def join_url() -> str | None:
    """In a teacher's session: the address students open, `<server>/?class=CODE` ($LMVIZ_PUBLIC_URL, where
    set, is the server's address as the class reaches it); else None."""
    code = classroom.code_of(st.session_state.get(TEACHER))
    if code is None:
        return None
    base = os.environ.get("LMVIZ_PUBLIC_URL", "").split("?", 1)[0].rstrip("/")
    if not base:
        parts = urllib.parse.urlsplit(st.context.url or "http://localhost:8501")
        path = parts.path.rstrip("/")
        last = path.rsplit("/", 1)[-1]
        if last in pages.BY_NAME and last != "home":
            path = path[: -len(last) - 1]
        base = f"{parts.scheme}://{parts.netloc}{path}"
    return f"{base}/?{CLASS}={code}"


def share_caption() -> str | None:
    """The QR code's caption while a class runs."""
    code = classroom.code_of(st.session_state.get(TEACHER))
    return None if code is None else f"Scan to join class {code}"
