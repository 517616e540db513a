"""A class that follows its teacher (lmviz.app.classroom_ui), in AppTest: the teacher's `?class=new`, a student
following, leaving and rejoining, and the one line a wrong code gets."""

import segno
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from lmviz.app import classroom, classroom_ui, lessons
from tests.views import app
from tests.views.test_bad_input import _qr_modules

LESSON = lessons.find("logits")


def teacher_at(at, index: int):
    """The teacher opens step `index` of the lesson (as its "Next →" link does: the key is not in it)."""
    at.switch_page(LESSON.steps[index - 1].page.script)
    at.query_params.clear()
    for key, value in lessons.step_params(LESSON, index).items():
        at.query_params[key] = value
    return at.run()


def shows_step(at, index: int) -> bool:
    return any(f"{index}/{len(LESSON.steps)}: **{LESSON.steps[index - 1].title}**" in md.value for md in at.markdown)


def test_a_teacher_starts_a_class_and_a_student_follows(smollm):
    teacher = app()
    teacher.query_params["class"] = "new"
    teacher.run()
    assert not teacher.exception
    key = teacher.session_state[classroom_ui.TEACHER]
    code = classroom.code_of(key)
    assert code and teacher.query_params["teach"] == key and "class" not in teacher.query_params
    assert any(code in caption.value for caption in teacher.sidebar.caption)  # the code, for the class
    assert classroom.current(code)[0].startswith("?") and f"class={code}" in classroom.current(code)[0]  # home

    teacher_at(teacher, 2)
    assert not teacher.exception and shows_step(teacher, 2)
    url, version = classroom.current(code)
    assert url.startswith("sampling?") and "step=2" in url and f"class={code}" in url and key not in url

    student = app()
    student.query_params["class"] = code.lower()
    student.run()
    assert not student.exception
    assert shows_step(student, 2)
    assert student.query_params["class"] == code and "teach" not in student.query_params
    assert any(f"Following class **{code}**" in caption.value for caption in student.sidebar.caption)

    teacher_at(teacher, 3)  # the teacher moves on: the student's next run (the fragment's poll) follows
    assert classroom.current(code)[1] > version
    student.run()
    assert not student.exception and shows_step(student, 3)

    student.button(key="_class_leave").click().run()  # the student explores
    assert any("you are exploring" in caption.value for caption in student.sidebar.caption)
    teacher_at(teacher, 4)
    student.run()
    assert not student.exception and shows_step(student, 3)
    student.button(key="_class_rejoin").click().run()
    assert not student.exception and shows_step(student, 4)

    teacher.button(key="_class_end").click().run()  # the class ends: one line, no traceback
    assert classroom.current(code) is None and "teach" not in teacher.query_params
    student.run()
    assert not student.exception
    assert any(f"no class {code} running" in warning.value for warning in student.warning)


def test_a_wrong_code_gets_one_line_and_a_code_is_no_teacher_key(smollm):
    code, key = classroom.start("?class=X")
    student = app()
    student.query_params["class"] = "QQQQQ" if code != "QQQQQ" else "WWWWW"
    student.run()
    assert not student.exception
    assert [w.value for w in student.warning if "running" in w.value]
    assert "class" not in student.query_params
    impostor = app()
    impostor.query_params["teach"] = code  # the public code does not make a teacher
    impostor.run()
    assert not impostor.exception and classroom_ui.TEACHER not in impostor.session_state
    assert classroom.current(code) == ("?class=X", 1)
    classroom.end(key)


def test_the_share_code_carries_the_class_link_not_the_teacher_key(smollm, monkeypatch):
    """In presenter mode, the QR code is `<server>/?class=CODE`: the students' way in, never the teacher's URL."""
    images = {}
    store = MemoryMediaFileStorage.load_and_get_id

    def keep(self, data, mimetype, kind, filename=None):
        file_id = store(self, data, mimetype, kind, filename)
        images[file_id] = data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    monkeypatch.delenv("LMVIZ_PUBLIC_URL", raising=False)
    teacher = app("lens")
    teacher.context["url"] = "http://localhost:8501/lens?class=new&present=1"
    teacher.session_state["text"] = "This weekend I plan to"
    teacher.query_params["class"] = "new"
    teacher.query_params["present"] = "1"
    teacher.run()
    assert not teacher.exception
    key = teacher.session_state[classroom_ui.TEACHER]
    code = classroom.code_of(key)
    [shown] = teacher.get("image")
    [image] = shown.proto.imgs
    assert image.caption == f"Scan to join class {code}"
    modules = _qr_modules(images[image.url.rsplit("/", 1)[-1].split(".")[0]])
    expected = f"http://localhost:8501/?class={code}"
    assert any(modules == [[bool(m) for m in row] for row in segno.make(expected, error=level).matrix]
               for level in "lmqh"), expected
    url, _ = classroom.current(code)
    assert url.startswith("lens?") and "present" not in url and key not in url  # a laptop is no projector
    classroom.end(key)
