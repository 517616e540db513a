"""A class follows its teacher, in two real browsers on one server: the teacher starts a class (/?class=new),
a student opens /?class=CODE, the teacher clicks "Next →", and the student's page shows that step. The time
limits are liveness limits (a slow machine waits), never speed requirements."""

import re
import time

import pytest

from lmviz.app import lessons
from tests.browser.conftest import assert_no_error_box, screenshot, wait_idle

pytestmark = pytest.mark.browser
LESSON = lessons.find("logits")
LIVENESS_S = 60


def main_text(page) -> str:
    return page.inner_text('[data-testid="stMain"]')


def wait_for_step(page, index: int, timeout: float = LIVENESS_S) -> None:
    wanted = f"{index}/{len(LESSON.steps)}: {LESSON.steps[index - 1].title}"
    deadline = time.time() + timeout
    while wanted not in main_text(page):
        if time.time() > deadline:
            raise AssertionError(f"the page did not show '{wanted}' within {timeout} s:\n{main_text(page)[:800]}")
        time.sleep(0.25)


def test_the_student_follows_the_teachers_next_step(browser, server_url):
    teacher_context = browser.new_context(viewport={"width": 1400, "height": 900})
    student_context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        teacher, student = teacher_context.new_page(), student_context.new_page()
        teacher.goto(server_url + "/?class=new")
        wait_idle(teacher)
        status = teacher.locator(".st-key-class_status").inner_text()
        code = re.search(r"Teaching class (\w+)", status).group(1)
        key = re.search(r"[?&]teach=([^&]+)", teacher.url).group(1)
        assert "class=" not in teacher.url and f"/?class={code}" in status

        # the teacher opens the lesson (a reload of a link with the key keeps teaching)
        teacher.goto(server_url + lessons.step_url(LESSON, 1) + f"&teach={key}")
        wait_idle(teacher)
        wait_for_step(teacher, 1)
        assert "Teaching class" in teacher.locator(".st-key-class_status").inner_text()

        student.goto(server_url + f"/?class={code}")
        wait_for_step(student, 1, timeout=600)  # the first page loads the model: liveness only
        wait_idle(student)
        assert f"Following class {code}" in student.locator(".st-key-class_status").inner_text()
        assert "teach=" not in student.url and f"class={code}" in student.url

        teacher.get_by_role("link", name="Next →").click()
        wait_for_step(teacher, 2, timeout=600)
        wait_for_step(student, 2)
        wait_idle(student)
        assert "step=2" in student.url and "teach=" not in student.url
        assert f"Following class {code}" in student.locator(".st-key-class_status").inner_text()
        screenshot(student, "class-student-follows")
        assert_no_error_box(student)
        assert_no_error_box(teacher)
    finally:
        teacher_context.close()
        student_context.close()
