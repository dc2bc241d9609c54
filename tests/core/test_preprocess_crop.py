"""Cropping keeps voxels and world positions exactly, from voxel or world boxes, with margins."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.core.preprocess import bounding_box_index, bounding_box_world, crop, world_box_around


def oblique_ct(shape=(10, 30, 40)) -> MedicalImage:
    rng = np.random.default_rng(0)
    c, s = np.cos(0.3), np.sin(0.3)
    geometry = Geometry((0.7, 0.9, 2.5), (12.0, -40.0, 90.0), (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))
    return MedicalImage(rng.integers(-1000, 400, shape).astype(np.int16), geometry, modality="CT", name="ct")


def test_voxel_box_with_margin():
    image = oblique_ct()
    out = crop(image, box_index_zyx=[[2, 5, 10], [6, 15, 20]], margin_mm=2.0)
    # 2 mm is 1 slice of 2.5 mm, 3 rows of 0.9 mm, 3 columns of 0.7 mm
    np.testing.assert_array_equal(out.array, image.array[1:7, 2:18, 7:23])
    np.testing.assert_allclose(out.geometry.origin_xyz, image.index_to_world([1, 2, 7]))
    assert not np.shares_memory(out.array, image.array)


def test_every_voxel_keeps_its_world_position():
    image = oblique_ct()
    out = crop(image, box_index_zyx=[[3, 4, 5], [8, 20, 33]])
    for index in ([0, 0, 0], [4, 11, 20], [4, 15, 27]):
        source_index = np.add(index, [3, 4, 5])
        assert out.array[tuple(index)] == image.array[tuple(source_index)]
        np.testing.assert_allclose(out.index_to_world(index), image.index_to_world(source_index), atol=1e-9)


def test_world_box_holds_every_voxel_whose_centre_is_inside():
    image = oblique_ct()
    landmark = np.array([5, 12, 21])
    centre = image.index_to_world(landmark)
    out = crop(image, box_world_xyz=[list(centre - 3.0), list(centre + 3.0)])
    indices = np.argwhere(np.ones(image.array.shape, bool))
    inside = indices[np.all(np.abs(image.index_to_world(indices) - centre) <= 3.0, axis=1)]
    start = np.round(out.world_to_index(image.index_to_world([0, 0, 0]))).astype(int) * -1
    assert np.all(inside >= start) and np.all(inside < start + out.array.shape)
    # the landmark is in the crop, at the same world position, with the same value
    local = landmark - start
    assert out.array[tuple(local)] == image.array[tuple(landmark)]
    np.testing.assert_allclose(out.index_to_world(local), centre, atol=1e-6)


def test_axis_aligned_world_box_keeps_exactly_the_voxels_inside():
    image = MedicalImage(np.arange(6 * 10 * 12).reshape(6, 10, 12), Geometry((0.5, 1.0, 2.0), (10, 20, 30), tuple(np.eye(3).ravel())))
    out = crop(image, box_world_xyz=[[11.0, 22.0, 32.0], [12.0, 25.0, 36.0]])
    np.testing.assert_array_equal(out.array, image.array[1:4, 2:6, 2:5])


def test_open_axes_keep_the_whole_extent():
    image = MedicalImage(np.arange(4 * 10 * 12).reshape(4, 10, 12), Geometry.identity(3, (1.0, 1.0, 3.0)))
    out = crop(image, box_world_xyz=[[2.0, 3.0, None], [5.0, 6.0, None]])
    np.testing.assert_array_equal(out.array, image.array[:, 3:7, 2:6])
    out = crop(image, box_index_zyx=[[None, 2, 3], [None, 5, 9]])
    np.testing.assert_array_equal(out.array, image.array[:, 2:5, 3:9])


def test_box_partly_outside_is_cut_and_wholly_outside_is_an_error():
    image = oblique_ct()
    out = crop(image, box_index_zyx=[[-5, 20, 30], [3, 50, 60]])
    np.testing.assert_array_equal(out.array, image.array[0:3, 20:30, 30:40])
    with pytest.raises(MedcadError, match="lies outside 'ct'"):
        crop(image, box_index_zyx=[[0, 40, 0], [10, 50, 10]])
    far = image.index_to_world([5, 15, 20]) + 500.0
    with pytest.raises(MedcadError, match="lies outside"):
        crop(image, box_world_xyz=[list(far), list(far + 10.0)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one box"),
        ({"box_index_zyx": [[0, 0, 0], [1, 1, 1]], "box_world_xyz": [[0, 0, 0], [1, 1, 1]]}, "exactly one box"),
        ({"box_index_zyx": [[0, 0], [1, 1]]}, "two corners of 3 values"),
        ({"box_index_zyx": [[0, 0, 0.5], [1, 1, 1]]}, "whole numbers"),
        ({"box_world_xyz": [[0, 0, float("nan")], [1, 1, 1]]}, "non-finite"),
        ({"box_index_zyx": [[0, 0, 0], [1, 1, 1]], "margin_mm": -1.0}, "margin must be zero or more"),
    ],
)
def test_bad_boxes_are_user_errors(kwargs, message):
    with pytest.raises(MedcadError, match=message):
        crop(oblique_ct(), **kwargs)


def test_labels_bounding_box_crops_exactly_to_the_labels():
    image = oblique_ct()
    labels = np.zeros(image.array.shape, dtype=np.uint8)
    labels[3:5, 10:14, 20:31] = 1
    labels[6, 12, 25] = 2
    mask = MedicalImage(labels, image.geometry, name="nodule")
    assert bounding_box_index(mask) == [[3, 10, 20], [7, 14, 31]]
    out = crop(image, box_index_zyx=bounding_box_index(mask))
    np.testing.assert_array_equal(out.array, image.array[3:7, 10:14, 20:31])
    # through the world (another grid): everything labelled is inside, the box a little larger
    out = crop(image, box_world_xyz=bounding_box_world(mask))
    start = -np.round(out.world_to_index(image.index_to_world([0, 0, 0]))).astype(int)
    assert np.all(start <= [3, 10, 20]) and np.all(start + out.array.shape >= [7, 14, 31])
    with pytest.raises(MedcadError, match="no labelled voxels"):
        bounding_box_index(MedicalImage(np.zeros((3, 4)), Geometry.identity(2), name="empty"))


def test_world_box_around_drawn_points():
    rectangle_on_a_slice = np.array([[1.0, 2.0, 30.0], [4.0, 2.0, 30.0], [4.0, 7.0, 30.0], [1.0, 7.0, 30.0]])
    assert world_box_around(rectangle_on_a_slice, 3) == [[1.0, 2.0, None], [4.0, 7.0, None]]
    assert world_box_around(rectangle_on_a_slice[:, :2], 3) == [[1.0, 2.0, None], [4.0, 7.0, None]]
    with pytest.raises(MedcadError, match="no extent"):
        world_box_around(np.array([[1.0, 2.0, 3.0]]), 3)


def test_time_stacks_get_no_margin_along_time():
    stack = MedicalImage(np.zeros((6, 20, 20), np.float32), Geometry.identity(3, (0.5, 0.5, 1.0)),
                         metadata={"axes": "tyx"})
    out = crop(stack, box_index_zyx=[[2, 5, 5], [4, 10, 10]], margin_mm=1.0)
    assert out.array.shape == (2, 9, 9)


def test_colour_pictures_keep_their_channels():
    picture = MedicalImage(np.zeros((20, 30, 3), np.uint8), Geometry.identity(2), rgb=True)
    out = crop(picture, box_index_zyx=[[2, 3], [12, 13]])
    assert out.array.shape == (10, 10, 3) and out.rgb
