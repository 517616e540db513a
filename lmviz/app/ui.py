"""Streamlit glue shared by the pages: the sidebar, the current model and text, errors, URLs.

Pages call `ui.current_model()` and `ui.current_text()`; both stop the page
with a clear message (never a traceback) when something is wrong, and leave
what the user typed where it was.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import plotly.graph_objects as go
import streamlit as st

from lmviz.model import compute, models
from lmviz.app import classroom_ui, lessons, pages
from lmviz.app.settings import LAST, Setting, Sidebar
from lmviz.errors import LmvizError
from lmviz.forward.cache import CACHE, cached, fingerprint
from lmviz.model.placement import tolerance_note
from lmviz.present.plots import standalone_html

OTHER_MODEL = "Other (type a name or folder)…"
MAX_CHARS = int(os.environ.get("LMVIZ_MAX_CHARS", "20000"))
compute.configure_threads(server=True)  # the server shares its cores between compute slots (lmviz.model.compute)


def init(setting: Setting, default=None, high: float | None = None) -> None:
    """Give the widget of `setting` its first value: from the URL (?key=...), else `default` (else the
    setting's own; LAST is `high`, the page's limit on this text or model). A remembered value above
    `high` (another text or model) goes back to the default."""
    default = setting.default if default is None else default
    default = high if default is LAST else default
    if setting.key in st.session_state:  # what the user set stays, unless this text or model has no room for it
        if high is not None and not setting.allows(st.session_state[setting.key], high):
            st.session_state[setting.key] = default
        return
    raw = st.query_params.get(setting.key)
    try:
        st.session_state[setting.key] = setting.parse(raw, high) if raw is not None else default
    except (TypeError, ValueError):
        st.session_state[setting.key] = default


def window(setting: Setting, n_positions: int, shown: int, most: int) -> tuple[int, int, bool]:
    """The positions a range slider `setting` over a text of `n_positions` shows: from the URL, else the last
    `shown`; kept inside the text. Returns (first, last, clipped): at most the last `most` of the slider's
    range, clipped=True when it was wider."""
    init(setting, (max(0, n_positions - shown), n_positions - 1))
    low, high = (min(max(0, int(v)), n_positions - 1) for v in st.session_state[setting.key])
    low, high = min(low, high), max(low, high)
    st.session_state[setting.key] = (low, high)
    return max(low, high - most + 1), high, high - low + 1 > most


def value(setting: Setting):
    """The current value of a setting's widget."""
    return st.session_state[setting.key]


def sync(*settings: Setting) -> None:
    """Write these settings' current values into the URL, so the view can be shared."""
    for setting in settings:
        if setting.key in st.session_state:
            st.query_params[setting.key] = setting.text(st.session_state[setting.key])


def open_with(page: pages.Page, values: dict[Setting, object]) -> None:
    """Go to another page with these settings, e.g. the lens opening attribution on one cell."""
    for setting in values:
        st.session_state.pop(setting.key, None)  # the page's init reads it from the URL again
    st.switch_page(page.script, query_params={setting.key: setting.text(value)
                                                     for setting, value in values.items()})


def sidebar():
    """Model picker, text box and presenter toggle, shared by every page (they live in the entry script), and
    a lesson step's panel. Returns the slots that `after_page` fills once the page has run."""
    lesson = current_lesson()
    if lesson is not None:
        open_step(*lesson)
    init(Sidebar.TEXT)
    init(Sidebar.PRESENT)
    url_model = st.query_params.get("model")
    if "model_choice" not in st.session_state:
        if url_model and url_model not in models.offline_names():
            st.session_state.model_choice, st.session_state.model_other = OTHER_MODEL, url_model
        else:
            st.session_state.model_choice = url_model or models.DEFAULT_MODEL
    with st.sidebar:
        st.title("🔬 lmviz")
        st.selectbox(
            "Model", models.offline_names() + [OTHER_MODEL], key="model_choice",
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
    slots = AfterPage(lesson=lesson)
    if not presenting():
        st.query_params.pop("present", None)
        if lesson is not None:
            slots.claim = lesson_panel(*lesson)
        return slots
    st.query_params["present"] = "1"
    st.html(PRESENTER_CSS)
    side = st.container(key="presenter_side")  # a column fixed at the right (PRESENTER_CSS): the page keeps
    slots.share = side.empty()  # the height of the screen for its figures; the QR code on top,
    if lesson is not None:
        with side:
            slots.claim = lesson_panel(*lesson)  # the lesson's step below it
    return slots


@dataclass
class AfterPage:
    """What the frame around a page fills in once the page has run (and its model is loaded)."""

    lesson: tuple | None = None  # (lesson, step) the URL names
    claim: object | None = None  # the slot for the step's claim
    share: object | None = None  # presenter mode: the slot for the QR code


def after_page(slots: AfterPage) -> None:
    if slots.claim is not None:
        show_claim(*slots.lesson, slots.claim)
    show_share_code(slots.share)


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
    """On arriving at a step, let its example and settings (in the URL) win over the remembered ones."""
    if st.session_state.get("_lesson_at") == (lesson.id, index):
        return
    forget_step_settings(lesson, index)
    st.session_state["_lesson_at"] = (lesson.id, index)


def forget_step_settings(lesson: lessons.Lesson, index: int) -> None:
    """Drop the widgets' values that step `index` sets, so that the sidebar and the page read them from the URL."""
    for key in [Sidebar.TEXT.key, "model_choice", "model_other",
                *(setting.key for setting in lesson.steps[index - 1].params)]:
        st.session_state.pop(key, None)


def back_to_example(lesson: lessons.Lesson, index: int) -> None:
    """Button callback: the step's own text, model and settings again, after the student changed them."""
    forget_step_settings(lesson, index)
    st.query_params.from_dict({**st.query_params.to_dict(), **step_query(lesson, index)})


def model_for(step: lessons.Step) -> str:
    """The model a step opens with: its own, else the sidebar's if it is of the kind the step needs (or not
    loaded yet), else the default."""
    if step.model:
        return step.model
    name = model_name()
    return name if models.known_kind(name) in (None, step.needs) else models.DEFAULT_MODEL


def lesson_progress(lesson: lessons.Lesson, index: int) -> None:
    """In the sidebar: the lesson's steps, the current one marked, each a link."""
    st.divider()
    st.markdown(f"**Lesson: {lesson.title}**")
    st.progress(index / len(lesson.steps), text=f"Step {index} of {len(lesson.steps)}")
    for number, step in enumerate(lesson.steps, start=1):
        st.page_link(step.page.script, label=f"{number}. {step.title}",
                     icon="▶️" if number == index else None,
                     query_params=step_query(lesson, number), disabled=number == index)


def step_query(lesson: lessons.Lesson, number: int) -> dict[str, str]:
    """A step's link: its example, settings and model (see model_for), and presenter mode if it is on."""
    return {**lessons.step_params(lesson, number), "model": model_for(lesson.steps[number - 1]),
            **({"present": "1"} if presenting() else {})}


def lesson_panel(lesson: lessons.Lesson, index: int):
    """Above the page: what this step teaches, the way to the previous and next steps, and a slot for the
    step's claim (filled by `show_claim` once the page has run)."""
    step = lesson.steps[index - 1]
    with st.container(border=True, key="lesson_panel"):
        heading = f"**{lesson.title}** · {index}/{len(lesson.steps)}: **{step.title}** — {step.text}"
        if presenting():  # in the narrow column at the right: the links in a row below the text
            st.markdown(heading)
            back, forward = st.columns(2)
        else:
            text, forward = st.columns([6, 1], vertical_alignment="center")
            text.markdown(heading)
            back = forward
        if index < len(lesson.steps):
            forward.page_link(lesson.steps[index].page.script, label="Next →",
                              query_params=step_query(lesson, index + 1))
        if index > 1:
            back.page_link(lesson.steps[index - 2].page.script, label="← Previous",
                           query_params=step_query(lesson, index - 1))
        kind = models.known_kind(model_name())
        if kind is not None and kind != step.needs:
            wanted = model_for(step)
            line, button = (st, st) if presenting() else st.columns([5, 1], vertical_alignment="center")
            line.warning(f"This step needs a {step.needs} model; {model_name()} is a {kind} model.", icon="🔁")
            button.button(f"Switch to {wanted}", on_click=st.session_state.update, args=({"model_choice": wanted},))
        changed = st.session_state.get(Sidebar.TEXT.key) != lessons.example(lesson, index) or any(
            st.session_state.get(setting.key, value) != value for setting, value in step.params.items()
            if value is not LAST)
        if changed:
            st.button("↩ Back to the lesson's example", on_click=back_to_example, args=(lesson, index))
        return st.empty() if step.claim is not None and not changed and kind in (None, step.needs) else None


def show_claim(lesson: lessons.Lesson, index: int, slot) -> None:
    """In the panel's slot, after the page has run (the model is loaded, its passes cached): whether the
    step's claim holds on this model and text, with the numbers."""
    step = lesson.steps[index - 1]
    lm = models.load(model_name()) if model_name() in models.loaded_names() else None
    if slot is None or lm is None or lm.kind != step.needs:
        return
    try:
        example = lessons.example(lesson, index)  # a claim is a function of the model and the example: kept
        claim = cached("lesson claim", lm, (lesson.id, index, example), lambda: step.claim(lm, example))
    except LmvizError as error:
        slot.warning(f"The step's claim could not be checked on {lm.name}: {error}", icon="⚠️")
        return
    if claim.holds:
        slot.success(f"On {lm.name}: {claim.text}.", icon="✅")
    else:
        slot.warning(f"What this step says does not hold on {lm.name}: {claim.text}.", icon="⚠️")


PRESENTER_CSS = """<style>
html { font-size: 21px !important; }  /* Streamlit sizes its text in rem: everything grows with it */
/* the first screen is for the figure: a low header bar, compact titles (pages draw no caption under them) */
[data-testid="stHeader"] { height: 2.5rem; min-height: 2.5rem; }
[data-testid="stMainBlockContainer"] { max-width: 100%; padding: 2.6rem 2rem 2rem 2rem; }
[data-testid="stMain"] h1 { font-size: 1.8rem; padding: 0 0 0.2rem 0; }
[data-testid="stMain"] h2 { font-size: 1.5rem; padding: 0.3rem 0 0.1rem 0; }  /* a section's header, below the title */
[data-testid="stMain"] h3 { font-size: 1.25rem; padding: 0.3rem 0 0.1rem 0; }
/* a column fixed at the right: the QR code, then the lesson's step; the page keeps the rest of the width */
.st-key-presenter_side { position: fixed; top: 0.5rem; right: 0.75rem; z-index: 999990; width: fit-content !important;
                         max-height: calc(100vh - 1rem); overflow-y: auto; gap: 0.5rem; }
.st-key-presenter_side:has(.st-key-lesson_panel) { width: clamp(14rem, 24vw, 22rem) !important; }
[data-testid="stMainBlockContainer"]:has(.st-key-presenter_side) { padding-right: 200px; }
[data-testid="stMainBlockContainer"]:has(.st-key-lesson_panel) {
  padding-right: calc(clamp(14rem, 24vw, 22rem) + 1.5rem); }
.st-key-lesson_panel { background: white; font-size: 0.8rem; }
.st-key-lesson_panel p { font-size: 0.8rem; }
.st-key-share_code { width: fit-content !important; margin: 0 auto; background: white; padding: 4px; border-radius: 6px;
                     box-shadow: 0 1px 6px rgba(0,0,0,.25); }
.st-key-share_code [data-testid="stCaptionContainer"] { font-size: 0.6rem; text-align: center; }
</style>"""


def presenting() -> bool:
    """Presenter mode: the sidebar toggle, or ?present=1 in a shared link."""
    return bool(st.session_state.get("present", False))


def share_url() -> str:
    """The URL of this view, settings included: $LMVIZ_PUBLIC_URL (e.g. http://192.168.1.20:8501, what the
    class can reach) replaces the address the presenter's own browser used (often localhost)."""
    import urllib.parse

    if classroom_ui.join_url():  # a class runs: the code lets students join, never shows the teacher's key
        return classroom_ui.join_url()
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
    segno.make(url, error="m").save(out, kind="png", scale=2, border=2, dark="#212529")
    return out.getvalue()


def show_share_code(slot) -> None:
    """In presenter mode, after the page has run: in `slot` (from sidebar()), a QR code of the URL of
    the view as it now stands, settings included. It sits in the top right corner (PRESENTER_CSS), over
    the page, so that it costs the figures no room."""
    if slot is None:
        return
    with slot.container(key="share_code"):
        st.image(qr_png(share_url()), caption=classroom_ui.share_caption() or "Scan to open this view")  # its own size: Streamlit would resample it


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
        slot = st.empty()
        with slot.status(f"Loading {name} …", expanded=True) as status:
            lm = models.load(name, progress=status.write)
            status.update(label=f"Loaded {name}", state="complete", expanded=False)
        if presenting():  # on a projector the figure needs the room; the sidebar names the model
            slot.empty()
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


def title(text: str, caption: str | None = None) -> None:
    """A page's title and the caption that says what the page shows; in presenter mode the title only (the
    presenter says the rest, and the first screen is for the figure)."""
    st.title(text)
    if caption and not presenting():
        st.caption(caption)


def controls():
    """Where a page puts its row of settings: folded into "Settings" in presenter mode, else on the page."""
    return st.expander("Settings", expanded=False, icon="⚙️") if presenting() else st.container()


SCREEN_TOP = 3.5  # rem: a chart that is not the first screen's fits in the window below the header bar


@dataclass(frozen=True)
class Drawing:
    """A figure not built yet: `build(*args, **kwargs)`, a function of lmviz.present.plots (see `figure`)."""

    build: Callable[..., go.Figure]
    args: tuple
    kwargs: dict


def figure(build: Callable[..., go.Figure], *args, **kwargs) -> Drawing:
    """What a page hands to `chart`: the figure `build(*args, **kwargs)`, built when drawn and kept in the one
    cache under its arguments' content (cache.fingerprint) and presenter mode. A rerun that changed nothing
    it shows, or a class of students on the teacher's step, draws it without building it again. `build` must
    depend on its arguments only, as the plots' functions do; arguments without a fingerprint (a figure, a
    model) build it every time."""
    return Drawing(build, args, kwargs)


def for_projector(shown: go.Figure) -> go.Figure:
    """Presenter mode's figure: larger type, and taller with room for the larger title."""
    shown.update_layout(font_size=22, hoverlabel_font_size=22, margin_t=(shown.layout.margin.t or 60) + 40,
                        height=int((shown.layout.height or 450) * 1.25))
    for trace in shown.data:  # text drawn inside the figure (heatmap cells, tree labels) grows too
        if trace.type == "heatmap" and trace.textfont.size:  # the cells' height follows the window's:
            trace.textfont.size = None  # plotly fits the text to the cells, up to the figure's 22 px
        elif getattr(trace, "textfont", None) is not None and trace.textfont.size:
            trace.textfont.size = round(trace.textfont.size * 1.3)
    return shown


def drawn(drawing: Drawing, projector: bool) -> go.Figure:
    """The figure of `drawing` (shared through the cache: never change it), for a projector or not."""
    build = drawing.build

    def make() -> go.Figure:
        made = build(*drawing.args, **drawing.kwargs)
        return for_projector(made) if projector else made

    name = f"{build.__module__}.{build.__qualname__}"
    if "<" in name:  # a lambda or a local function: what it shows is not all in its arguments
        return make()
    try:
        key = ("figure", name, projector, fingerprint((drawing.args, drawing.kwargs)))
    except TypeError:  # an argument without a fingerprint
        return make()
    return CACHE.get(key, make)


def chart(drawing: Drawing, name: str, where=None, key: str | None = None, clickable: bool = False,
          top: float | None = None) -> None:
    """A plotly chart (`drawing`: from `figure`) with its exports: PNG (twice the size) from the chart's
    camera button, drawn by plotly.js in the browser, so no server-side renderer is needed; and "⬇ HTML", the
    figure as one file that works offline (built only when clicked). `where`: a column or container (default:
    the page). clickable=True: a click selects a point, which `clicked(key)` reads on the next run.

    In presenter mode the figure's type grows, and its height is capped by the window's: no chart is taller
    than the screen, and the page's main figure (`top`: the rem between the window's top and the chart, on
    the page's first screen in presenter mode) ends on the first screen, at 1280×720 too."""
    where = where or st
    shown = drawn(drawing, presenting())
    if presenting():
        box = re.sub(r"[^a-zA-Z0-9_-]", "-", f"chart_{key or name}")
        where = where.container(key=box)  # its class names the chart for the CSS below (a style costs no room)
        st.html(f"<style>.st-key-{box} [data-testid='stPlotlyChart']:not(:has([data-title='Close fullscreen'])) "
                f"{{ height: min({shown.layout.height}px, calc(100vh - {SCREEN_TOP if top is None else top}rem)); }}"
                "</style>")
    where.plotly_chart(shown, width="stretch", key=key, config={
        "displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2, "filename": name}},
        **({"on_select": "rerun", "selection_mode": "points"} if clickable else {}))
    where.download_button("⬇ HTML", lambda: standalone_html(shown).encode("utf-8"), file_name=f"{name}.html",
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
