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


# mask voxels, batches, failed saves, damaged files, other writers, restart ------------------------------
from napari_medcad.core import review as review_module  # noqa: E402
from napari_medcad.core.mask_patch import MaskPatch  # noqa: E402


def cube(value, corner=(3, 20, 30), size=5):
    """A stroke as napari records it: (voxel indices, values before, values after)."""
    indices = tuple(np.mgrid[tuple(slice(c, c + size) for c in corner)].reshape(3, -1))
    return indices, np.zeros(len(indices[0]), np.uint8), np.full(len(indices[0]), value, np.uint8)


def test_a_mask_patch_is_compact_and_exact():
    patch = MaskPatch.of([cube(9)])
    encoded = patch.to_dict()
    assert len(json.dumps(encoded)) < 400  # a 125-voxel nodule: a few hundred bytes in the file
    again = MaskPatch.from_dict(json.loads(json.dumps(encoded)))
    labels = np.zeros((40, 60, 60), np.uint8)
    again.apply(labels)
    assert (labels == 9).sum() == 125 and labels[3:8, 20:25, 30:35].min() == 9
    again.apply(labels, undoing=True)
    assert not labels.any()


def test_a_voxel_written_twice_keeps_its_first_value_before_and_its_last_after():
    first = cube(9, size=3)
    second = (first[0], np.full(27, 9, np.uint8), np.full(27, 4, np.uint8))
    undone = (tuple(i[:1] for i in first[0]), np.array([4], np.uint8), np.array([0], np.uint8))  # back to 0
    patch = MaskPatch.of([first, second, undone])
    assert patch.changed.sum() == 26 and set(patch.before) == {0} and set(patch.after) == {4}
    assert MaskPatch.of([first, (first[0], first[2], first[1])]) is None  # painted and erased again


def test_mask_edits_are_saved_with_their_action_and_restored(session):
    with session.batch(MaskPatch.of([cube(9)])):
        session.add(GEOMETRY.index_to_world(np.array([5.0, 22.0, 32.0])), 4.0, mask_value=9)
    trim = MaskPatch.of([(tuple(np.array([[1], [10], [5]])), np.array([1], np.uint8), np.array([0], np.uint8))])
    with session.batch(trim):
        session.edit_mask(1)
    assert [a.kind for a in session.history] == ["add", "mask"] and session.findings[1].status == Status.EDITED
    model_masks = np.zeros((40, 300, 300), np.uint8)
    model_masks[1, 10, 5] = 1
    again = reopened(session)
    edited = again.apply_mask_edits(model_masks)
    assert (edited == 9).sum() == 125 and edited[1, 10, 5] == 0 and model_masks[1, 10, 5] == 1
    again.undo()  # the trim is undone: its voxels are no longer among the edits
    assert reopened(again).apply_mask_edits(model_masks)[1, 10, 5] == 1


def test_a_batch_is_one_action_heard_once_undone_and_saved_as_one(session):
    heard = []
    session.listeners.append(heard.append)
    added = session.add(GEOMETRY.index_to_world(np.array([2.0, 2.0, 2.0])))
    with session.batch():
        session.remove(2)
        session.remove(added.id)
    assert len(heard) == 2 and heard[-1].kind == "batch" and [p.kind for p in heard[-1].parts] == ["reject", "remove"]
    again = reopened(session)
    assert len(again.history) == 2 and again.findings[2].status == Status.REJECTED
    again.undo()  # one undo takes back both
    assert again.findings[2].status == Status.PENDING and added.id in {f.id for f in again.findings}
    assert len(reopened(again).history) == 1
    again.redo()
    assert again.findings[2].status == Status.REJECTED and added.id not in {f.id for f in again.findings}
    assert again.decisions()[2]["action"] == "reject"


def state_of(session):
    return ([f.to_dict() for f in session.findings], [a.to_dict() for a in session.history],
            [a.to_dict() for a in session.redo_stack])


@pytest.fixture
def failing_saves(monkeypatch):
    """Saves fail (a full disk, a read-only folder) while ``failing`` holds True."""
    failing = [True]
    real = review_module.write_text

    def write_text(path, text, durable=False):
        if failing[0]:
            raise OSError(28, "No space left on device")
        return real(path, text, durable=durable)

    monkeypatch.setattr(review_module, "write_text", write_text)
    return failing


def test_an_action_whose_save_fails_is_taken_back(session, failing_saves):
    failing_saves[0] = False
    session.accept(1)
    session.add(GEOMETRY.index_to_world(np.array([2.0, 2.0, 2.0])))
    session.undo()  # something to redo
    heard = []
    session.listeners.append(heard.append)
    failing_saves[0] = True
    before = state_of(session)
    for act in (lambda: session.reject(2), session.undo, session.redo,
                lambda: session.add(GEOMETRY.index_to_world(np.array([3.0, 3.0, 3.0]))),
                lambda: session.move(3, GEOMETRY.index_to_world(np.array([3.0, 3.0, 3.0])))):
        with pytest.raises(MedcadError, match="could not save the review"):
            act()
        assert state_of(session) == before and not heard
    with pytest.raises(MedcadError, match="could not save"):
        with session.batch(MaskPatch.of([cube(9)])):
            session.remove(4)
            session.remove(5)
    assert state_of(session) == before and not heard
    failing_saves[0] = False
    session.set_note(1, "saved")  # a later save writes only what was done
    assert [a.kind for a in reopened(session).history] == ["accept", "note"]
    assert state_of(reopened(session))[0] == state_of(session)[0]


def test_a_failure_inside_a_batch_takes_back_its_parts(session):
    with pytest.raises(MedcadError, match="no finding 99"):
        with session.batch():
            session.reject(1)
            session.reject(99)
    assert session.findings[1].status == Status.PENDING and not session.history
    assert reopened(session).findings[1].status == Status.PENDING


def test_a_rejected_finding_stays_rejected_when_edited(session):
    session.reject(1)
    assert session.set_label(1, "mass").status == Status.REJECTED
    assert session.move(1, GEOMETRY.index_to_world(np.array([1.0, 11.0, 5.0]))).status == Status.REJECTED
    assert session.resize(1, 9.0).status == Status.REJECTED
    assert session.edit_mask(1).status == Status.REJECTED
    session.accept(2)
    assert session.edit_mask(2).status == Status.EDITED
    assert reopened(session).findings[1].status == Status.REJECTED


def test_moving_a_finding_moves_its_box(tmp_path):
    findings = model_findings(2)
    findings.items[0].bbox_index_zyx = ((0, 8, 3), (3, 13, 8))
    session = ReviewSession.start(findings, "sig-A", tmp_path / "review.json")
    moved = session.move(1, GEOMETRY.index_to_world(np.array([2.0, 14.2, 5.0])))  # 1 slice, 4.2 rows
    assert moved.bbox_index_zyx == ((1, 12, 3), (4, 17, 8))
    boxed = session.move(1, GEOMETRY.index_to_world(np.array([2.0, 14.0, 5.0])), ((1, 10, 1), (4, 19, 9)))
    assert boxed.bbox_index_zyx == ((1, 10, 1), (4, 19, 9))
    session.undo()
    session.undo()
    assert session.findings[1].bbox_index_zyx == ((0, 8, 3), (3, 13, 8))


def damage(data, how):
    if how == "version":
        data["version"] = "abc"
    elif how == "findings":
        data["findings"] = None
    elif how == "id":
        data["findings"]["items"][0]["id"] = "x"
    elif how == "duplicate":
        data["findings"]["items"].append(dict(data["findings"]["items"][0]))
    elif how == "history":
        data["history"] = [None]
    elif how == "before":
        data["history"][0]["before"] = {"id": 1}
    elif how == "voxels":
        data["history"][0]["voxels"]["changed"] = "not base64 zlib"
    elif how == "centre":
        data["findings"]["items"][0]["centre_world_mm"] = None
    return data


@pytest.mark.parametrize("how", ["version", "findings", "id", "duplicate", "history", "before", "voxels", "centre"])
def test_damaged_review_files_are_refused_in_one_line_and_left_alone(session, how):
    with session.batch(MaskPatch.of([cube(9)])):
        session.accept(1)
    text = json.dumps(damage(json.loads(session.path.read_text()), how))
    session.path.write_text(text)
    for load in (lambda: ReviewSession.open(session.path, "sig-A"),
                 lambda: ReviewSession.start(model_findings(), "sig-A", session.path)):
        with pytest.raises(MedcadError, match="damaged") as refusal:
            load()
        assert "\n" not in str(refusal.value)
    assert session.path.read_text() == text
    assert not ReviewSession.saved_findings_match(model_findings(), session.path)


def test_a_second_writer_is_refused_instead_of_overwriting(session):
    other = ReviewSession.start(model_findings(), "sig-A", session.path)  # the same image in a second window
    session.accept(1)
    with pytest.raises(MedcadError, match="changed by another window") as refusal:
        other.reject(2)
    assert "reopen" in str(refusal.value)
    assert other.findings[2].status == Status.PENDING  # taken back, as any failed save
    saved = reopened(session)
    assert saved.findings[1].status == Status.ACCEPTED and saved.findings[2].status == Status.PENDING
    later = os.path.getmtime(session.path) + 10
    os.utime(session.path, (later, later))  # touched (a backup tool), not changed: still ours to write
    session.reject(3)
    assert reopened(session).findings[3].status == Status.REJECTED


def test_restart_sets_the_saved_review_aside_and_begins_again(session):
    session.accept(1)
    fresh = ReviewSession.start(model_findings(), "sig-A", session.path, restart=True)
    assert not fresh.history and fresh.findings[1].status == Status.PENDING
    aside = [p for p in session.path.parent.iterdir() if ".replaced-" in p.name]
    assert len(aside) == 1 and aside[0].name.startswith("review.replaced-") and aside[0].name.endswith(".json")
    assert ReviewSession.open(aside[0], "sig-A").findings[1].status == Status.ACCEPTED
    assert reopened(fresh).findings[1].status == Status.PENDING


def test_restart_names_the_set_aside_file_after_the_image(tmp_path):
    path = tmp_path / "abc123.review.json"
    ReviewSession.start(model_findings(), "abc123", path).accept(1)
    ReviewSession.start(model_findings(), "abc123", path, restart=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == "abc123.replaced-" + names[0][len("abc123.replaced-"):] and names[0].endswith("Z.review.json")
    assert names[1] == "abc123.review.json"


def test_saved_findings_match_tells_the_findings_a_review_began_on(session):
    assert not ReviewSession.saved_findings_match(model_findings(), session.path.with_name("none.json"))
    session.move(1, GEOMETRY.index_to_world(np.array([1.0, 1.0, 1.0])))
    session.add(GEOMETRY.index_to_world(np.array([2.0, 2.0, 2.0])))
    with session.batch():
        session.remove(2)
        session.remove(6)
    assert ReviewSession.saved_findings_match(model_findings(), session.path)  # moves and adds aside
    other_model = model_findings()
    other_model.provenance = {"model": "another-model"}
    assert not ReviewSession.saved_findings_match(other_model, session.path)
    fewer = model_findings(4)
    assert not ReviewSession.saved_findings_match(fewer, session.path)
    moved = model_findings()
    moved.items[2].centre_world_mm = (0.0, 0.0, 0.0)
    assert not ReviewSession.saved_findings_match(moved, session.path)
    timed = model_findings()
    timed.provenance = {"model": "test-model", "rescored_by": {"model": "g", "seconds": 1.5}}
    session_timed = ReviewSession.start(timed, "sig-T", session.path.with_name("timed.json"))
    timed.provenance["rescored_by"]["seconds"] = 2.5  # the same run, timed differently
    assert ReviewSession.saved_findings_match(timed, session_timed.path)


def test_a_version_1_review_file_is_still_read(session):
    session.accept(1)
    data = json.loads(session.path.read_text())
    for key in ("writer", "sequence"):
        del data[key]
    data["version"] = 1
    session.path.write_text(json.dumps(data))
    old = ReviewSession.open(session.path, "sig-A")
    assert old.findings[1].status == Status.ACCEPTED
    old.reject(2)  # and continued, as version 2
    assert json.loads(session.path.read_text())["version"] == review_module.VERSION == 2


def test_a_pending_view_edit_is_recorded_before_the_status_of_the_next_action_is_read(session):
    """A stroke still waiting for its timer that rejects a finding, then a class change of it:
    the change must see it rejected (it was computed from the status before the flush)."""
    pending = [lambda: session.reject(1)]

    def flush():
        while pending:
            pending.pop()()

    session.before_action.append(flush)
    session.set_label(1, "mass")
    assert session.findings[1].status == Status.REJECTED and session.findings[1].label == "mass"
    pending.append(lambda: session.reject(2))
    session.move(2, session.findings[2].centre_world_mm)
    assert session.findings[2].status == Status.REJECTED
