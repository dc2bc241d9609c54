"""Review state: actions, undo/redo, saving after every action, restore, refusal, and kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.findings import Finding, Findings, Status
from napari_medcad.core.image import Geometry
from napari_medcad.core.review import ReviewSession, load_review

GEOMETRY = Geometry((0.7, 0.7, 2.5), (-100.0, -50.0, 20.0), tuple(np.eye(3).ravel()))


def model_findings(n: int = 5) -> Findings:
    findings = Findings(geometry=GEOMETRY, shape_zyx=(40, 300, 300), provenance={"model": "test-model"})
    for i in range(1, n + 1):
        centre = GEOMETRY.index_to_world(np.array([i, 10.0 * i, 5.0 * i]))
        findings.add(Finding(id=i, label="nodule", probability=1 - i / 100, centre_world_mm=tuple(centre),
                             diameter_mm=5.0 + i, centre_index_zyx=(i, 10.0 * i, 5.0 * i)))
    return findings


@pytest.fixture
def session(tmp_path):
    return ReviewSession.start(model_findings(), "sig-A", tmp_path / "review.json")


def reopened(session) -> ReviewSession:
    return ReviewSession.open(session.path, session.image_signature)


def test_decisions_change_status_and_are_saved_at_once(session):
    session.accept(1)
    session.reject(2)
    session.set_label(3, "mass")
    session.set_note(4, "  follow up\nin 3 months ")
    again = reopened(session)
    statuses = {f.id: f.status for f in again.findings}
    assert statuses == {1: Status.ACCEPTED, 2: Status.REJECTED, 3: Status.EDITED, 4: Status.PENDING, 5: Status.PENDING}
    assert again.findings[3].label == "mass" and again.findings[4].note == "follow up in 3 months"
    assert [a.kind for a in again.history] == ["accept", "reject", "label", "note"]


def test_move_updates_world_and_voxel_positions(session):
    target_index = np.array([7.0, 120.0, 80.0])
    target_world = GEOMETRY.index_to_world(target_index)
    moved = session.move(2, target_world)
    assert moved.status == Status.EDITED
    np.testing.assert_allclose(moved.centre_index_zyx, target_index, atol=1e-9)
    np.testing.assert_allclose(reopened(session).findings[2].centre_world_mm, target_world)


def test_reader_added_findings_stay_added_and_deleting_them_removes_them(session):
    added = session.add(GEOMETRY.index_to_world(np.array([3.0, 33.0, 44.0])), diameter_mm=8.0)
    assert added.id == 6 and added.status == Status.ADDED and added.source == "reader"
    assert session.move(6, GEOMETRY.index_to_world(np.array([3.0, 34.0, 44.0]))).status == Status.ADDED
    assert session.remove(6) is None
    assert 6 not in {f.id for f in reopened(session).findings}


def test_deleting_a_model_finding_rejects_it_as_a_hard_negative(session):
    session.remove(1)
    assert reopened(session).findings[1].status == Status.REJECTED


def test_undo_and_redo_are_saved_and_a_new_action_clears_redo(session):
    session.accept(1)
    session.move(1, GEOMETRY.index_to_world(np.array([1.0, 1.0, 1.0])))
    session.add(GEOMETRY.index_to_world(np.array([2.0, 2.0, 2.0])))
    session.undo()  # the add
    session.undo()  # the move
    again = reopened(session)
    assert {f.id for f in again.findings} == {1, 2, 3, 4, 5}
    assert again.findings[1].status == Status.ACCEPTED
    np.testing.assert_allclose(again.findings[1].centre_index_zyx, (1, 10, 5))
    assert again.can_redo and len(again.redo_stack) == 2
    again.redo()
    assert again.findings[1].status == Status.EDITED
    again.reject(2)
    assert not again.can_redo
    assert reopened(again).findings[2].status == Status.REJECTED


def test_listeners_hear_every_change(session):
    heard = []
    session.listeners.append(lambda action: heard.append((action.kind, action.finding_id)))
    session.accept(3)
    session.undo()
    session.redo()
    assert heard == [("accept", 3), ("undo accept", 3), ("accept", 3)]


def test_start_resumes_the_saved_review_of_the_same_image(session):
    session.reject(5)
    resumed = ReviewSession.start(model_findings(), "sig-A", session.path)
    assert resumed.findings[5].status == Status.REJECTED


def test_a_review_of_another_image_is_refused(session):
    with pytest.raises(MedcadError, match="different image"):
        ReviewSession.open(session.path, "sig-B")
    with pytest.raises(MedcadError, match="different image"):
        ReviewSession.start(model_findings(), "sig-B", session.path)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"format": "something else"}), "not a napari-medcad review"),
    (json.dumps({"format": "napari-medcad review", "version": 99}), "newer version"),
    (json.dumps({"format": "napari-medcad review", "version": 1, "image_signature": "x"}), "damaged"),
])
def test_bad_review_files_are_user_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(MedcadError, match=message):
        ReviewSession.open(path)


def test_unknown_finding_is_a_user_error(session):
    with pytest.raises(MedcadError, match="no finding 99"):
        session.accept(99)


def test_load_review_gives_findings_with_their_decisions(session):
    session.accept(1)
    session.reject(2)
    reviewed = load_review(session.path, "sig-A")
    assert reviewed.image_signature == "sig-A"
    decisions = reviewed.provenance["review"]["decisions"]
    assert decisions["1"]["status"] == "accepted" and decisions["2"]["status"] == "rejected"
    assert reviewed.provenance["model"] == "test-model"


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_review import model_findings
    from napari_medcad.core.review import ReviewSession
    session = ReviewSession.start(model_findings(400), "sig-kill", {path!r})
    print("ready", flush=True)
    for i in range(1, 401):
        (session.accept if i % 2 else session.reject)(i)
        print(f"done {{i}}", flush=True)
    """)


@pytest.mark.parametrize("kill_after", [1, 17, 60])
def test_a_killed_session_loses_no_finished_action(tmp_path, kill_after):
    path = tmp_path / "review.json"
    code = CHILD.format(tests=os.path.dirname(__file__), path=str(path))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    finished = 0
    try:
        assert child.stdout.readline().strip() == "ready"
        while finished < kill_after:
            line = child.stdout.readline()
            assert line.startswith("done"), line
            finished = int(line.split()[1])
        child.send_signal(signal.SIGKILL)  # in the middle of the next action's save, most likely
    finally:
        child.wait(timeout=60)
    # lines printed after `done k` but read before the kill also count as finished
    finished = max([finished] + [int(l.split()[1]) for l in child.stdout.read().splitlines() if l.startswith("done")])
    restored = ReviewSession.open(path, "sig-kill")
    for i in range(1, finished + 1):
        assert restored.findings[i].status == (Status.ACCEPTED if i % 2 else Status.REJECTED), i
    assert len(restored.history) >= finished
    assert not [p for p in tmp_path.iterdir() if p.name != "review.json" and not p.name.startswith(".review")]


def test_opening_removes_temporary_files_of_a_killed_save_but_not_a_live_one(tmp_path):
    session = ReviewSession.start(model_findings(), "sig-A", tmp_path / "review.json")
    stale = tmp_path / ".review.json.k1ll3d.partial"  # as core.atomic names them
    live = tmp_path / ".review.json.wr1t1ng.partial"
    other = tmp_path / ".other.json.k1ll3d.partial"  # another file's: not this review's to clean
    for leftover in (stale, live, other):
        leftover.write_text('{"format": "napari-medcad rev')
    old = os.path.getmtime(stale) - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    ReviewSession.open(session.path, "sig-A")
    assert not stale.exists() and live.exists() and other.exists()
    os.utime(live, (old, old))
    ReviewSession.start(model_findings(), "sig-A", session.path)  # resuming cleans up too
    assert not live.exists() and other.exists()


def test_a_note_is_not_a_decision(session):
    """Writing a note after accepting keeps the accept as the decision, with its time."""
    accepted = session.accept(1)
    accept_time = session.history[-1].time
    session.set_note(1, "looks solid")
    session.set_note(2, "look again later")  # a note on an undecided finding decides nothing
    decisions = session.decisions()
    assert decisions[1] == {"status": "accepted", "action": "accept", "time": accept_time}
    assert 2 not in decisions
    assert accepted.status == Status.ACCEPTED and session.findings[1].note == "looks solid"
    session.set_label(1, "mass")  # a change of class is a decision again
    assert session.decisions()[1]["action"] == "label"
    reviewed = load_review(session.path, "sig-A")
    assert reviewed.provenance["review"]["decisions"]["1"]["action"] == "label"


def test_a_reviews_folder_the_session_makes_is_private(tmp_path):
    session = ReviewSession.start(model_findings(), "sig-A", tmp_path / "reviews" / "review.json")
    session.accept(1)
    assert (tmp_path / "reviews").stat().st_mode & 0o077 == 0  # readers' notes may name a patient
