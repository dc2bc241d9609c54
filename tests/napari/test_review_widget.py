"""The Review widget in a real viewer: rows move the view, keyboard decisions reach the table, the
review file and the layers; Points and Labels edits come back as session actions; undo/redo;
reopening restores the review; a review file of another image is refused; 2-D images work."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_medcad.core.findings import Findings
from napari_medcad.core.image import lps_to_napari_world
from napari_medcad.core.review import default_review_path
from napari_medcad.napari.findings_layers import (
    ROLE_LABELS,
    ROLE_POINTS,
    add_findings_layers,
    findings_layer_data,
    role_of,
)
from napari_medcad.napari.layers import image_layer_data
from review_case import CENTRES, GEOMETRY_3D, make_case
from napari_medcad.napari.findings_table import COLUMNS
from napari_medcad.napari.widgets.review import ReviewWidget



def open_case(viewer, ndim=3, seed=0):
    image, findings, labels = make_case(ndim, seed)
    data, kwargs, kind = image_layer_data(image)
    viewer.add_image(data, **kwargs)
    layers = add_findings_layers(viewer, findings_layer_data(findings, image, labels=labels, source_layer="ct"))
    return image, findings, {role_of(layer): layer for layer in layers}


@pytest.fixture
def case(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, findings, layers = open_case(viewer)
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.session is not None, widget.status_label.text()
    return widget, image, layers


def assert_view_on(viewer, world):
    """The slice shown holds the finding (napari snaps the slice position to the grid: within
    half a step) and the camera is centred exactly on it."""
    world = np.asarray(world, float)
    offset = viewer.dims.ndim - len(world)
    for axis in viewer.dims.not_displayed:
        step = viewer.dims.range[axis].step
        assert abs(viewer.dims.point[axis] - world[axis - offset]) <= step / 2 + 1e-9
    displayed = [axis - offset for axis in viewer.dims.displayed]
    np.testing.assert_allclose(viewer.camera.center[-len(displayed):], world[displayed], atol=1e-6)


def dock(widget, qtbot):
    """Shortcuts fire only in the active window: dock the widget and activate the viewer."""
    widget.viewer.window.add_dock_widget(widget)
    window = widget.viewer.window._qt_window
    window.show()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=3000)


def table_column(widget, name):
    column = COLUMNS.index(name)
    return {int(widget.proxy.index(row, 0).data()): widget.proxy.index(row, column).data()
            for row in range(widget.proxy.rowCount())}


def saved_statuses(image):
    data = json.loads(default_review_path(image.content_signature()).read_text())
    return {item["id"]: item["status"] for item in data["findings"]["items"]}


def layer_statuses(points):
    return dict(zip(points.features["id"].astype(int), points.features["status"]))


def test_constructs_without_findings(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.session is None and widget.proxy.rowCount() == 0
    open_case(viewer)  # findings arriving later are picked up
    assert widget.session is not None and widget.proxy.rowCount() == 3


def test_row_selection_moves_the_view(case):
    widget, image, layers = case
    viewer = widget.viewer
    for finding_id in (2, 3, 1):
        assert widget.select_finding(finding_id)
        finding = widget.session.findings[finding_id]
        world = lps_to_napari_world(finding.centre_world_mm)
        assert_view_on(viewer, world)
        row = widget.model.rows[finding_id]
        assert layers[ROLE_POINTS].selected_data == {row}
        assert layers[ROLE_LABELS].selected_label == finding_id
    # the slice shown is the finding's: its point is in view
    layer_z = layers[ROLE_POINTS].world_to_data(viewer.dims.point)[0]
    assert round(layer_z) == CENTRES[0][0]
    viewer.dims.ndisplay = 3
    widget.select_finding(2)
    np.testing.assert_allclose(viewer.camera.center, lps_to_napari_world(widget.session.findings[2].centre_world_mm))


def test_keyboard_accept_reject_and_undo_redo(case, qtbot):
    widget, image, layers = case
    points = layers[ROLE_POINTS]
    dock(widget, qtbot)
    widget.select_finding(1)
    widget.table.setFocus()
    qtbot.keyClick(widget.table, Qt.Key.Key_A)
    assert widget.current_finding().id == 2  # a decision moves on to the next row
    qtbot.keyClick(widget.table, Qt.Key.Key_R)
    expected = {1: "accepted", 2: "rejected", 3: "pending"}
    assert table_column(widget, "status") == expected
    assert saved_statuses(image) == expected
    assert layer_statuses(points) == expected
    rejected_row = widget.model.rows[2]
    assert points.face_color[rejected_row][3] == 0  # hollow ring
    qtbot.keyClick(widget.table, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert saved_statuses(image)[2] == "pending" and layer_statuses(points)[2] == "pending"
    assert table_column(widget, "status")[2] == "pending"
    qtbot.keyClick(widget.table, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert saved_statuses(image)[2] == "rejected"
    qtbot.keyClick(widget.table, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(widget.table, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    assert layer_statuses(points)[2] == "rejected"
    # next / previous, by letter and by arrow
    widget.select_finding(1)
    qtbot.keyClick(widget.table, Qt.Key.Key_N)
    assert widget.current_finding().id == 2
    qtbot.keyClick(widget.table, Qt.Key.Key_Down)
    assert widget.current_finding().id == 3
    qtbot.keyClick(widget.table, Qt.Key.Key_P)
    qtbot.keyClick(widget.table, Qt.Key.Key_Up)
    assert widget.current_finding().id == 1


def test_class_note_and_filters(case):
    widget, image, layers = case
    widget.select_finding(3)
    widget.set_class("mass")
    widget.set_note("  near   the pleura ")
    finding = widget.session.findings[3]
    assert (finding.label, finding.note, finding.status.value) == ("mass", "near the pleura", "edited")
    assert table_column(widget, "class")[3] == "mass" and table_column(widget, "note")[3] == "near the pleura"
    assert layers[ROLE_POINTS].features["label"][widget.model.rows[3]] == "mass"
    widget.min_probability.setValue(0.4)
    assert sorted(table_column(widget, "id")) == [1, 2]
    widget.min_probability.setValue(0.0)
    widget.status_filter.setCurrentText("edited")
    assert list(table_column(widget, "id")) == [3]


def test_a_note_goes_to_the_finding_it_was_typed_for_when_the_row_changes_first(case, qtbot):
    from qtpy.QtTest import QTest

    widget, image, layers = case
    dock(widget, qtbot)
    widget.select_finding(2)
    widget.note_edit.setFocus()
    qtbot.waitUntil(widget.note_edit.hasFocus, timeout=3000)
    QTest.keyClicks(widget.note_edit, "note for two")
    widget.select_finding(3)  # the row follows a point clicked on the canvas, say, before Enter
    QTest.keyClick(widget.note_edit, Qt.Key.Key_Return)
    notes = {f.id: f.note for f in widget.session.findings}
    assert notes[2] == "note for two" and notes[3] == ""
    assert widget.note_edit.text() == ""  # the edit shows the current finding's (empty) note


def test_points_edits_come_back(case, qtbot):
    widget, image, layers = case
    points = layers[ROLE_POINTS]
    # move finding 1 by two voxels in x
    row = widget.model.rows[1]
    data = points.data.copy()
    data[row, -1] += 2
    points.data = data
    qtbot.waitUntil(lambda: widget.session.findings[1].status.value == "edited", timeout=3000)
    expected = tuple(image.index_to_world(np.array(CENTRES[0], float) + [0, 0, 2]))
    np.testing.assert_allclose(widget.session.findings[1].centre_world_mm, expected, atol=1e-6)
    assert float(table_column(widget, "x mm")[1]) == pytest.approx(expected[0], abs=0.05)
    # delete finding 2's point: a model finding is rejected and stays drawn
    points.selected_data = {widget.model.rows[2]}
    points.remove_selected()
    qtbot.waitUntil(lambda: widget.session.findings[2].status.value == "rejected", timeout=3000)
    assert len(points.data) == 3 and layer_statuses(points)[2] == "rejected"
    assert table_column(widget, "status")[2] == "rejected"
    # add a point: a reader's finding at that position
    points.add(np.array([5.0, 20.0, 20.0]))
    qtbot.waitUntil(lambda: len(widget.session.findings) == 4, timeout=3000)
    added = widget.session.findings[4]
    assert added.status.value == "added" and added.source == "reader"
    np.testing.assert_allclose(added.centre_world_mm, image.index_to_world([5.0, 20.0, 20.0]), atol=1e-6)
    assert table_column(widget, "status")[4] == "added" and layer_statuses(points)[4] == "added"
    assert widget.current_finding().id == 4
    # deleting a reader's own point removes it
    points.selected_data = {widget.model.rows[4]}
    points.remove_selected()
    qtbot.waitUntil(lambda: len(widget.session.findings) == 3, timeout=3000)
    assert len(points.data) == 3 and 4 not in table_column(widget, "id")
    # and all of it undoes
    widget.undo()
    assert len(widget.session.findings) == 4 and len(points.data) == 4
    saved = saved_statuses(image)
    assert saved == {1: "edited", 2: "rejected", 3: "pending", 4: "added"}


def test_labels_paint_adds_and_erase_rejects(case, qtbot):
    widget, image, layers = case
    labels = layers[ROLE_LABELS]
    # paint a new component (value 9) as a 3x3x3 cube
    labels.selected_label = 9
    labels.data_setitem(tuple(np.mgrid[6:9, 5:8, 34:37].reshape(3, -1)), 9)
    qtbot.waitUntil(lambda: len(widget.session.findings) == 4, timeout=3000)
    added = widget.session.findings[4]
    assert (added.status.value, added.mask_value) == ("added", 9)
    np.testing.assert_allclose(added.centre_world_mm, image.index_to_world([7, 6, 35]), atol=1e-6)
    volume = 27 * np.prod(GEOMETRY_3D.spacing_xyz)
    assert added.volume_mm3 == pytest.approx(volume)
    assert added.diameter_mm == pytest.approx((6 * volume / np.pi) ** (1 / 3))
    assert table_column(widget, "status")[4] == "added" and len(layers[ROLE_POINTS].data) == 4
    # erase all of finding 3's mask: rejected; erasing part of finding 1's is a mask edit
    labels.data_setitem(tuple(np.argwhere(labels.data == 3).T), 0)
    qtbot.waitUntil(lambda: widget.session.findings[3].status.value == "rejected", timeout=3000)
    history = len(widget.session.history)
    labels.data_setitem(tuple(np.argwhere(labels.data == 1)[:5].T), 0)
    qtbot.waitUntil(lambda: len(widget.session.history) == history + 1, timeout=3000)
    assert widget.session.findings[1].status.value == "edited" and widget.session.history[-1].kind == "mask"
    assert saved_statuses(image)[3] == "rejected" and table_column(widget, "status")[3] == "rejected"


def test_ctrl_z_on_the_labels_layer_undoes_the_paint_in_the_review_too(case, qtbot):
    """napari's own Labels undo puts voxels back without an event: bound to it, the review would
    keep a finding that the layer no longer shows.  The layer's Ctrl+Z is the review's undo."""
    widget, image, layers = case
    labels, viewer = layers[ROLE_LABELS], widget.viewer
    cube = tuple(np.mgrid[6:9, 5:8, 34:37].reshape(3, -1))
    labels.selected_label = 9
    labels.data_setitem(cube, 9)  # a stroke: napari records it in its own history too
    qtbot.waitUntil(lambda: len(widget.session.findings) == 4, timeout=3000)
    viewer.layers.selection.active = labels
    keys = viewer.window._qt_viewer._key_map_handler
    keys.press_key("Control-Z")
    qtbot.waitUntil(lambda: len(widget.session.findings) == 3, timeout=3000)
    assert (labels.data[cube] == 0).all() and len(layers[ROLE_POINTS].data) == 3
    keys.press_key("Control-Shift-Z")
    qtbot.waitUntil(lambda: len(widget.session.findings) == 4, timeout=3000)
    assert (labels.data[cube] == 9).all() and len(layers[ROLE_POINTS].data) == 4
    widget._stop_review("stopped")
    assert not labels.keymap  # napari's own undo again once the review lets go of the layer


def test_reopen_restores_the_review(case, make_napari_viewer, qtbot):
    widget, image, layers = case
    widget.select_finding(1)
    widget.accept_current()
    widget.select_finding(3)
    widget.reject_current()
    layers[ROLE_POINTS].add(np.array([4.0, 12.0, 30.0]))
    qtbot.waitUntil(lambda: len(widget.session.findings) == 4, timeout=3000)
    widget.close()

    viewer = make_napari_viewer()
    open_case(viewer)  # same image, the model's findings again
    reopened = ReviewWidget(viewer)
    qtbot.addWidget(reopened)
    assert {f.id: f.status.value for f in reopened.session.findings} == {
        1: "accepted", 2: "pending", 3: "rejected", 4: "added"}
    points = next(layer for layer in viewer.layers if role_of(layer) == ROLE_POINTS)
    assert layer_statuses(points) == {1: "accepted", 2: "pending", 3: "rejected", 4: "added"}
    assert table_column(reopened, "status")[4] == "added"
    assert "resumed" in reopened.status_label.text()
    reopened.undo()  # the history came back too
    assert 4 not in {f.id for f in reopened.session.findings}


def test_review_file_of_another_image_is_refused(make_napari_viewer, qtbot, shown_errors):
    viewer = make_napari_viewer()
    image_a, _, _ = open_case(viewer, seed=1)
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    widget.select_finding(1)
    widget.accept_current()
    path_a = default_review_path(image_a.content_signature())
    # the same review file offered for another image, at that image's review path
    other = make_case(seed=2)[0]
    shutil.copy(path_a, default_review_path(other.content_signature()))
    viewer2 = make_napari_viewer()
    open_case(viewer2, seed=2)
    refused = ReviewWidget(viewer2)
    qtbot.addWidget(refused)
    assert refused.session is None and refused.proxy.rowCount() == 0
    assert shown_errors and "different image" in str(shown_errors[-1])
    # opening image A's file explicitly: accepted by image A's widget
    before = len(shown_errors)
    assert widget.open_review_file(path_a) is not None
    assert len(shown_errors) == before and widget.session.findings[1].status.value == "accepted"


@pytest.mark.parametrize("ndisplay", [2, 3])
def test_2d_image(make_napari_viewer, qtbot, ndisplay):
    viewer = make_napari_viewer()
    image, findings, layers = open_case(viewer, ndim=2)
    viewer.dims.ndisplay = ndisplay
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.select_finding(2)
    world = lps_to_napari_world(findings[2].centre_world_mm)
    assert_view_on(viewer, world)
    assert table_column(widget, "z mm")[2] == ""
    widget.accept_current()
    assert saved_statuses(image)[2] == "accepted"
    labels = layers[ROLE_LABELS]
    labels.data_setitem(tuple(np.mgrid[2:5, 36:39].reshape(2, -1)), 7)
    qtbot.waitUntil(lambda: len(widget.session.findings) == 4, timeout=3000)
    assert widget.session.findings[4].mask_value == 7 and len(widget.session.findings[4].centre_world_mm) == 2


def test_export_button_writes_the_reviewed_case(case, qtbot, tmp_path):
    from napari_medcad.napari.widgets import review

    widget, image, layers = case
    if review.export_case is None:
        assert widget.export_button is None  # no export function yet: no button either
        return
    widget.select_finding(1)
    widget.accept_current()
    widget.select_finding(3)
    widget.reject_current()
    values = []
    widget.runner.bar.valueChanged.connect(values.append)
    assert widget.export(tmp_path / "dataset") is not None
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert widget.runner.last_error is None, widget.runner.last_error
    assert values and values[-1] == 1000 and "exported" in widget.status_label.text()
    annotations = (tmp_path / "dataset" / "annotations.csv").read_text().splitlines()
    candidates = (tmp_path / "dataset" / "candidates.csv").read_text().splitlines()
    assert len(annotations) == 2 and len(candidates) >= 2  # finding 1 accepted; 3 a hard negative
    x, y, z = widget.session.findings[1].centre_world_mm
    assert f"{x:.1f}" in annotations[1] or f"{x:.2f}" in annotations[1]


def test_selecting_a_point_selects_its_row_without_moving_the_view(case, qtbot):
    widget, image, layers = case
    points = layers[ROLE_POINTS]
    widget.select_finding(1)
    point_before, centre_before = tuple(widget.viewer.dims.point), tuple(widget.viewer.camera.center)
    points.selected_data = {widget.model.rows[3]}  # what napari's select tool does on a click
    qtbot.waitUntil(lambda: widget.current_finding() is not None and widget.current_finding().id == 3, timeout=3000)
    assert tuple(widget.viewer.dims.point) == point_before and tuple(widget.viewer.camera.center) == centre_before
    assert layers[ROLE_LABELS].selected_label == 3
    # the row follows the point, and a row still moves the view and selects the point
    widget.select_finding(2)
    assert points.selected_data == {widget.model.rows[2]}
    assert_view_on(widget.viewer, lps_to_napari_world(widget.session.findings[2].centre_world_mm))
    points.selected_data = {widget.model.rows[1], widget.model.rows[3]}  # several points: no row change
    qtbot.wait(50)
    assert widget.current_finding().id == 2


def test_boxes_follow_decisions_undo_and_reader_boxes(case, qtbot):
    from napari_medcad.napari.findings_layers import ROLE_BOXES
    from napari_medcad.napari.review_sync import BOX_COLORS
    from napari_medcad.core.findings import Status

    widget, image, layers = case
    boxes = layers[ROLE_BOXES]
    assert list(boxes.features["id"]) == [1, 2, 3] and len(boxes.data) == 3
    for finding_id, centre in zip((1, 2, 3), CENTRES):
        assert np.ptp(boxes.data[finding_id - 1][:, 0]) == 0 and boxes.data[finding_id - 1][0, 0] == centre[0]
    widget.select_finding(1)
    widget.accept_current()
    widget.select_finding(3)
    widget.reject_current()
    np.testing.assert_allclose(boxes.edge_color, [BOX_COLORS[Status.ACCEPTED], BOX_COLORS[Status.PENDING],
                                                  BOX_COLORS[Status.REJECTED]])
    widget.undo()
    np.testing.assert_allclose(boxes.edge_color[2], BOX_COLORS[Status.PENDING])
    # the boxes shown are the session's: a point added by the reader gets a box too
    layers[ROLE_POINTS].add(np.array([5.0, 20.0, 20.0]))
    qtbot.waitUntil(lambda: len(widget.session.findings) == 4, timeout=3000)
    assert list(boxes.features["id"]) == [1, 2, 3, 4] and boxes.data[3][0, 0] == 5.0
    # a box the reader draws is an added finding at its centre, the mean side as diameter
    boxes.add(np.array([[9.0, 30.0, 4.0], [9.0, 30.0, 10.0], [9.0, 36.0, 10.0], [9.0, 36.0, 4.0]]),
              shape_type="rectangle")
    qtbot.waitUntil(lambda: len(widget.session.findings) == 5, timeout=3000)
    drawn = widget.session.findings[5]
    assert (drawn.status.value, drawn.source) == ("added", "reader")
    np.testing.assert_allclose(drawn.centre_world_mm, image.index_to_world([9.0, 33.0, 7.0]), atol=1e-6)
    assert drawn.diameter_mm == pytest.approx(np.mean([6 * 0.9, 6 * 0.8]))  # rows 0.9 mm, columns 0.8 mm
    assert len(layers[ROLE_POINTS].data) == 5 and len(boxes.data) == 5
    assert widget.current_finding().id == 5


def test_undo_of_mask_edits_restores_the_voxels(case, qtbot):
    widget, image, layers = case
    labels = layers[ROLE_LABELS]
    original = labels.data.copy()
    # erase finding 3's mask in two strokes: the first is a mask edit, the second rejects
    where = np.argwhere(labels.data == 3)
    labels.data_setitem(tuple(where[:40].T), 0)
    qtbot.waitUntil(lambda: widget.session.findings[3].status.value == "edited", timeout=3000)
    trimmed = labels.data.copy()
    labels.data_setitem(tuple(where[40:].T), 0)
    qtbot.waitUntil(lambda: widget.session.findings[3].status.value == "rejected", timeout=3000)
    assert not np.any(labels.data == 3)
    widget.undo()  # the second stroke's voxels are back, the finding edited again
    assert widget.session.findings[3].status.value == "edited"
    np.testing.assert_array_equal(labels.data, trimmed)
    widget.redo()
    assert widget.session.findings[3].status.value == "rejected" and not np.any(labels.data == 3)
    widget.undo()
    widget.undo()  # both strokes undone: the whole mask is back, and the finding pending
    assert widget.session.findings[3].status.value == "pending"
    np.testing.assert_array_equal(labels.data, original)
    # painting a new component over part of finding 1's mask: undo takes the paint away and gives
    # finding 1 its voxels back; redo paints it again
    labels.data_setitem(tuple(np.mgrid[1:4, 8:11, 10:16].reshape(3, -1)), 9)
    qtbot.waitUntil(lambda: len(widget.session.findings) == 4, timeout=3000)
    painted = labels.data.copy()
    widget.undo()
    assert len(widget.session.findings) == 3
    np.testing.assert_array_equal(labels.data, original)
    widget.redo()
    assert widget.session.findings[4].mask_value == 9
    np.testing.assert_array_equal(labels.data, painted)


def test_closing_the_masks_or_boxes_keeps_the_review_going(case, qtbot):
    from napari_medcad.napari.findings_layers import ROLE_BOXES

    widget, image, layers = case
    widget.viewer.layers.remove(layers[ROLE_BOXES])
    widget.viewer.layers.remove(layers[ROLE_LABELS])
    assert widget.layers.boxes is None and widget.layers.labels is None
    widget.select_finding(2)
    widget.accept_current()
    assert saved_statuses(image)[2] == "accepted" and layer_statuses(layers[ROLE_POINTS])[2] == "accepted"


def test_the_current_finding_is_kept_by_id_when_the_list_changes(make_napari_viewer, qtbot):
    """The table's model is the session's own list: after an undo of the only added finding the
    row read before the table was rebuilt named nothing (IndexError, a ghost row, Redo greyed)."""
    viewer = make_napari_viewer()
    image, findings, _ = make_case()
    empty = Findings(geometry=findings.geometry, shape_zyx=findings.shape_zyx, provenance=findings.provenance)
    data, kwargs, _ = image_layer_data(image)
    viewer.add_image(data, **kwargs)
    added = add_findings_layers(viewer, findings_layer_data(empty, image, source_layer="ct"))
    points = next(layer for layer in added if role_of(layer) == ROLE_POINTS)
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    points.add(np.array([5.0, 20.0, 20.0]))  # the reader marks what the model missed...
    qtbot.waitUntil(lambda: len(widget.session.findings) == 1, timeout=3000)
    assert widget.current_finding().id == 1
    widget.buttons["undo"].click()  # ...and takes it back
    assert widget.proxy.rowCount() == 0 and widget.current_finding() is None
    assert widget.buttons["redo"].isEnabled() and not widget.buttons["undo"].isEnabled()
    widget.buttons["redo"].click()
    assert table_column(widget, "status") == {1: "added"} and widget.buttons["undo"].isEnabled()
    points.selected_data = {0}
    points.remove_selected()  # deleting it on the canvas
    qtbot.waitUntil(lambda: len(widget.session.findings) == 0, timeout=3000)
    assert widget.proxy.rowCount() == 0 and widget.current_finding() is None


def test_a_removal_before_the_current_row_keeps_the_same_finding_current(case, qtbot):
    widget, image, layers = case
    points = layers[ROLE_POINTS]
    for count, position in ((4, [5.0, 20.0, 20.0]), (5, [9.0, 12.0, 30.0])):
        points.add(np.array(position))
        qtbot.waitUntil(lambda: len(widget.session.findings) == count, timeout=3000)
    assert [f.id for f in widget.session.findings] == [1, 2, 3, 4, 5] and widget.current_finding().id == 5
    widget.session.remove(4)  # a reader's finding before the current one in the list: the rows shift
    assert widget.current_finding().id == 5 and sorted(table_column(widget, "id")) == [1, 2, 3, 5]
    assert widget.table.selectionModel().currentIndex().siblingAtColumn(0).data() == "5"
    widget.undo()
    assert widget.current_finding().id == 5 and sorted(table_column(widget, "id")) == [1, 2, 3, 4, 5]
    widget.select_finding(4)
    widget.session.remove(4)  # the current finding itself goes: no current row, no decision possible
    assert widget.current_finding() is None and not widget.buttons["accept"].isEnabled()


def test_canvas_edits_select_their_finding_without_moving_the_view(case, qtbot):
    from napari_medcad.napari.findings_layers import ROLE_BOXES

    widget, image, layers = case
    viewer = widget.viewer
    widget.select_finding(1)
    edits = (
        lambda: layers[ROLE_LABELS].data_setitem(tuple(np.mgrid[6:9, 5:8, 34:37].reshape(3, -1)), 9),
        lambda: layers[ROLE_BOXES].add(np.array([[9.0, 30.0, 4.0], [9.0, 30.0, 10.0], [9.0, 36.0, 10.0],
                                                 [9.0, 36.0, 4.0]]), shape_type="rectangle"),
        lambda: setattr(layers[ROLE_POINTS], "data", layers[ROLE_POINTS].data
                        + (np.arange(len(layers[ROLE_POINTS].data)) == widget.model.rows[2])[:, None] * [0, 1.0, 0]),
    )
    for edit, edited in zip(edits, (4, 5, 2)):
        viewer.camera.center = (0.0, 30.0, -30.0)
        point = tuple(viewer.dims.point)
        history = len(widget.session.history)
        edit()
        qtbot.waitUntil(lambda: len(widget.session.history) > history, timeout=3000)
        assert widget.current_finding().id == edited
        assert tuple(viewer.camera.center) == (0.0, 30.0, -30.0) and tuple(viewer.dims.point) == point
    widget.next()  # choosing a row still moves the view
    assert_view_on(viewer, lps_to_napari_world(widget.current_finding().centre_world_mm))


def test_an_unreadable_review_file_is_reported_once(make_napari_viewer, qtbot, shown_errors):
    image = make_case()[0]
    path = default_review_path(image.content_signature())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{ not json")
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    open_case(viewer)
    assert widget.session is None and len(shown_errors) == 1 and "not valid JSON" in str(shown_errors[0])
    viewer.add_points(np.zeros((1, 3)), name="my annotations")  # layers that change nothing for it
    viewer.layers.remove(viewer.add_image(np.zeros((4, 4, 4)), name="other"))
    assert len(shown_errors) == 1 and "not valid JSON" in widget.status_label.text()
    path.unlink()  # the file changed: the next layer event tries again, and succeeds
    viewer.add_image(np.zeros((4, 4, 4)), name="other")
    assert widget.session is not None and len(shown_errors) == 1
    widget._stop_review("")
    path.write_text("{ not json")
    assert widget.start_review() is None and len(shown_errors) == 2  # asked for: said again


def test_findings_follow_a_renamed_image(case, qtbot):
    from napari_medcad.napari.findings_layers import ROLE_BOXES

    widget, image, layers = case
    viewer = widget.viewer
    viewer.layers["ct"].name = "chest CT"
    assert {layer.metadata["medcad"]["source_layer"] for layer in layers.values()} == {"chest CT"}
    viewer.layers.remove(layers[ROLE_BOXES])  # the review takes up its layers again by the image
    assert widget.layers.labels is layers[ROLE_LABELS]
    labels = layers[ROLE_LABELS]
    labels.data_setitem(tuple(np.argwhere(labels.data == 3).T), 0)
    qtbot.waitUntil(lambda: widget.session.findings[3].status.value == "rejected", timeout=3000)
    widget._stop_review("")
    assert widget.select_findings("ct findings") is not None  # and can be reviewed again
    assert widget.session.findings[3].status.value == "rejected"


def test_the_findings_list_follows_a_renamed_findings_layer(case):
    widget, image, layers = case
    layers[ROLE_POINTS].name = "my findings"
    assert widget.findings_combo.currentText() == "my findings"
    assert [widget.findings_combo.itemText(i) for i in range(widget.findings_combo.count())] == ["my findings"]


@pytest.mark.parametrize("role", [ROLE_POINTS, "findings_boxes"])
def test_ctrl_z_on_the_points_or_boxes_layer_is_the_reviews_undo(case, qtbot, role):
    widget, image, layers = case
    viewer = widget.viewer
    widget.select_finding(1)
    widget.accept_current()
    viewer.layers.selection.active = layers[role]
    keys = viewer.window._qt_viewer._key_map_handler
    keys.press_key("Control-Z")
    assert widget.session.findings[1].status.value == "pending"
    keys.press_key("Control-Shift-Z")
    assert widget.session.findings[1].status.value == "accepted"
    widget._stop_review("stopped")
    assert not layers[role].keymap  # napari's own bindings again once the review lets go


def _accepted_one(make_napari_viewer, qtbot):
    """A review of the case in a new viewer, finding 1 accepted: (viewer, image, findings, layers, widget)."""
    viewer = make_napari_viewer()
    image, findings, layers = open_case(viewer)
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    widget.select_finding(1)
    widget.accept_current()
    return viewer, image, findings, layers, widget


def _saved_review_of_other_findings(make_napari_viewer, qtbot):
    """A review of image 'ct' with one decision, then the same image opened with other findings
    (finding 3 left out, as another model run would)."""
    _, image, findings, _, first = _accepted_one(make_napari_viewer, qtbot)
    first.close()
    other = Findings(geometry=findings.geometry, shape_zyx=findings.shape_zyx, provenance=findings.provenance)
    for finding in list(findings)[:2]:
        other.add(finding)
    viewer = make_napari_viewer()
    data, kwargs, _ = image_layer_data(image)
    viewer.add_image(data, **kwargs)
    add_findings_layers(viewer, findings_layer_data(other, image, labels=make_case()[2], source_layer="ct"))
    return viewer, image


@pytest.mark.parametrize("answer", ["Resume", "Start over"])
def test_a_saved_review_of_other_findings_is_resumed_or_started_over_as_the_reader_says(
        make_napari_viewer, qtbot, monkeypatch, answer):
    from qtpy.QtWidgets import QMessageBox

    asked = []

    def click(box):
        asked.append(box.text())
        next(button for button in box.buttons() if button.text() == answer).click()

    monkeypatch.setattr(QMessageBox, "exec", click)
    viewer, image = _saved_review_of_other_findings(make_napari_viewer, qtbot)
    path = default_review_path(image.content_signature())
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    assert len(asked) == 1 and "other findings" in asked[0]
    kept = sorted(path.parent.glob("*.replaced-*.review.json"))
    if answer == "Resume":
        assert {f.id: f.status.value for f in widget.session.findings} == {1: "accepted", 2: "pending", 3: "pending"}
        assert not kept
    else:
        assert {f.id: f.status.value for f in widget.session.findings} == {1: "pending", 2: "pending"}
        assert widget.proxy.rowCount() == 2 and not widget.session.history
        assert len(kept) == 1 and json.loads(kept[0].read_text())["findings"]["items"][0]["status"] == "accepted"


def test_a_review_replaced_with_the_readers_consent_starts_over_without_asking(make_napari_viewer, qtbot, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    from napari_medcad.napari.widgets.review import REPLACES_REVIEW

    monkeypatch.setattr(QMessageBox, "exec", lambda box: pytest.fail("asked: " + box.text()))
    viewer, image, findings, layers, widget = _accepted_one(make_napari_viewer, qtbot)
    for layer in list(layers.values()):
        viewer.layers.remove(layer)
    data = findings_layer_data(findings, image, labels=make_case()[2], source_layer="ct")
    data = [(d, {**k, "metadata": {**k["metadata"], "medcad": {**k["metadata"]["medcad"], REPLACES_REVIEW: True}}}
             if k["metadata"]["medcad"]["role"] == ROLE_POINTS else k, kind) for d, k, kind in data]
    new = {role_of(layer): layer for layer in add_findings_layers(viewer, data)}
    assert widget.points_layer is new[ROLE_POINTS] and not widget.session.history
    assert set(table_column(widget, "status").values()) == {"pending"}
    assert len(list(default_review_path(image.content_signature()).parent.glob("*.replaced-*"))) == 1
    assert REPLACES_REVIEW not in new[ROLE_POINTS].metadata["medcad"]  # once: reopening it resumes
    widget.select_finding(2)
    widget.accept_current()
    widget._stop_review("")
    assert widget.select_findings(new[ROLE_POINTS].name).findings[2].status.value == "accepted"


def test_the_inference_widget_marks_replacing_findings_with_the_reviews_key():
    from napari_medcad.napari.widgets import inference, review

    assert inference.REPLACES_REVIEW == review.REPLACES_REVIEW
