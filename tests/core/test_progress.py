"""Progress callbacks, the thread adapter napari workers use, and cancellation."""

import threading
import time

import pytest

from napari_medcad.core.errors import Cancelled, MedcadError
from napari_medcad.core.progress import Progress, iterate, report, run, scaled


def count_to(n, progress=None, delay=0.0):
    for i in range(n):
        time.sleep(delay)
        report(progress, i + 1, n, f"step {i + 1}")
    return n * 10


def test_iterate_yields_progress_and_returns_result():
    generator = iterate(count_to, 4)
    seen = []
    result = run(generator, seen.append)
    assert result == 40
    assert [p.done for p in seen] == [1, 2, 3, 4] and seen[-1].fraction == 1.0


def test_iterate_reraises_errors():
    def broken(progress=None):
        report(progress, 0, 1)
        raise MedcadError("bad input")

    with pytest.raises(MedcadError, match="bad input"):
        run(iterate(broken))


def test_cancel_event_stops_work_at_next_unit():
    cancel = threading.Event()
    finished = []

    def long_job(progress=None):
        try:
            return count_to(1000, progress, delay=0.001)
        finally:
            finished.append(threading.current_thread())

    generator = iterate(long_job, cancel_event=cancel)
    next(generator)
    cancel.set()
    with pytest.raises(Cancelled):
        run(generator)
    deadline = time.time() + 5
    while not finished and time.time() < deadline:
        time.sleep(0.01)
    assert finished, "the job kept running after cancel"


def test_scaled_maps_subtask_onto_parent_range():
    seen = []
    child = scaled(seen.append, 0.5, 1.0, total=100)
    child(Progress(1, 2, "half of second half"))
    assert seen == [Progress(75, 100, "half of second half")]
    assert scaled(None, 0, 1) is None
