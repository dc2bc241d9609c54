"""The Preprocess dock widget in a real viewer: every operation family on 2-D and 3-D layers,
runs in a worker, cancel, save/load, crop from a drawn rectangle, and bad requests."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.core.preprocess import Pipeline
from napari_medcad.napari.layers import image_layer_data
from napari_medcad.napari.widgets.preprocess import PreprocessWidget

FAMILIES = {
    "Intensity": [
        ("window", {"preset": "lung"}),
        ("window", {"preset": "custom", "level": 40, "width": 400, "output": "clipped"}),
        ("percentile_rescale", {"lower": 1.0, "upper": 99.0}),
        ("zscore", {"mask": "body"}),
        ("histogram_standardise", {"landmarks": "0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100"}),
    ],
    "Geometry": [
        ("resample", {"spacing_xyz": "1.0", "interpolation": "linear"}),
        ("resample", {"spacing_xyz": "1.5", "interpolation": "bspline"}),
        ("resize", {"shape_zyx": "10, 12"}),
        ("crop", {"box_index_zyx": "[[2, 3], [20, 24]]", "margin_mm": 1.0}),
    ],
    "Filters": [
        ("grayscale", {}),
        ("gaussian", {"sigma_mm": 1.0}),
        ("median", {"radius_vox": 1}),
        ("nl_means", {"strength": 0.8}),
        ("anisotropic_diffusion", {"iterations": 3}),
        ("bilateral", {"domain_sigma_mm": 1.5}),
        ("clahe", {"clip_limit": 0.02}),
    ],
    "Masks": [("body_mask", {}), ("lung_mask", {})],
}


def ct_image(ndim: int, name: str = "ct") -> MedicalImage:
    """A small CT with a body, two lungs and a bright landmark voxel."""
    yy, xx = np.mgrid[:40, :48]
    plane = np.full((40, 48), -1000.0)
    plane[((yy - 20) / 16.0) ** 2 + ((xx - 24) / 21.0) ** 2 <= 1] = 40
    plane[(yy >= 12) & (yy <= 28) & (((xx >= 9) & (xx <= 19)) | ((xx >= 29) & (xx <= 39)))] = -850
    plane += np.random.default_rng(0).normal(0, 10, plane.shape)
    if ndim == 2:
        array, geometry = plane, Geometry((0.7, 0.8), (-30.0, 20.0), (1.0, 0.0, 0.0, 1.0))
    else:
        array = np.repeat(plane[None], 6, axis=0)
        geometry = Geometry((0.7, 0.8, 2.5), (-30.0, 20.0, 100.0), tuple(np.eye(3).ravel()))
    array = array.astype(np.int16)
    array[..., 22, 30] = 2000  # landmark (every slice)
    return MedicalImage(array, geometry, modality="CT", name=name)


def add_image(viewer, image: MedicalImage):
    data, kwargs, kind = image_layer_data(image)
    return getattr(viewer, f"add_{kind}")(data, **kwargs)


def run_to_end(widget, qtbot, timeout=20000):
    worker = widget.run()
    assert worker is not None, widget.message.text()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=timeout)
    assert widget.runner.last_error is None, widget.runner.last_error
    return widget.viewer.layers[-1]


def one_step(widget, op: str, params: dict):
    widget.steps.clear()
    widget.set_operation(op)
    for name, value in params.items():
        widget.set_param(name, value)
    step = widget.add_step()
    assert step is not None, widget.message.text()
    return step


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_operation_family_on_2d_and_3d(make_napari_viewer, qtbot, family, ndim):
    viewer = make_napari_viewer()
    layer = add_image(viewer, ct_image(ndim))
    before = layer.data.copy()
    widget = PreprocessWidget(viewer)
    for op, params in FAMILIES[family]:
        if op == "crop" and ndim == 3:
            params = {**params, "box_index_zyx": "[[null, 2, 3], [null, 20, 24]]"}
        if op == "resize" and ndim == 3:
            params = {"shape_zyx": "3, 10, 12"}
        one_step(widget, op, params)
        count = len(viewer.layers)
        out = run_to_end(widget, qtbot)
        assert len(viewer.layers) == count + 1
        info = out.metadata["medcad"]
        assert Pipeline.from_json(info["metadata"]["pipeline"]) == widget.pipeline
        assert info["metadata"]["source"] == "ct" and info["source_layer"] == "ct"
        assert out.ndim == ndim
        expected_kind = "Labels" if op.endswith("_mask") else "Image"
        assert type(out).__name__ == expected_kind, op
        np.testing.assert_array_equal(layer.data, before)


def bright_voxel_world(layer) -> np.ndarray:
    """napari world position (z, y, x mm) of the centroid of the brightest voxels."""
    data = np.asarray(layer.data, dtype=float)
    hot = np.argwhere(data >= 0.5 * data.max())
    return np.asarray(layer.data_to_world(hot.mean(axis=0)))


def test_resampled_landmark_stays_put_in_the_viewer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = add_image(viewer, ct_image(3))
    widget = PreprocessWidget(viewer)
    one_step(widget, "resample", {"spacing_xyz": "1.1, 0.5, 1.0"})
    out = run_to_end(widget, qtbot)
    assert out.data.shape == (15, 64, 30)
    shift = np.abs(bright_voxel_world(out) - bright_voxel_world(layer))
    half_voxel = 0.5 * np.maximum(out.scale, layer.scale)
    assert np.all(shift[1:] <= half_voxel[1:]), shift


def test_crop_from_a_drawn_rectangle_keeps_world_positions(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = add_image(viewer, ct_image(3))
    landmark = np.asarray(layer.data_to_world((3, 22, 30)))
    z, y, x = landmark
    corners = [[z, y - 4, x - 5], [z, y - 4, x + 5], [z, y + 4, x + 5], [z, y + 4, x - 5]]
    shapes = viewer.add_shapes([corners], shape_type="rectangle", name="box")
    widget = PreprocessWidget(viewer)
    widget.input_combo.setCurrentText("ct")
    widget.use_region(shapes)
    assert widget.add_step() is not None, widget.message.text()
    out = run_to_end(widget, qtbot)
    assert out.data.shape[0] == layer.data.shape[0]  # a rectangle on one slice keeps every slice
    assert out.data.shape[1:] < layer.data.shape[1:]
    local = np.round(out.world_to_data(landmark)).astype(int)
    assert out.data[tuple(local)] == 2000
    np.testing.assert_allclose(out.data_to_world(local), landmark, atol=1e-6)


def test_crop_to_a_labels_bounding_box_with_margin(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = ct_image(3)
    c, s = np.cos(0.3), np.sin(0.3)
    image.geometry = Geometry((0.7, 0.8, 2.5), (-30.0, 20.0, 100.0), (c, -s, 0, s, c, 0, 0, 0, 1))
    add_image(viewer, image)
    labels = np.zeros(image.array.shape, np.uint8)
    labels[2:4, 10:15, 20:26] = 1
    viewer.add_labels(labels, name="roi", **image.geometry.napari_transform())
    widget = PreprocessWidget(viewer)
    widget.input_combo.setCurrentText("ct")
    widget.region_combo.setCurrentText("roi")
    widget.use_region()
    widget.set_param("margin_mm", 2.0)
    assert widget.add_step() is not None, widget.message.text()
    out = run_to_end(widget, qtbot)
    # on the image's own (oblique) grid the box is exact: 2 mm is 1 slice of 2.5 mm, 3 rows of
    # 0.8 mm, 3 columns of 0.7 mm
    np.testing.assert_array_equal(out.data, image.array[1:5, 7:18, 17:29])
    np.testing.assert_allclose(out.data_to_world((0, 0, 0)), viewer.layers["ct"].data_to_world((1, 7, 17)), atol=1e-6)


def test_pipeline_runs_in_a_worker_and_cancel_adds_nothing(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_image(viewer, ct_image(3))
    widget = PreprocessWidget(viewer)
    widget.set_operation("anisotropic_diffusion")
    widget.set_param("iterations", 50)
    for _ in range(10):
        widget.add_step()
    worker = widget.run()
    worker.yielded.connect(lambda progress: widget.runner.cancel())
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=20000)
    assert [layer.name for layer in viewer.layers] == ["ct"]
    assert "cancelled" in widget.runner.status.text()
    assert widget.run_button.isEnabled()


def test_save_load_and_edit_the_step_list(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = PreprocessWidget(viewer)
    for op, params in (("window", {"preset": "mediastinum"}), ("resample", {"spacing_xyz": "1"}),
                       ("gaussian", {"sigma_mm": 0.5})):
        widget.set_operation(op)
        for name, value in params.items():
            widget.set_param(name, value)
        widget.add_step()
    widget.move_step(2, -1)
    assert [step.op for step in widget.steps] == ["window", "gaussian", "resample"]
    widget.remove_step(0)
    assert [step.op for step in widget.steps] == ["gaussian", "resample"]
    saved = widget.pipeline
    widget.save_pipeline(tmp_path / "p.json")
    widget.set_pipeline(Pipeline())
    assert widget.step_list.count() == 0
    widget.load_pipeline(tmp_path / "p.json")
    assert widget.pipeline == saved
    assert widget.step_list.item(0).text() == saved.steps[0].describe()


def test_time_stack_is_not_resampled_along_time(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = ct_image(3, name="cine")
    stack.metadata["axes"] = "tyx"
    add_image(viewer, stack)
    widget = PreprocessWidget(viewer)
    assert widget.time_check.isChecked()
    one_step(widget, "resample", {"spacing_xyz": "1.4"})
    out = run_to_end(widget, qtbot)
    assert out.data.shape[0] == 6 and out.scale[0] == 2.5


def add_raw(viewer, data, **kwargs):
    return viewer.add_image(data, name="input", **kwargs)


@pytest.mark.parametrize(
    "case, message",
    [
        ("window on photo", "is a colour picture"),
        ("crop outside", "lies outside"),
        ("spacing 0", "spacing_xyz must be greater than 0"),
        ("nan values", "NaN or infinite"),
        ("5-D array", "5 dimensions"),
    ],
)
def test_bad_requests_show_a_message_and_leave_the_layer_alone(make_napari_viewer, qtbot, shown_errors, case, message):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    if case == "window on photo":
        layer = add_raw(viewer, (rng.random((20, 30, 3)) * 255).astype(np.uint8), rgb=True)
        op, params = "window", {"preset": "lung"}
    elif case == "crop outside":
        layer = add_image(viewer, ct_image(2, name="input"))
        op, params = "crop", {"box_world_xyz": "[[500, 500], [600, 600]]"}
    elif case == "spacing 0":
        layer = add_image(viewer, ct_image(2, name="input"))
        op, params = "resample", {"spacing_xyz": "0"}
    elif case == "nan values":
        data = rng.random((4, 20, 30)).astype(np.float32)
        data[1, 2, 3] = np.nan
        layer = add_raw(viewer, data)
        op, params = "gaussian", {}
    else:
        layer = add_raw(viewer, rng.random((2, 2, 3, 10, 12)).astype(np.float32))
        op, params = "gaussian", {}
    before = np.array(layer.data, copy=True)
    widget = PreprocessWidget(viewer)
    widget.input_combo.setCurrentText("input")
    widget.set_operation(op)
    for name, value in params.items():
        widget.set_param(name, value)
    if widget.add_step() is not None:
        worker = widget.run()
        if worker is not None:
            qtbot.waitUntil(lambda: not widget.runner.running, timeout=20000)
    shown_text = widget.message.text() + " " + widget.runner.status.text()
    assert message in shown_text
    assert any(message in text for text in shown_errors)
    assert [lay.name for lay in viewer.layers] == ["input"]
    np.testing.assert_array_equal(np.asarray(layer.data), before)
