"""Pipelines as data (JSON, equality, errors), running them with progress and cancel, and the
contract every registered operation keeps on 2-D, 3-D and 2-D + time input of any dtype."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medcad.core.errors import Cancelled, MedcadError
from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.core.preprocess import OPERATIONS, Pipeline, Step, get_operation
from napari_medcad.core.preprocess.intensity import DEFAULT_PERCENTILES

GEOMETRY_CHANGING = {"resample", "resize", "crop"}


def small_ct(kind: str, dtype=np.int16, seed: int = 0) -> MedicalImage:
    """A tiny CT-like image: "2d", "3d" (oblique) or "tyx" (2-D + time)."""
    rng = np.random.default_rng(seed)
    shape = {"2d": (24, 32), "3d": (8, 24, 32), "tyx": (5, 24, 32)}[kind]
    values = rng.integers(-1000, 1000, size=shape)
    if np.issubdtype(dtype, np.unsignedinteger):
        values = values + 1000
    array = values.astype(dtype)
    if kind == "2d":
        geometry = Geometry((0.6, 0.8), (10.0, -4.0), (1.0, 0.0, 0.0, 1.0))
    else:
        c, s = np.cos(0.2), np.sin(0.2)
        geometry = Geometry((0.6, 0.8, 2.5), (10.0, -4.0, 30.0), (c, -s, 0, s, c, 0, 0, 0, 1))
    metadata = {"axes": "tyx"} if kind == "tyx" else {}
    return MedicalImage(array, geometry, modality="CT", name=f"ct {kind}", metadata=metadata)


def required_params(name: str, image: MedicalImage) -> dict:
    """Parameters an operation cannot default, fitted to ``image``."""
    spatial = 2 if image.ndim == 2 or image.metadata.get("axes") == "tyx" else 3
    if name == "crop":
        lead = [None] * (image.ndim - 2)
        return {"box_index_zyx": [lead + [2, 3], lead + [10, 12]], "margin_mm": 1.0}
    if name == "histogram_standardise":
        return {"landmarks": [float(v) for v in DEFAULT_PERCENTILES]}
    if name == "resize":
        return {"shape_zyx": [4, 12, 16][-spatial:]}
    return {}


def assert_contract(name: str, image: MedicalImage) -> MedicalImage:
    before = image.array.copy()
    step = Step(name, required_params(name, image))
    out = step.run(image)
    np.testing.assert_array_equal(image.array, before)  # input untouched
    assert isinstance(out, MedicalImage) and out is not image
    assert not np.shares_memory(out.array, image.array)
    assert out.geometry.ndim == image.geometry.ndim
    if name not in GEOMETRY_CHANGING:
        assert out.spatial_shape == image.spatial_shape and out.geometry == image.geometry
    if image.metadata.get("axes") == "tyx":
        assert out.array.shape[0] == image.array.shape[0]  # time is never resampled or cropped
        assert out.geometry.spacing_xyz[2] == image.geometry.spacing_xyz[2]
    if get_operation(name).makes_labels:
        assert out.array.dtype == np.uint8 and set(np.unique(out.array)) <= {0, 1}
    return out


@pytest.mark.parametrize("kind", ["2d", "3d", "tyx"])
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_every_operation_on_2d_3d_and_time_stacks(name, kind):
    assert_contract(name, small_ct(kind))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float16, np.float64])
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_every_operation_on_any_numeric_dtype(name, dtype):
    assert_contract(name, small_ct("3d", dtype=dtype))


def lung_pipeline() -> Pipeline:
    return Pipeline.from_list([
        {"op": "window", "params": {"preset": "lung"}},
        {"op": "resample", "params": {"spacing_xyz": [1.0, 1.0, 2.0]}},
        {"op": "gaussian", "params": {"sigma_mm": 0.8}},
    ])


def test_steps_are_completed_with_defaults_so_equal_pipelines_compare_equal():
    short = Pipeline.from_list([{"op": "window", "params": {"preset": "lung"}}])
    full = Pipeline.from_list(
        [{"op": "window", "params": {"preset": "lung", "level": -600, "width": 1500, "output": "unit"}}]
    )
    assert short == full and hash(short) == hash(full)
    assert short.to_json() == full.to_json()
    assert short != Pipeline.from_list([{"op": "window", "params": {"preset": "bone"}}])


def test_json_round_trip_and_file(tmp_path):
    pipeline = lung_pipeline()
    assert Pipeline.from_json(pipeline.to_json()) == pipeline
    assert Pipeline.from_dict(pipeline.to_list()) == pipeline  # a bare list, as in a model card
    path = pipeline.save(tmp_path / "lung.json")
    assert Pipeline.load(path) == pipeline
    assert json.loads(path.read_text())["format"] == "napari-medcad pipeline"
    assert [p.name for p in tmp_path.iterdir()] == ["lung.json"]  # no temporary left behind


def test_describe_is_stable_and_ordered_as_declared():
    assert lung_pipeline().describe() == (
        '1. window(preset="lung", level=-600.0, width=1500.0, output="unit")\n'
        '2. resample(spacing_xyz=[1.0, 1.0, 2.0], interpolation="linear")\n'
        "3. gaussian(sigma_mm=0.8)"
    )


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"op": "sharpen"}], "unknown preprocessing operation 'sharpen'"),
        ([{"op": "gaussian", "params": {"sigma": 1}}], "unknown parameter 'sigma'"),
        ([{"op": "gaussian", "params": {"sigma_mm": 0}}], "sigma_mm must be greater than 0"),
        ([{"op": "gaussian", "params": {"sigma_mm": "wide"}}], "sigma_mm must be a finite number"),
        ([{"op": "resample", "params": {"spacing_xyz": [1, 0, 1]}}], "spacing_xyz must be greater than 0"),
        ([{"op": "window", "params": {"preset": "lung", "width": 400}}], "choose the 'custom' preset"),
        ([{"op": "window", "params": {"preset": "custom", "level": 40}}], "needs both a level and a width"),
        ([{"op": "window", "params": {"preset": "soft"}}], "preset must be one of"),
        ([{"op": "crop", "params": {}}], "exactly one box"),
        ([{"op": "median", "params": {"radius_vox": 1.5}}], "whole number"),
        ([{"op": "histogram_standardise"}], "'landmarks' is required"),
        ([{"op": "histogram_standardise", "params": {"landmarks": [1, 2]}}], "one landmark per percentile"),
        ([{"op": "percentile_rescale", "params": {"lower": 90, "upper": 10}}], "lower < upper"),
        ([{"op": "gaussian", "extra": 1}], "unknown key 'extra'"),
        (["gaussian"], "a pipeline step must be"),
        ([{"op": "gaussian", "params": 0}], "params of pipeline step 'gaussian' must be a mapping"),
        ([{"op": "crop", "params": {"box_index_zyx": [[0, 0], [1, 1, 1]]}}], "need as many values each"),
    ],
)
def test_bad_steps_are_user_errors(steps, message):
    with pytest.raises(MedcadError, match=message):
        Pipeline.from_list(steps)


def test_bad_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(MedcadError, match="broken.json: not valid pipeline JSON"):
        Pipeline.load(broken)
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"format": "napari-medcad pipeline", "version": 99, "steps": []}))
    with pytest.raises(MedcadError, match="newer than this napari-medcad"):
        Pipeline.load(newer)
    with pytest.raises(MedcadError, match="cannot read the pipeline"):
        Pipeline.load(tmp_path / "missing.json")
    for version in ('"abc"', "null", "1.5"):
        odd = tmp_path / "odd.json"
        odd.write_text('{"format": "napari-medcad pipeline", "version": %s, "steps": []}' % version)
        with pytest.raises(MedcadError, match="odd.json: the pipeline's version must be a whole number"):
            Pipeline.load(odd)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"steps": [{"op": "gaussian", "params": {"note": "\xe9"}}]}')
    with pytest.raises(MedcadError, match="latin.json: the pipeline file is not UTF-8"):
        Pipeline.load(latin)


def test_run_records_pipeline_and_source_and_reports_progress():
    image = small_ct("3d")
    seen = []
    out = lung_pipeline().run(image, progress=seen.append)
    assert Pipeline.from_json(out.metadata["pipeline"]) == lung_pipeline()
    assert out.metadata["source"] == "ct 3d"
    assert out.name == "ct 3d [window > resample > gaussian]"
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "pipeline" not in image.metadata  # the input's metadata is not shared


def test_progress_callback_cancels_between_units():
    calls = []

    def cancel_on_third(progress):
        calls.append(progress)
        if len(calls) == 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        lung_pipeline().run(small_ct("3d"), progress=cancel_on_third)
    assert len(calls) == 3


def test_empty_pipeline_returns_a_copy():
    image = small_ct("2d")
    out = Pipeline().run(image)
    np.testing.assert_array_equal(out.array, image.array)
    assert not np.shares_memory(out.array, image.array)


def test_lung_mask_is_a_labels_pipeline():
    assert Pipeline.from_list([{"op": "lung_mask"}]).makes_labels
    assert not lung_pipeline().makes_labels


def test_registry_params_match_function_signatures():
    import inspect

    for operation in OPERATIONS.values():
        names = [p for p in inspect.signature(operation.function).parameters if p not in ("image", "progress", "device")]
        assert names == [param.name for param in operation.params], operation.name


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((4, 6), np.nan, dtype=np.float32), "NaN or infinite"),
        (np.array([[0, np.inf], [1, 2]]), "NaN or infinite"),
        (np.zeros((4, 6), dtype=bool), "bool values"),
        (np.zeros((4, 6), dtype=np.complex64), "not real numbers"),
    ],
)
def test_unusable_values_are_user_errors(array, message):
    image = MedicalImage(array, Geometry.identity(2), modality="CT")
    for name in ("gaussian", "window", "resample", "lung_mask"):
        with pytest.raises(MedcadError, match=message):
            Step(name).run(image)


def test_time_axes_only_on_three_dimensional_images():
    image = MedicalImage(np.zeros((4, 6)), Geometry.identity(2), metadata={"axes": "tyx"})
    with pytest.raises(MedcadError, match="marked as 2-D \\+ time"):
        Step("gaussian").run(image)


def test_numpy_numbers_are_accepted_and_stored_as_plain_json():
    step = Step("resample", {"spacing_xyz": [np.int64(1), np.float32(2.5)]})
    assert step.params["spacing_xyz"] == [1.0, 2.5]
    assert json.loads(json.dumps(step.to_dict()))["params"]["spacing_xyz"] == [1.0, 2.5]
    assert Step("median", {"radius_vox": np.int64(2)}).params["radius_vox"] == 2
