"""Streamlit glue shared by the pages: the sidebar, the current model and text, errors, URLs.

Pages call `ui.current_model()` and `ui.current_text()`; both stop the page
with a clear message (never a traceback) when something is wrong, and leave
what the user typed where it was.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import streamlit as st

from lmviz import compute, lessons, models
from lmviz.errors import LmvizError
from lmviz.placement import tolerance_note
from lmviz.plots import standalone_html

DEFAULT_TEXT = "This weekend I plan to"
OTHER_MODEL = "Other (type a name or folder)…"
MAX_CHARS = int(os.environ.get("LMVIZ_MAX_CHARS", "20000"))
compute.configure_threads(server=True)  # the server shares its cores between compute slots (lmviz.compute)


def init_from_url(key: str, default, cast=str) -> None:
    """Give widget `key` its first value from the URL (?key=...), else `default`."""
    if key in st.session_state:
        return
    raw = st.query_params.get(key)
    try:
        st.session_state[key] = cast(raw) if raw is not None else default
    except (TypeError, ValueError):
        st.session_state[key] = default


def init_settings(settings: dict) -> None:
    """init_from_url for every `key: (default, parser)` of a page's settings table."""
    for key, (default, parse) in settings.items():
        init_from_url(key, default, parse)


def in_range(cast, low, high):
    """A URL value parser that rejects values outside a widget's range (the default is used then)."""

    def parse(raw):
        value = cast(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value

    return parse


def one_of(choices):
    """A URL value parser that accepts only the given choices."""

    def parse(raw):
        if raw not in choices:
            raise ValueError(raw)
        return raw

    return parse


def int_pair(raw: str) -> tuple[int, int]:
    """A URL value parser for a range slider's value, "(3, 27)"."""
    low, high = (int(part) for part in raw.strip("()[] ").split(","))
    return (low, high)


def flag(raw: str) -> bool:
    """A URL value parser for booleans ("true"/"1"/"yes")."""
    return raw.lower() in ("true", "1", "yes")


def sync_to_url(*keys: str) -> None:
    """Write the current values of these widgets into the URL, so the view can be shared."""
    for key in keys:
        if key in st.session_state:
            st.query_params[key] = str(st.session_state[key])


def sidebar():
    """Model picker, text box and presenter toggle, shared by every page (they live in the entry script).
    In presenter mode it returns an empty slot at the top of the page for `show_share_code`, else None."""
    lesson = current_lesson()
    if lesson is not None:
        open_step(*lesson)
    init_from_url("text", DEFAULT_TEXT)
    init_from_url("present", False, flag)
    url_model = st.query_params.get("model")
    if "model_choice" not in st.session_state:
        if url_model and url_model not in models.EMBEDDED:
            st.session_state.model_choice, st.session_state.model_other = OTHER_MODEL, url_model
        else:
            st.session_state.model_choice = url_model or models.DEFAULT_MODEL
    with st.sidebar:
        st.title("🔬 lmviz")
        st.selectbox(
            "Model", list(models.EMBEDDED) + [OTHER_MODEL], key="model_choice",
            help="Embedded models work offline. Other names load from a local folder or, where the "
            "network allows, the Hugging Face hub (safetensors only, no remote code).",
        )
        if st.session_state.model_choice == OTHER_MODEL:
            st.text_input("Model name or folder", key="model_other", placeholder="e.g. ./my-gpt2")
        st.text_area("Text", key="text", height=140, max_chars=MAX_CHARS)
        st.toggle("Presenter mode", key="present",
                  help="For a projector: larger type, the sidebar folded away, and a QR code of this view "
                  "so that a class can open it too. Also ?present=1 in the URL.")
        if lesson is not None:
            lesson_progress(*lesson)
    st.query_params["model"] = model_name()
    st.query_params["text"] = st.session_state.text
    if lesson is not None:
        lesson_panel(*lesson)
    if not presenting():
        st.query_params.pop("present", None)
        return None
    st.query_params["present"] = "1"
    st.html(PRESENTER_CSS)
    return st.empty()


def current_lesson() -> tuple[lessons.Lesson, int] | None:
    """The lesson and step (from 1) that the URL names (?lesson=…&step=…), if any."""
    lesson = lessons.find(st.query_params.get("lesson"))
    if lesson is None:
        return None
    try:
        return lesson, lessons.check_step(lesson, st.query_params.get("step"))
    except LmvizError:
        return lesson, 1


def open_step(lesson: lessons.Lesson, index: int) -> None:
    """On arriving at a step, let its settings (in the URL) win over the widgets' remembered values."""
    if st.session_state.get("_lesson_at") == (lesson.id, index):
        return
    for key in lesson.steps[index - 1].params:
        st.session_state.pop(key, None)  # the page's init_from_url reads it from the URL again
    st.session_state["_lesson_at"] = (lesson.id, index)


def lesson_progress(lesson: lessons.Lesson, index: int) -> None:
    """In the sidebar: the lesson's steps, the current one marked, each a link."""
    st.divider()
    st.markdown(f"**Lesson: {lesson.title}**")
    st.progress(index / len(lesson.steps), text=f"Step {index} of {len(lesson.steps)}")
    for number, step in enumerate(lesson.steps, start=1):
        st.page_link(step.page, label=f"{number}. {step.title}", icon="▶️" if number == index else None,
                     query_params=step_query(lesson, number), disabled=number == index)


def step_query(lesson: lessons.Lesson, number: int) -> dict[str, str]:
    """A step's link keeps the sidebar's model and text."""
    return {"model": model_name(), "text": st.session_state.get("text", DEFAULT_TEXT),
            **lessons.step_params(lesson, number)}


def lesson_panel(lesson: lessons.Lesson, index: int) -> None:
    """Above the page: what this step teaches, and the way to the previous and next steps."""
    step = lesson.steps[index - 1]
    with st.container(border=True):
        st.markdown(f"**{lesson.title}** · step {index} of {len(lesson.steps)}: **{step.title}**")
        st.markdown(step.text)
        if step.needs != "causal":
            st.caption(f"This step needs a {step.needs} model: pick one in the sidebar (e.g. antiberty).")
        back, _, forward = st.columns([1, 3, 1])
        if index > 1:
            back.page_link(lesson.steps[index - 2].page, label="← Previous", query_params=step_query(lesson, index - 1))
        if index < len(lesson.steps):
            forward.page_link(lesson.steps[index].page, label="Next →", query_params=step_query(lesson, index + 1))


PRESENTER_CSS = """<style>
html { font-size: 21px !important; }  /* Streamlit sizes its text in rem: everything grows with it */
[data-testid="stMainBlockContainer"] { max-width: 100%; padding: 1.5rem 2rem 2rem 2rem; }
[data-testid="stMain"] h1 { font-size: 2.4rem; }
</style>"""


def presenting() -> bool:
    """Presenter mode: the sidebar toggle, or ?present=1 in a shared link."""
    return bool(st.session_state.get("present", False))


def share_url() -> str:
    """The URL of this view, settings included: $LMVIZ_PUBLIC_URL (e.g. http://192.168.1.20:8501, what the
    class can reach) replaces the address the presenter's own browser used (often localhost)."""
    import urllib.parse

    base = os.environ.get("LMVIZ_PUBLIC_URL") or st.context.url or "http://localhost:8501"
    base = base.split("?", 1)[0]
    if os.environ.get("LMVIZ_PUBLIC_URL") and st.context.url:  # keep the page's path
        path = urllib.parse.urlsplit(st.context.url.split("?", 1)[0]).path
        base = base.rstrip("/") + path
    return base + "?" + urllib.parse.urlencode(st.query_params.to_dict())


def qr_png(url: str) -> bytes:
    """A QR code of `url` as PNG bytes, made here (segno, pure Python), without any network service."""
    import io

    import segno

    out = io.BytesIO()
    segno.make(url, error="m").save(out, kind="png", scale=6, border=2, dark="#212529")
    return out.getvalue()


def show_share_code(slot) -> None:
    """In presenter mode, after the page has run: in `slot` (from sidebar()), a QR code of the URL of
    the view as it now stands, settings included."""
    if slot is None:
        return
    url = share_url()
    with slot.container():
        _, right = st.columns([5, 1])
        right.image(qr_png(url), caption="Scan to open this view", width=240)


def model_name() -> str:
    choice = st.session_state.get("model_choice", models.DEFAULT_MODEL)
    if choice == OTHER_MODEL:
        return (st.session_state.get("model_other") or "").strip()
    return choice


def current_model(kinds: tuple[str, ...] = models.KINDS) -> models.LoadedModel:
    """The sidebar's model, loaded once per process; progress is shown while it loads."""
    name = model_name()
    if not name:
        st.info("Type a model name or folder in the sidebar.")
        st.stop()
    lm = load_with_progress(name)
    show_placement(lm)
    if lm.kind not in kinds:
        st.warning(
            f"{lm.name} is a {lm.kind} model; this page needs a {' or '.join(kinds)} model. "
            f"Pick another one in the sidebar (e.g. {models.DEFAULT_MODEL}).", icon="⚠️",
        )
        st.stop()
    return lm


def show_placement(lm: models.LoadedModel) -> None:
    """Under the model picker: device, dtype (and why), memory, and what a low-precision dtype costs."""
    where = lm.placement
    device = "device_map=auto" if where.device_map else str(lm.device)
    st.sidebar.caption(f"**{where.dtype_name}** on **{device}**, {lm.memory_bytes / 2**20:,.0f} MB of weights "
                       f"({where.reason}; set `LMVIZ_DTYPE`, `LMVIZ_DEVICE`).")
    note = tolerance_note(where.dtype)
    if note:
        st.sidebar.warning(note, icon="🎚️")


def load_with_progress(name: str) -> models.LoadedModel:
    """models.load with its progress shown in a status box; a problem stops the page with a message."""
    try:
        if name in models.loaded_names():
            return models.load(name)
        with st.status(f"Loading {name} …", expanded=True) as status:
            lm = models.load(name, progress=status.write)
            status.update(label=f"Loaded {name}", state="complete", expanded=False)
            return lm
    except LmvizError as error:
        st.error(str(error), icon="🚫")
        st.stop()


def current_text() -> str:
    """The sidebar's text; stops the page with a hint when it is empty."""
    text = st.session_state.get("text", "")
    if not text.strip():
        st.info("Type a text in the sidebar to analyse it.")
        st.stop()
    return text


def controls():
    """Where a page puts its row of settings: folded into "Settings" in presenter mode, else on the page."""
    return st.expander("Settings", expanded=False, icon="⚙️") if presenting() else st.container()


def chart(figure, name: str, where=None, key: str | None = None, clickable: bool = False) -> None:
    """A plotly chart with its exports: PNG (twice the size) from the chart's camera button, drawn by
    plotly.js in the browser, so no server-side renderer is needed; and "⬇ HTML", the figure as one file
    that works offline (built only when clicked). `where`: a column or container (default: the page).
    clickable=True: a click selects a point, which `clicked(key)` reads on the next run."""
    where = where or st
    if presenting():  # a projector: larger type and taller figures
        figure.update_layout(font_size=22, hoverlabel_font_size=22, margin_t=(figure.layout.margin.t or 60) + 40,
                             height=int((figure.layout.height or 450) * 1.25))  # room for the larger title
        for trace in figure.data:  # text drawn inside the figure (heatmap cells, tree labels) grows too
            if getattr(trace, "textfont", None) is not None and trace.textfont.size:
                trace.textfont.size = round(trace.textfont.size * 1.3)
    where.plotly_chart(figure, width="stretch", key=key, config={
        "displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2, "filename": name}},
        **({"on_select": "rerun", "selection_mode": "points"} if clickable else {}))
    where.download_button("⬇ HTML", lambda: standalone_html(figure).encode("utf-8"), file_name=f"{name}.html",
                          mime="text/html", on_click="ignore", key=f"html_{key or name}",
                          help="This chart as one HTML file: interactive, works offline (plotly.js inside).")


def clicked(key: str):
    """The `customdata` of the point last clicked in the clickable chart `key`, once: None when nothing new was
    clicked since the last call. Read it before the widgets it sets are drawn."""
    state = st.session_state.get(key)
    points = (state or {}).get("selection", {}).get("points", []) if state else []
    data = points[0].get("customdata") if points else None
    seen = f"_{key}_seen"
    if data is None:
        st.session_state.pop(seen, None)
        return None
    if st.session_state.get(seen) == data:
        return None
    st.session_state[seen] = data
    return data


@contextmanager
def user_errors(stop: bool = True):
    """Show an LmvizError raised inside the block as a message; then stop the page, or with
    stop=False go on with the next section."""
    try:
        yield
    except LmvizError as error:
        st.error(str(error), icon="🚫")
        if stop:
            st.stop()
