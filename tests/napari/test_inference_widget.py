"""The Inference dock widget in a real viewer: a run adds findings layers where the blobs are,
the bar moves, Cancel adds nothing, a re-run asks before replacing edited findings, errors are
notifications, and the layer context menu command runs the default model."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from napari.layers import Labels, Points, Shapes

from napari_medcad.core.image import Geometry, MedicalImage, napari_world_to_lps
from napari_medcad.core.models.registry import find_model
from napari_medcad.napari import inference_jobs
from napari_medcad.napari.findings_layers import ROLE_HEATMAP, findings_layers_of, role_of
from napari_medcad.napari.layers import image_layer_data
from napari_medcad.napari.widgets import inference
from napari_medcad.napari.widgets.inference import InferenceWidget

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_factory import write_bright_blob_model  # noqa: E402

#: blob centres (index z, y, x) and radii in voxels
BLOBS = [((5, 12, 14), 2.5), ((11, 30, 34), 3.5)]
GEOMETRY = Geometry((0.8, 0.9, 2.0), (-20.0, 15.0, -40.0), (0, -1, 0, 1, 0, 0, 0, 0, 1))  # rotated in-plane


def blob_image(name="ct") -> MedicalImage:
    zz, yy, xx = np.mgrid[:16, :44, :48]
    array = np.zeros(zz.shape, np.int16)
    spacing_zyx = np.array(GEOMETRY.spacing_zyx)
    for centre, radius in BLOBS:
        distance = np.sqrt(sum(((g - c) * s / spacing_zyx[1]) ** 2
                               for g, c, s in zip((zz, yy, xx), centre, spacing_zyx)))
        array[distance <= radius] = 1000
    return MedicalImage(array, GEOMETRY, modality="CT", name=name)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "bright"
    write_bright_blob_model(folder, roi_size_zyx=(8, 24, 24))
    return folder


@pytest.fixture
def widget(make_napari_viewer, model_folder):
    viewer = make_napari_viewer()
    data, kwargs, kind = image_layer_data(blob_image())
    viewer.add_image(data, **kwargs)
    widget = InferenceWidget(viewer)
    assert widget.add_model_path(model_folder) is not None
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    return widget


def run_to_end(widget, qtbot, timeout=30000):
    worker = widget.run()
    assert worker is not None, widget.message.text()
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)  # run, then layers added turn by turn
    assert widget.runner.last_error is None, widget.runner.last_error
    assert widget.run_button.isEnabled()


def by_kind(viewer, kind):
    return [layer for layer in viewer.layers if isinstance(layer, kind) and role_of(layer)]


def test_run_adds_findings_at_the_blobs(widget, qtbot):
    viewer = widget.viewer
    values = []
    widget.runner.bar.valueChanged.connect(values.append)
    run_to_end(widget, qtbot)
    assert len(set(values)) >= 4 and values[-1] == 1000  # the bar moved in steps, then finished
    (points,), (labels,), (boxes,) = by_kind(viewer, Points), by_kind(viewer, Labels), by_kind(viewer, Shapes)
    assert len(points.data) == len(BLOBS)
    expected = [GEOMETRY.index_to_world(centre) for centre, _ in BLOBS]
    found = sorted((tuple(napari_world_to_lps(points.data_to_world(p))) for p in points.data))
    np.testing.assert_allclose(np.array(found), np.array(sorted(map(tuple, expected))), atol=0.3)
    assert set(points.features["status"]) == {"pending"} and list(points.features["id"]) == [1, 2]
    assert labels.data.shape == (16, 44, 48) and set(np.unique(labels.data)) == {0, 1, 2}
    np.testing.assert_allclose(labels.affine.affine_matrix, viewer.layers["ct"].affine.affine_matrix)
    np.testing.assert_allclose(labels.scale, viewer.layers["ct"].scale)
    assert set(boxes.features["id"]) == {1, 2}
    for layer in (points, labels, boxes):
        info = layer.metadata["medcad"]
        assert info["model"] == "bright-blobs" and info["source_layer"] == "ct"
    heatmap = [layer for layer in viewer.layers if role_of(layer) == ROLE_HEATMAP]
    assert len(heatmap) == 1 and not heatmap[0].visible and heatmap[0].blending == "additive"
    widget.heatmap_check.setChecked(True)
    assert heatmap[0].visible
    assert "2 findings" in widget.message.text()


def test_the_runs_notes_are_shown_under_its_summary(widget):
    from types import SimpleNamespace

    result = SimpleNamespace(findings=[], report={"model": {"name": "m"}, "device": "cpu", "timings_s": {"total_s": 1.0},
                                                  "notes": ["the mask is empty: nothing to search"]})
    widget._layers_added(result, "ct", [])
    assert widget.message.text().splitlines()[-1] == "the mask is empty: nothing to search"


def test_an_untrusted_torchscript_model_runs_only_after_the_reader_trusts_it(widget, qtbot, monkeypatch, tmp_path):
    from qtpy.QtWidgets import QMessageBox

    from napari_medcad.core.models.trust import file_digest, is_trusted

    monkeypatch.setenv("NAPARI_MEDCAD_TRUST", str(tmp_path / "trusted.json"))  # a trust list of its own
    folder = tmp_path / "untrusted"
    write_bright_blob_model(folder, name="untrusted-blobs", roi_size_zyx=(8, 24, 24), trusted=False)
    widget.add_model_path(folder)
    answers, asked = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes], []
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kwargs: asked.append(args[2]) or answers.pop(0))
    assert widget.run() is None and "not trusted" in widget.message.text()
    assert not [layer for layer in widget.viewer.layers if role_of(layer)]
    run_to_end(widget, qtbot)  # the second answer trusts the file
    assert len(asked) == 2 and "TorchScript" in asked[0]
    assert is_trusted(file_digest(folder / "model.ts"))
    assert len(by_kind(widget.viewer, Points)[0].data) == len(BLOBS)


def test_a_renamed_image_keeps_its_findings(widget, qtbot):
    run_to_end(widget, qtbot)
    viewer = widget.viewer
    viewer.layers["ct"].name = "chest CT"
    made = [layer for layer in viewer.layers if role_of(layer)]
    assert made and {layer.metadata["medcad"]["source_layer"] for layer in made} == {"chest CT"}


def test_layers_are_added_one_per_event_loop_turn(widget, qtbot, monkeypatch):
    """The result's layers arrive over several event-loop turns; meanwhile the widget is busy
    and refuses a second run."""
    from napari_medcad.napari import findings_layers

    per_call = []
    real = inference.add_findings_layers
    monkeypatch.setattr(inference, "add_findings_layers", lambda viewer, data: per_call.append(len(data)) or real(viewer, data))
    turns = []
    original_next = widget._next_step
    monkeypatch.setattr(widget, "_next_step", lambda: turns.append(len(widget._pending)) or original_next())
    worker = widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    assert worker is not None and per_call and set(per_call) == {1}  # one layer per call
    assert len(turns) == len(per_call) + 1  # one turn per layer, then the message
    assert len(findings_layers_of(widget.viewer.layers, "ct")) == len(per_call)
    assert findings_layers.role_of(widget.viewer.layers.selection.active) is not None
    widget._pending = [lambda: None]  # layers still arriving: a new run must wait
    assert widget.busy and widget.run() is None and "already running" in widget.message.text()


def test_cancel_adds_nothing(widget, qtbot, monkeypatch):
    def slow_run_model(*args, progress=None, **kwargs):  # every unit of work takes a while
        def slow(item):
            time.sleep(0.05)
            progress(item)

        return real(*args, progress=slow, **kwargs)

    real = inference_jobs.run_model
    monkeypatch.setattr(inference_jobs, "run_model", slow_run_model)
    before = len(widget.viewer.layers)
    worker = widget.run()
    qtbot.waitUntil(lambda: widget.runner.bar.value() > 0, timeout=10000)
    widget.runner.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=10000)
    assert len(widget.viewer.layers) == before
    assert "cancelled" in widget.runner.status.text()
    assert worker.abort_requested
    assert widget.run_button.isEnabled()


def test_rerun_asks_before_replacing_edited_findings(widget, qtbot, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    asked = []
    answer = [QMessageBox.StandardButton.No]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or answer[0])
    viewer = widget.viewer
    run_to_end(widget, qtbot)
    run_to_end(widget, qtbot)  # unedited: replaced without asking
    assert not asked and len(by_kind(viewer, Points)) == 1

    (points,) = by_kind(viewer, Points)
    points.data = points.data + np.array([0.0, 2.0, 0.0])  # the reader moves the points
    assert widget.run() is None and len(asked) == 1  # "No": nothing runs, the edits stay
    assert by_kind(viewer, Points) == [points]

    answer[0] = QMessageBox.StandardButton.Yes
    run_to_end(widget, qtbot)
    assert len(asked) == 2
    (new_points,) = by_kind(viewer, Points)
    assert new_points is not points and len(findings_layers_of(viewer.layers, "ct")) == 4


def test_a_rerun_the_reader_agreed_to_starts_the_review_over_and_no_keeps_it(widget, qtbot, monkeypatch, tmp_path):
    """The review of replaced findings is not resumed on the new ones (its table would name
    findings and mask values that are gone): the new findings are reviewed afresh and the old
    review file is kept aside.  "No" leaves the review as it was, on disk too."""
    from qtpy.QtWidgets import QMessageBox

    from napari_medcad.core.review import default_review_path
    from napari_medcad.napari.widgets.review import ReviewWidget

    monkeypatch.setenv("NAPARI_MEDCAD_REVIEWS", str(tmp_path / "reviews"))
    answer = [QMessageBox.StandardButton.No]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: answer[0])
    viewer = widget.viewer
    review = ReviewWidget(viewer)
    qtbot.addWidget(review)
    run_to_end(widget, qtbot)
    session = review.session
    assert session is not None and len(session.findings) == len(BLOBS)
    review.select_finding(1)
    review.accept_current()
    path = default_review_path(session.image_signature)
    saved = path.read_bytes()

    assert widget.run() is None  # "No": nothing runs, the review goes on untouched
    assert review.session is session and session.findings[1].status.value == "accepted"
    assert path.read_bytes() == saved and not list(path.parent.glob("*.replaced-*"))

    answer[0] = QMessageBox.StandardButton.Yes
    run_to_end(widget, qtbot)
    (points,) = by_kind(viewer, Points)
    assert review.points_layer is points and review.session is not session
    assert {f.status.value for f in review.session.findings} == {"pending"} and not review.session.history
    assert review.proxy.rowCount() == len(points.data) == len(BLOBS)
    (kept,) = path.parent.glob("*.replaced-*.review.json")
    assert kept.read_bytes() == saved and "kept aside" in review.status_label.text()


def test_painted_masks_count_as_edits(widget, qtbot, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or QMessageBox.StandardButton.No)
    run_to_end(widget, qtbot)
    (labels,) = by_kind(widget.viewer, Labels)
    labels.paint((8, 20, 20), 1)
    assert widget.run() is None and asked


def test_errors_are_notifications(widget, qtbot, shown_errors, tmp_path):
    widget.image_combo.clear()
    assert widget.run() is None
    assert shown_errors and "image layer" in str(shown_errors[-1])
    widget._refresh_layers()
    model_2d = tmp_path / "flat"
    write_bright_blob_model(model_2d, name="flat", dims=2)
    widget.add_model_path(model_2d)
    run_to_end(widget, qtbot)  # the 2-D model refuses the 3-D image: a result, not a crash
    assert "2-D" in str(shown_errors[-1]) and not by_kind(widget.viewer, Points)
    assert widget.add_model_path(tmp_path / "nowhere") is None
    assert "no such" in str(shown_errors[-1]).lower() or "unknown model" in str(shown_errors[-1])


def test_devices_listed_with_availability(widget, qtbot):
    qtbot.waitUntil(lambda: widget.devices_checked, timeout=60000)  # the warm-up thread asked torch
    assert widget.warmed_up.is_set()
    items = [widget.device_combo.itemText(i) for i in range(widget.device_combo.count())]
    assert items[:2] == ["auto", "cpu"]
    available = inference_jobs.available_devices()
    for name in ("cuda", "mps"):
        assert (name in items) == available[name] and ((f"{name} (not available)" in items) != available[name])


def test_context_menu_runs_default_model(make_napari_viewer, qtbot, monkeypatch, model_folder):
    """The layer context menu command docks the widget and runs the default model on the layer."""
    from napari_medcad.core.models import registry
    from napari_medcad.core.models.card import read_card

    card = read_card(model_folder / "card.yaml")
    monkeypatch.setattr(registry, "default_model_for", lambda modality, dims: card)
    monkeypatch.setattr(registry, "list_models", lambda: [card])
    viewer = make_napari_viewer()
    data, kwargs, _ = image_layer_data(blob_image("scan"))
    layer = viewer.add_image(data, **kwargs)
    inference.run_default_model(viewer, layer)
    widget = next(w for w in viewer.window.dock_widgets.values() if isinstance(w, InferenceWidget))
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    (points,) = by_kind(viewer, Points)
    assert points.metadata["medcad"]["source_layer"] == "scan" and len(points.data) == len(BLOBS)


def test_context_menu_is_in_the_manifest():
    import npe2

    manifest = npe2.PluginManager.instance().get_manifest("napari-medcad")
    items = manifest.contributions.menus["napari/layers/context"]
    assert [item.command for item in items] == ["napari-medcad.run_default_model"]
    assert "Inference" in [w.display_name for w in manifest.contributions.widgets]


def test_rescorer_is_not_listed_alone_and_its_switch_follows_the_model(widget):
    assert widget.model_card().name == "bright-blobs"  # chosen by the fixture; it has no rescorer
    assert not widget.rescore_check.isEnabled()
    names = [widget.model_combo.itemData(i) for i in range(widget.model_combo.count())]
    assert "lung-nodule-ct" in names and "lung-nodule-gnn" not in names  # it runs inside its detector
    assert widget.select_model("lung-nodule-ct")
    assert widget.rescore_check.isEnabled()
    # checked as the card advises (lung-nodule-ct: on), and the reader's to switch
    assert widget.rescore_check.isChecked() == find_model("lung-nodule-ct").rescores_by_default


def test_explain_adds_a_heatmap_over_the_image_and_the_switch_hides_it(widget, qtbot):
    from napari_medcad.napari.explain_layers import explanation_layers_of

    names = [widget.explain_combo.itemData(i) for i in range(widget.explain_combo.count())]
    assert {"nodule-cnn2d", "nodule-attention2d", "nodule-mil3d"} <= set(names)
    widget.explain_combo.setCurrentIndex(names.index("nodule-attention2d"))
    image_layer = widget.image_layer()
    widget.viewer.dims.set_point(0, image_layer.data_to_world((5, 0, 0))[0])  # the first blob's slice
    worker = widget.explain()
    assert worker is not None, widget.message.text()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60000)
    assert widget.runner.last_error is None, widget.runner.last_error
    layers = explanation_layers_of(widget.viewer.layers, image_layer.name)
    assert len(layers) == 1 and layers[0].visible
    heat = layers[0]
    assert heat.data.shape == image_layer.data.shape  # on the source grid, with its transform
    np.testing.assert_allclose(heat.data_to_world((5, 10, 10)), image_layer.data_to_world((5, 10, 10)), atol=1e-6)
    assert heat.data[5].max() > 0 and not heat.data[0].any()  # only the current slice was explained
    assert widget.message.text().startswith(f"explanation of '{image_layer.name}' added")
    widget.explain_check.setChecked(False)
    assert not heat.visible
    images = [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())]
    assert heat.name not in images and image_layer.name in images  # a heatmap is not a scan to run on


def test_the_message_after_an_explanation_says_which_windows_were_left_out():
    from napari_medcad.napari.widgets.inference import _windows_note

    assert _windows_note({"mask": "lung_mask", "windows": 12, "windows_skipped": 30}) == (
        "; only windows in the lungs were explained (30 of 42 skipped)")
    assert "in the mask" in _windows_note({"mask": "given", "windows": 1, "windows_skipped": 3})
    assert _windows_note({"mask": "lung_mask", "windows": 12, "windows_skipped": 0}) == ""
    assert _windows_note({"mask": "none: no lungs found, so every window was explained", "windows": 4}) == ""


def test_lung_detector_adds_its_graph_and_a_rerun_replaces_it(make_napari_viewer, qtbot):
    pytest.importorskip("torch_geometric")
    from napari_medcad.core.phantom import PhantomConfig, generate_chest_ct
    from napari_medcad.napari.graph_layers import graph_layers_of

    config = PhantomConfig(shape_zyx=(40, 160, 160), spacing_xyz=(1.8, 1.8, 2.5), first_slice_z_mm=-250.0,
                           n_nodules=(2, 2), nodule_diameter_mm=(10.0, 16.0))
    viewer = make_napari_viewer()
    image = generate_chest_ct(3, config).image
    data, kwargs, _ = image_layer_data(image.with_array(image.array, name="phantom"))
    viewer.add_image(data, **kwargs)
    widget = InferenceWidget(viewer)
    assert widget.select_model("lung-nodule-ct")
    widget.rescore_check.setChecked(True)
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    for _ in range(2):
        run_to_end(widget, qtbot, timeout=120000)
        graph = graph_layers_of(viewer.layers, "phantom")
        assert len(graph) == 2, [layer.name for layer in viewer.layers]  # edges + nodes, never twice
        assert len(findings_layers_of(viewer.layers, "phantom")) >= 3


def test_choosing_an_image_chooses_models_that_run_on_it(widget, tmp_path):
    """A radiograph (2-D) gets a 2-D model and a 2-D classifier to explain with; with no 2-D
    detector the widget says so, and a volume gets a 3-D detector back."""
    viewer = widget.viewer
    flat = MedicalImage(np.zeros((40, 48), np.int16), Geometry((0.5, 0.5), (0.0, 0.0), (1, 0, 0, 1)),
                        modality="DX", name="radiograph")
    data, kwargs, _ = image_layer_data(flat)
    viewer.add_image(data, **kwargs)
    widget.image_combo.setCurrentText("radiograph")
    assert widget.model_card().dims == 3  # no 2-D detector is registered: the choice stays, and the widget says why
    assert "no detection or segmentation model here runs on 2-D images" in widget.about.text()
    assert widget._explainer_card().dims == 2
    model_2d = tmp_path / "flat"
    write_bright_blob_model(model_2d, name="flat", dims=2)
    widget.add_model_path(model_2d)
    widget.image_combo.setCurrentText("ct")
    assert widget.model_card().dims == 3 and widget.model_card().modality == "CT"
    assert "runs on" not in widget.about.text()
    widget.image_combo.setCurrentText("radiograph")
    assert widget.model_card().name == "flat" and "runs on" not in widget.about.text()
