"""ReviewLayers in a real viewer: every stroke in the Labels layer is a review action saved with its
voxels (reopening restores the masks), Ctrl+Z there takes back the last stroke, one gesture is one
action, a refused save leaves the layers as the session, and boxes follow moves both ways."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.review import ReviewSession, default_review_path
from napari_medcad.napari.findings_layers import (
    ROLE_BOXES,
    ROLE_LABELS,
    ROLE_POINTS,
    add_findings_layers,
    findings_layer_data,
    role_of,
)
from napari_medcad.napari.layers import image_layer_data
from review_case import CENTRES, GEOMETRY_3D, make_case
from napari_medcad.napari.review_sync import ReviewLayers



class Review:
    """A review of the test case in ``viewer``: its session, layers and ReviewLayers."""

    def __init__(self, viewer, seed=0):
        self.viewer = viewer
        self.image, findings, labels = make_case(seed=seed)
        data, kwargs, _ = image_layer_data(self.image)
        viewer.add_image(data, **kwargs)
        made = add_findings_layers(viewer, findings_layer_data(findings, self.image, labels=labels, source_layer="ct"))
        layers = {role_of(layer): layer for layer in made}
        self.points, self.labels, self.boxes = layers[ROLE_POINTS], layers[ROLE_LABELS], layers[ROLE_BOXES]
        self.labels.brush_size = 3  # a stroke at (6, 20, 36) paints beside finding 2, not over it
        self.path = default_review_path(self.image.content_signature())
        self.session = ReviewSession.start(findings, self.image.content_signature(), self.path)
        self.edited = []
        self.layers = self.connect()

    def connect(self):
        return ReviewLayers(self.session, self.points, self.labels, self.boxes, on_edited=self.edited.append,
                            on_point_selected=lambda finding_id: None)

    def statuses(self):
        return {f.id: f.status.value for f in self.session.findings}

    def saved(self):
        return {item["id"]: item["status"] for item in json.loads(self.path.read_text())["findings"]["items"]}


@pytest.fixture
def review(make_napari_viewer):
    return Review(make_napari_viewer())


def stroke(labels, edit, qtbot):
    """One gesture as napari's brush or bucket makes it (one history item, one paint event), read."""
    with labels.block_history():
        edit()
    qtbot.wait(30)


def test_every_stroke_is_saved_with_its_voxels_and_reopening_restores_the_masks(review, make_napari_viewer, qtbot):
    labels = review.labels
    stroke(labels, lambda: labels.paint((6, 20, 36), 9), qtbot)  # a new nodule
    qtbot.waitUntil(lambda: len(review.session.findings) == 4, timeout=3000)
    labels.n_edit_dimensions = 3
    stroke(labels, lambda: labels.fill(CENTRES[2], 0), qtbot)  # finding 3 erased: rejected
    qtbot.waitUntil(lambda: review.statuses()[3] == "rejected", timeout=3000)
    stroke(labels, lambda: labels.paint(CENTRES[0], 0), qtbot)  # finding 1 trimmed: a mask edit
    qtbot.waitUntil(lambda: review.statuses()[1] == "edited", timeout=3000)
    assert [a.kind for a in review.session.history] == ["add", "reject", "mask"]
    assert all(a.voxels is not None for a in review.session.history)
    assert review.saved() == {1: "edited", 2: "pending", 3: "rejected", 4: "added"}
    left = labels.data.copy()
    saved = json.loads(review.path.read_text())["history"]
    assert max(len(json.dumps(a["voxels"])) for a in saved) < 1000  # compact: the changed box only
    review.viewer.close()

    again = Review(make_napari_viewer())  # the same image and model output: the review resumes
    assert len(again.session.history) == 3
    np.testing.assert_array_equal(again.labels.data, left)
    again.session.undo()  # and its strokes undo there too
    assert again.statuses()[1] == "pending"
    np.testing.assert_array_equal(again.labels.data[CENTRES[0]], 1)


def test_ctrl_z_on_the_labels_layer_undoes_the_last_stroke_not_an_earlier_decision(review, qtbot):
    labels, viewer = review.labels, review.viewer
    review.session.accept(2)
    before = labels.data.copy()
    labels.brush_size = 2
    stroke(labels, lambda: labels.paint(CENTRES[0], 0), qtbot)  # a slip of the eraser on finding 1
    qtbot.waitUntil(lambda: len(review.session.history) == 2, timeout=3000)
    assert not labels._undo_history  # napari's own history cannot replay strokes behind the review's back
    viewer.layers.selection.active = labels
    keys = viewer.window._qt_viewer._key_map_handler
    keys.press_key("Control-Z")
    np.testing.assert_array_equal(labels.data, before)
    assert review.statuses() == {1: "pending", 2: "accepted", 3: "pending"} == review.saved()
    keys.press_key("Control-Shift-Z")
    assert (labels.data != before).any() and review.statuses()[1] == "edited"


def test_a_stroke_read_late_is_still_undone_before_an_earlier_action(review, qtbot):
    labels = review.labels
    review.session.accept(2)
    before = labels.data.copy()
    with labels.block_history():
        labels.paint(CENTRES[0], 0)
    review.session.undo()  # before the stroke's timer: the stroke is read first, and undone
    np.testing.assert_array_equal(labels.data, before)
    assert review.statuses()[2] == "accepted" and len(review.session.history) == 1
    qtbot.wait(30)
    assert len(review.session.history) == 1


def test_a_fill_that_gives_a_mask_a_new_value_is_one_action(review, qtbot):
    labels = review.labels
    before = labels.data.copy()
    labels.n_edit_dimensions = 3
    stroke(labels, lambda: labels.fill(CENTRES[2], 9), qtbot)
    qtbot.waitUntil(lambda: len(review.session.findings) == 4, timeout=3000)
    assert len(review.session.history) == 1 and review.session.history[0].kind == "batch"
    assert review.statuses()[3] == "rejected" and review.statuses()[4] == "added"
    review.session.undo()  # one undo: both findings and every voxel back
    assert review.statuses() == {1: "pending", 2: "pending", 3: "pending"}
    np.testing.assert_array_equal(labels.data, before)
    review.session.redo()
    assert review.statuses()[4] == "added" and not (labels.data == 3).any() and (labels.data == 9).sum() == 125


def test_erasing_a_rejected_findings_mask_keeps_its_voxels_with_the_review(review, qtbot):
    labels = review.labels
    review.session.reject(3)
    labels.n_edit_dimensions = 3
    stroke(labels, lambda: labels.fill(CENTRES[2], 0), qtbot)
    qtbot.waitUntil(lambda: len(review.session.history) == 2, timeout=3000)
    assert review.session.history[-1].kind == "mask" and review.statuses()[3] == "rejected"
    review.session.undo()
    review.session.undo()  # the erase, then the reject: pending again, with its mask
    assert review.statuses()[3] == "pending" and (labels.data == 3).sum() == 125


def test_deleting_several_points_is_one_action(review, qtbot):
    points = review.points
    review.session.add(GEOMETRY_3D.index_to_world(np.array([5.0, 20.0, 20.0])))
    rows = review.layers.rows
    points.selected_data = {rows[2], rows[4]}
    points.remove_selected()
    qtbot.waitUntil(lambda: 4 not in review.statuses(), timeout=3000)
    assert review.statuses()[2] == "rejected" and len(review.session.history) == 2
    review.session.undo()
    assert review.statuses() == {1: "pending", 2: "pending", 3: "pending", 4: "added"} == review.saved()
    assert len(points.data) == 4


def test_a_refused_save_leaves_the_layers_as_the_session(review, qtbot, tmp_path, shown_errors):
    labels, points = review.labels, review.points
    stroke(labels, lambda: labels.paint((6, 20, 36), 9), qtbot)
    qtbot.waitUntil(lambda: len(review.session.findings) == 4, timeout=3000)
    painted = labels.data.copy()
    blocker = tmp_path / "a file, not a folder"
    blocker.write_text("")
    review.session.path = blocker / review.path.name  # every save fails (as root too, unlike a read-only folder)
    stroke(labels, lambda: labels.paint(CENTRES[0], 7), qtbot)  # refused: the stroke is taken back
    qtbot.waitUntil(lambda: len(shown_errors) == 1, timeout=3000)
    assert "could not save" in str(shown_errors[0])
    np.testing.assert_array_equal(labels.data, painted)
    assert len(review.session.findings) == 4 and len(points.data) == 4
    rows = review.layers.rows
    points.selected_data = {rows[2], rows[3]}
    points.remove_selected()  # both refused, both drawn again as pending
    qtbot.waitUntil(lambda: len(shown_errors) == 2, timeout=3000)
    assert len(points.data) == 4 and set(points.features["status"]) == {"pending", "added"}
    with pytest.raises(MedcadError, match="could not save"):
        review.session.undo()  # the paint stays, finding and voxels
    assert len(review.session.findings) == 4
    np.testing.assert_array_equal(labels.data, painted)
    review.session.path = review.path
    review.session.undo()
    assert len(review.session.findings) == 3 and not (labels.data == 9).any()
    assert review.saved() == {1: "pending", 2: "pending", 3: "pending"}
    assert [a["kind"] for a in json.loads(review.path.read_text())["history"]] == []


def test_moving_a_box_moves_its_finding_and_a_moved_point_takes_its_box(review, qtbot):
    boxes, points = review.boxes, review.points
    row = review.layers.rows[1]
    data = [np.array(shape, float) for shape in boxes.data]
    data[row][:, -1] += 6  # the select tool drags the box 6 columns right
    boxes.data = data
    qtbot.waitUntil(lambda: review.statuses()[1] == "edited", timeout=3000)
    moved = review.session.findings[1]
    np.testing.assert_allclose(moved.centre_world_mm, GEOMETRY_3D.index_to_world([3, 10, 18]), atol=1e-6)
    assert moved.bbox_index_zyx == ((1, 8, 16), (6, 13, 21))
    # a point moved two rows down: its box follows
    row = review.layers.rows[2]
    points_data = points.data.copy()
    points_data[row, 1] += 2
    points.data = points_data
    qtbot.waitUntil(lambda: review.statuses()[2] == "edited", timeout=3000)
    assert review.session.findings[2].bbox_index_zyx == ((6, 25, 28), (11, 30, 33))
    np.testing.assert_allclose(np.asarray(boxes.data[row]).mean(axis=0), [8, 27, 30])
    review.session.undo()
    review.session.undo()
    assert review.session.findings[1].bbox_index_zyx == ((1, 8, 10), (6, 13, 15))
    np.testing.assert_allclose(np.asarray(boxes.data[review.layers.rows[1]]).mean(axis=0), [3, 10, 12])


def test_reconnecting_or_restarting_shows_the_sessions_masks_once(review, qtbot):
    labels = review.labels
    original = labels.data.copy()
    stroke(labels, lambda: labels.paint((6, 20, 36), 9), qtbot)
    qtbot.waitUntil(lambda: len(review.session.findings) == 4, timeout=3000)
    painted = labels.data.copy()
    review.layers.disconnect()
    review.layers = review.connect()  # the widget does this when the boxes layer is closed
    np.testing.assert_array_equal(labels.data, painted)
    review.layers.disconnect()
    _, findings, _ = make_case()
    review.session = ReviewSession.start(findings, review.session.image_signature, review.path, restart=True)
    review.layers = review.connect()  # a fresh review: the model's masks again
    np.testing.assert_array_equal(labels.data, original)
    assert review.statuses() == {1: "pending", 2: "pending", 3: "pending"}


def test_resizing_a_box_gives_its_finding_the_new_box_and_diameter(review, qtbot):
    boxes = review.boxes
    row = review.layers.rows[3]
    data = [np.array(shape, float) for shape in boxes.data]
    data[row][:, 1] = np.where(data[row][:, 1] > 32, data[row][:, 1] + 4, data[row][:, 1])  # 4 rows taller
    boxes.data = data
    qtbot.waitUntil(lambda: review.statuses()[3] == "edited", timeout=3000)
    resized = review.session.findings[3]
    assert resized.bbox_index_zyx == ((10, 30, 12), (15, 39, 17))
    assert resized.diameter_mm == pytest.approx(np.mean([9 * 0.9, 5 * 0.8]))
    np.testing.assert_allclose(resized.centre_world_mm, GEOMETRY_3D.index_to_world([12, 34, 14]), atol=1e-6)
    assert len(review.session.history) == 1  # moved and resized: one action
    np.testing.assert_allclose(np.ptp(np.asarray(boxes.data[row]), axis=0)[1:], [9, 5])


def test_a_finding_s_volume_and_diameter_follow_its_corrected_mask(review, qtbot):
    """Growing or trimming a mask gives its finding the mask's volume and equivalent diameter
    (what the export writes); the point's size follows, undo takes both back."""
    from napari_medcad.core.findings import equivalent_diameter_mm

    labels, voxel_mm3 = review.labels, 0.8 * 0.9 * 2.0

    def finding():
        return review.session.findings[1]

    def measured():
        volume = float(np.count_nonzero(labels.data == 1)) * voxel_mm3
        return pytest.approx(volume), pytest.approx(equivalent_diameter_mm(volume, 3))

    size_before = float(np.asarray(review.points.size)[0])
    z, y, x = CENTRES[0]
    stroke(labels, lambda: labels.paint((z, y + 4, x), 1), qtbot)  # the mask grows (a model finding had no volume)
    qtbot.waitUntil(lambda: review.statuses()[1] == "edited", timeout=3000)
    grown = finding()
    assert grown.volume_mm3 > 125 * voxel_mm3 and (grown.volume_mm3, grown.diameter_mm) == measured()
    assert float(np.asarray(review.points.size)[0]) != size_before
    stroke(labels, lambda: labels.paint(CENTRES[0], 0), qtbot)  # then trimmed: counted by the stroke's voxels
    qtbot.waitUntil(lambda: len(review.session.history) == 2, timeout=3000)
    assert finding().volume_mm3 < grown.volume_mm3 and (finding().volume_mm3, finding().diameter_mm) == measured()
    saved = json.loads(review.path.read_text())["findings"]["items"][0]
    assert saved["volume_mm3"] == pytest.approx(finding().volume_mm3)
    review.session.undo()
    assert (finding().volume_mm3, finding().diameter_mm) == (grown.volume_mm3, grown.diameter_mm) == measured()
    review.session.undo()
    assert finding().volume_mm3 is None and finding().diameter_mm == 5.0
    assert float(np.asarray(review.points.size)[0]) == size_before


def test_a_box_edit_compares_only_the_boxes_that_changed(review, qtbot, monkeypatch):
    """With 5,000 findings a box gesture took 1.4 s (napari rebuilt the layer's data list for
    each box, and every finding's box was redrawn to compare): now the layer is compared with
    what was last drawn, at once, and only a changed box is looked at."""
    from napari_medcad.napari import review_sync

    review.session.accept(1)  # redraws nothing but colours; the drawing is known from the start
    calls = []
    real = review_sync.box_change
    monkeypatch.setattr(review_sync, "box_change", lambda *args: calls.append(args[1].id) or real(*args))
    review.layers.sync_from_boxes()
    assert calls == [] and len(review.session.history) == 1
    data = [np.array(box, float) for box in review.boxes.data]
    data[1] = data[1] + np.array([0.0, 2.0, 3.0])  # the reader drags finding 2's box
    review.boxes.data = data
    review.layers.sync_from_boxes()
    assert calls == [2] and review.session.history[-1].kind == "move"
    assert review.statuses()[2] == "edited"
