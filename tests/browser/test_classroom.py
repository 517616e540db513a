"""The classroom benchmark's client (bench/load.py) against a real server: it sees whole pages and errors."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.load import PAGES, classroom, student

pytestmark = pytest.mark.browser


def run(coroutine):
    """asyncio.run in a thread of its own: playwright's sync API (an earlier test's browser) keeps an event
    loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_sessions_get_complete_pages(server_url):
    url = server_url.replace("http://", "ws://") + "/_stcore/stream"
    loads = run(classroom(url, 2, "test"))
    assert [load.page for load in loads] == list(PAGES) * 2
    assert not [error for load in loads for error in load.errors]
    lens_page, sampling_page = loads[:2]
    assert lens_page.elements["plotly_chart"] >= 1 and lens_page.elements["dataframe"] >= 1  # heatmap, table
    assert sampling_page.elements["plotly_chart"] >= 1


def test_an_error_on_the_page_is_counted(server_url):
    url = server_url.replace("http://", "ws://") + "/_stcore/stream"
    loads = run(student(url, 0, "test", model="./no-such-model-folder"))
    assert all(any("error box" in error for error in load.errors) for load in loads)
