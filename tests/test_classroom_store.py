"""The class store (lmviz.app.classroom): codes, teacher keys, versions, expiry, threads."""

import threading

from lmviz.app import classroom
from lmviz.app.classroom import ALPHABET, CODE_LENGTH, Classes


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_codes_are_short_unambiguous_and_distinct_from_the_key():
    store = Classes()
    started = [store.start() for _ in range(500)]
    codes = [code for code, _ in started]
    assert len(set(codes)) == 500
    for code, key in started:
        assert len(code) == CODE_LENGTH and set(code) <= set(ALPHABET)
        assert not set(code) & set("0O1IL")
        assert len(key) >= 20 and code not in key
        assert store.code_of(key) == code
        assert store.code_of(code) is None  # the public code is not a teacher key


def test_only_the_teacher_key_publishes_and_a_student_code_cannot():
    store = Classes()
    code, key = store.start("?class=X")
    assert store.current(code) == ("?class=X", 1)
    assert store.publish(code, "lens?step=9") is None  # the code is not the key
    assert store.publish("guess", "lens?step=9") is None
    assert store.current(code) == ("?class=X", 1)
    assert store.publish(key, "lens?lesson=a&step=2") == 2
    assert store.current(code.lower()) == ("lens?lesson=a&step=2", 2)  # codes as typed: any case
    assert store.current(" " + code[:2] + " " + code[2:]) == ("lens?lesson=a&step=2", 2)
    assert store.current("ZZZZZ" if code != "ZZZZZ" else "YYYYY") is None


def test_versions_move_only_when_the_students_have_to():
    store = Classes()
    code, key = store.start()
    assert store.publish(key, "lens?lesson=a&step=2") == 2
    assert store.publish(key, "lens?lesson=a&step=2") == 2  # the same view again
    assert store.publish(key, "lens?lesson=a&step=2&lens_k=5") == 2  # the page wrote its defaults
    assert store.current(code) == ("lens?lesson=a&step=2&lens_k=5", 2)  # a newcomer gets all of it
    assert store.publish(key, "lens?lesson=a&step=2&lens_k=6") == 3  # the teacher changed a setting
    assert store.publish(key, "lens?lesson=a&step=3&lens_k=6") == 4
    assert store.publish(key, "sampling?lesson=a&step=3&lens_k=6") == 4 + 1  # another page
    assert store.publish(key, "sampling?lesson=a") == 6  # a parameter removed


def test_classes_expire_after_the_last_publish_with_a_clock():
    clock = Clock()
    store = Classes(ttl=3 * 3600, clock=clock)
    code, key = store.start("?class=A")
    clock.now += 3 * 3600 - 1
    assert store.publish(key, "lens?step=2") == 2  # keeps it alive for another ttl
    clock.now += 3 * 3600 - 1
    assert store.current(code) == ("lens?step=2", 2)
    clock.now += 2
    assert store.current(code) is None
    assert store.code_of(key) is None and store.publish(key, "lens?step=3") is None
    assert len(store) == 0  # nothing kept beyond the class


def test_a_class_ends_when_the_teacher_ends_it():
    store = Classes()
    code, key = store.start()
    other, other_key = store.start()
    assert store.end(key) and not store.end(key)
    assert store.current(code) is None and store.code_of(key) is None
    assert store.current(other) is not None and store.code_of(other_key) == other


def test_too_many_classes_drop_the_oldest():
    clock = Clock()
    store = Classes(clock=clock, max_classes=3)
    started = []
    for _ in range(4):
        started.append(store.start())
        clock.now += 1
    assert len(store) == 3
    assert store.current(started[0][0]) is None and all(store.current(code) for code, _ in started[1:])


def test_long_urls_are_cut():
    store = Classes()
    code, key = store.start()
    store.publish(key, "lens?text=" + "a" * 100_000)
    assert len(store.current(code)[0]) == classroom.MAX_URL


def test_threads_publish_and_read_at_once():
    store = Classes()
    classes = [store.start() for _ in range(8)]
    errors = []

    def teacher(key, n):
        for step in range(1, 301):
            if store.publish(key, f"lens?class={n}&step={step}") is None:
                errors.append("lost")

    def student(code):
        last = 0
        for _ in range(2000):
            url, version = store.current(code)
            if version < last:
                errors.append("went back")
            last = version

    threads = [threading.Thread(target=teacher, args=(key, n)) for n, (_, key) in enumerate(classes)]
    threads += [threading.Thread(target=student, args=(code,)) for code, _ in classes for _ in range(3)]
    threads += [threading.Thread(target=lambda: [store.start() for _ in range(200)])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for n, (code, _) in enumerate(classes):
        assert store.current(code) == (f"lens?class={n}&step=300", 301)
    assert len(store) == 8 + 200


def test_refines():
    assert classroom.refines("lens?a=1", "lens?a=1&b=2")
    assert not classroom.refines("lens?a=1", "lens?a=2")
    assert not classroom.refines("lens?a=1", "beam?a=1")
    assert not classroom.refines("lens?a=1&b=2", "lens?a=1")
