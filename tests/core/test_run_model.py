"""run_model end to end: the built-in detector on a small phantom, geometry, cancellation, bad inputs."""

import dataclasses

import numpy as np
import pytest

from napari_medcad.core.errors import Cancelled, MedcadError
from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.core.inference.run import ModelResult, run_model
from napari_medcad.core.models.registry import find_model
from napari_medcad.core.phantom import PhantomConfig, generate_chest_ct

#: a small scan around the lungs (the card resamples it to 1.5 x 1.5 x 2 mm)
SMALL = PhantomConfig(shape_zyx=(48, 192, 192), spacing_xyz=(1.5, 1.5, 2.0), first_slice_z_mm=-260.0,
                      n_nodules=(3, 3), nodule_diameter_mm=(8.0, 16.0), ground_glass_fraction=0.0,
                      part_solid_fraction=0.0, juxta_vascular_fraction=0.0, juxta_pleural_fraction=0.0)


@pytest.fixture(scope="module")
def case():
    return generate_chest_ct(11, SMALL)


@pytest.fixture(scope="module")
def result(case):
    # the geometry is made non-trivial so index <-> world mistakes show
    return run_model(case.image, "lung-nodule-ct", device="cpu")


def test_finds_a_true_nodule_at_the_right_place(case, result):
    assert isinstance(result, ModelResult)
    card = find_model("lung-nodule-ct")
    hits = 0
    for finding in result.findings.above(card.threshold):
        distances = [np.linalg.norm(np.subtract(finding.centre_world_mm, n.centre_world_mm)) for n in case.nodules]
        nearest = int(np.argmin(distances))
        if distances[nearest] <= case.nodules[nearest].diameter_mm / 2:
            hits += 1
            # the finding's voxel centre is on the source grid and agrees with its world centre
            np.testing.assert_allclose(case.image.index_to_world(finding.centre_index_zyx), finding.centre_world_mm,
                                       atol=1e-6)
            # and the true label lies under it
            index = tuple(int(round(v)) for v in finding.centre_index_zyx)
            assert case.labels.array[index] == case.nodules[nearest].id
    assert hits >= 1


def test_outputs_are_on_the_source_grid(case, result):
    for image, dtype in ((result.labels, np.uint16), (result.probability, np.float32)):
        assert image.spatial_shape == case.image.spatial_shape
        assert image.geometry == case.image.geometry
        assert image.array.dtype == dtype
    assert 0.0 <= result.probability.array.min() and result.probability.array.max() <= 1.0
    # every finding's label region is where the finding is (world positions of labels match)
    for finding in result.findings:
        voxels = np.argwhere(result.labels.array == finding.id)
        assert len(voxels)
        centre = case.image.index_to_world(voxels.mean(axis=0))
        assert np.linalg.norm(centre - np.asarray(finding.centre_world_mm)) < max(3.0, finding.diameter_mm / 2)
        # measured on the mask the reader sees and edits
        assert finding.volume_mm3 == pytest.approx(len(voxels) * np.prod(case.image.geometry.spacing_xyz))
    assert result.findings.geometry == case.image.geometry


def test_volumes_are_measured_on_the_source_grid_mask():
    """The decoder measures on the model's grid; the finding then carries its mask's measures on
    the image's grid (what the review adds a stroke's voxels to), unless resampling lost the mask."""
    from napari_medcad.core.findings import Finding, Findings, equivalent_diameter_mm
    from napari_medcad.core.inference.run import measure_on_source

    geometry = Geometry(spacing_xyz=(0.7, 0.7, 2.5), origin_xyz=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()))
    labels = MedicalImage(np.zeros((10, 30, 30), np.uint16), geometry, modality="SEG")
    labels.array[3:6, 10:20, 10:15] = 1  # 150 voxels
    findings = Findings(geometry=geometry, shape_zyx=(10, 30, 30))
    for number, box in ((1, ((3, 10, 10), (6, 20, 15))), (2, ((7, 2, 2), (8, 3, 3)))):
        findings.add(Finding(id=number, label="nodule", probability=0.9, centre_world_mm=(0.0, 0.0, 0.0),
                             diameter_mm=5.0, volume_mm3=70.0, bbox_index_zyx=box, mask_value=number))
    measure_on_source(findings, labels)
    first, lost = findings[1], findings[2]
    assert first.volume_mm3 == pytest.approx(150 * 0.7 * 0.7 * 2.5)
    assert first.diameter_mm == pytest.approx(equivalent_diameter_mm(first.volume_mm3, 3))
    assert (lost.volume_mm3, lost.diameter_mm) == (70.0, 5.0)


def test_report_records_what_ran(result):
    report = result.report
    assert report["model"]["name"] == "lung-nodule-ct"
    assert report["device"] == "cpu"
    assert report["preprocessing"]["steps"][0]["op"] == "resample"
    assert report["engine"]["windows_run"] >= 1
    assert {"preprocess_s", "mask_s", "inference_s", "decode_s", "total_s"} <= set(report["timings_s"])
    assert "torch" in report["versions"] and "monai" in report["versions"]


def test_cancel_through_progress(case):
    seen = []

    def cancel_in_inference(item):
        seen.append(item)
        if "windows" in item.message:
            raise Cancelled()

    with pytest.raises(Cancelled):
        run_model(case.image, device="cpu", progress=cancel_in_inference)
    assert any("windows" in item.message for item in seen)


def test_given_mask_skips_everything_outside(case):
    empty = case.lung_mask.with_array(np.zeros_like(case.lung_mask.array))
    result = run_model(case.image, device="cpu", mask=empty)
    assert len(result.findings) == 0 and result.report["mask"] == "given"
    assert result.report["engine"]["windows_run"] == 0


def _ct(array, **changes):
    geometry = Geometry.identity(array.ndim - (1 if changes.get("rgb") else 0))
    return MedicalImage(array, geometry, modality=changes.pop("modality", "CT"), name="bad", **changes)


@pytest.mark.parametrize("image, message", [
    (_ct(np.zeros((64, 64), np.int16)), "3-D"),
    # one DICOM slice reads as a 3-D image: a 3-D detector gave a clean-looking "0 findings"
    (_ct(np.full((1, 128, 96), -1000, np.int16)), r"works on volumes; this image is a single slice \(96 x 128 x 1"),
    (_ct(np.zeros((16, 16, 16, 3), np.uint8), rgb=True), "colour"),
    (_ct(np.zeros((16, 32, 32), np.int16), modality="MR"), "CT images"),
    (_ct(np.full((16, 32, 32), np.nan, np.float32)), "NaN"),
    # a file that does not say what it holds, with no air: an MR, say, or a normalised volume
    (_ct(np.full((16, 32, 32), 300, np.int16), modality=""), "no air .*between 300 and 300.*is it a CT"),
    (_ct(np.linspace(0, 1, 16 * 32 * 32, dtype=np.float32).reshape(16, 32, 32), modality="OT"), "is it a CT"),
])
def test_bad_inputs_are_user_errors(image, message):
    with pytest.raises(MedcadError, match=message) as caught:
        run_model(image, device="cpu")
    assert "\n" not in str(caught.value)


def test_mask_of_another_shape_is_refused(case):
    with pytest.raises(MedcadError, match="mask"):
        run_model(case.image, device="cpu", mask=case.lung_mask.with_array(case.lung_mask.array[:-1]))


def test_unknown_model_is_a_user_error(case):
    with pytest.raises(MedcadError, match="unknown model"):
        run_model(case.image, "no-such-model")


def test_card_object_is_accepted(case):
    card = find_model("lung-nodule-ct")
    above_one = float(np.nextafter(np.float32(1.0), np.float32(2.0)))  # probabilities saturate at 1.0 (float32)
    strict = dataclasses.replace(card, decoding={**card.decoding, "threshold": above_one})
    result = run_model(case.image, strict, device="cpu", rescore=False)  # (a rescorer decodes at its own level)
    assert len(result.findings) == 0 and not result.labels.array.any()


def test_within_mask_drops_findings_outside_the_searched_mask(case, result):
    """A card with decoding.within_mask keeps only findings inside the mask (here: one nodule's half)."""
    card = find_model("lung-nodule-ct")
    assert len(result.findings), "the detector finds the phantom's nodules"
    strict = dataclasses.replace(card, decoding={**card.decoding, "within_mask": True})
    finding = max(result.findings, key=lambda f: f.probability)
    mask = np.zeros(case.image.spatial_shape, np.uint8)
    z = int(round(finding.centre_index_zyx[0]))
    mask[max(0, z - 12):z + 12] = 1  # a slab around the strongest finding only
    kept = run_model(case.image, strict, device="cpu", mask=case.image.with_array(mask))
    loose = run_model(case.image, dataclasses.replace(card, decoding={**card.decoding, "within_mask": False}),
                      device="cpu", mask=case.image.with_array(mask))
    assert kept.findings and len(kept.findings) <= len(loose.findings)
    for one in kept.findings:
        assert abs(one.centre_index_zyx[0] - z) < 12


def test_graph_rescorer_runs_when_asked_and_follows_the_cards_default(case, result):
    pytest.importorskip("torch_geometric")
    # the shipped card rescores by default (see LUNG_NODULE_CT_CARD): the default run did
    assert find_model("lung-nodule-ct").inference["rescore_by_default"] is True
    assert find_model("lung-nodule-ct").rescores_by_default
    asked = run_model(case.image, "lung-nodule-ct", device="cpu", rescore=True)
    assert [f.probability for f in asked.findings] == [f.probability for f in result.findings]
    rescoring = result.report["rescoring"]
    assert rescoring["model"] == "lung-nodule-gnn" and "skipped" not in rescoring
    assert result.graph is not None and result.graph.n_nodes == rescoring["candidates"] >= len(result.findings)
    threshold = result.findings.provenance["threshold"]
    assert threshold == rescoring["threshold"]
    assert result.findings.provenance["rescored_by"]["model"] == "lung-nodule-gnn"
    for finding in result.findings:
        assert {"cnn", "gnn"} <= set(finding.scores) and finding.probability == finding.scores["gnn"] >= threshold
    # the masks of candidates the GNN dropped (there are some) are gone from the label map
    assert rescoring["candidates"] > len(result.findings)
    assert set(np.unique(result.labels.array)) <= {0} | {f.mask_value for f in result.findings}
    assert "rescore_s" in result.report["timings_s"]
    plain = run_model(case.image, "lung-nodule-ct", device="cpu", rescore=False)
    assert plain.graph is None and plain.report["rescoring"]["skipped"] == "switched off"
    assert all("gnn" not in f.scores for f in plain.findings)
    assert all(f.probability >= find_model("lung-nodule-ct").threshold for f in plain.findings)
    card = find_model("lung-nodule-ct")
    off = dataclasses.replace(card, inference={**card.inference, "rescore_by_default": False})
    assert card.rescores() and not card.rescores(False) and not off.rescores() and off.rescores(True)
    assert not dataclasses.replace(card, inference={"roi_size_zyx": [32, 48, 48]}).rescores(True)  # none named
    by_card = run_model(case.image, off, device="cpu")  # no rescore argument: the card's say
    assert by_card.graph is None and by_card.report["rescoring"]["skipped"] == "switched off"


@pytest.mark.parametrize("name", ["nodule-cnn2d", "lung-nodule-gnn"])
def test_classifiers_and_rescorers_are_refused_with_a_message(case, name):
    with pytest.raises(MedcadError, match=f"model '{name}'"):
        run_model(case.image, name, device="cpu")


def test_warm_up_imports_the_graph_stack_only_when_asked():
    """`predict --no-rescore` must not pay for importing torch_geometric (about 2 s): warm_up(graph=False).
    With the graph stack, torch.onnx (imported by the first GNN call otherwise) comes too, and
    torch._dynamo does not (graph.pyg); the event is set before the graph stack is imported."""
    import subprocess
    import sys

    pytest.importorskip("torch_geometric")
    code = ("import sys, threading; from napari_medcad.core.inference.run import warm_up; ready = threading.Event(); "
            "seen = []; ready.set = lambda: seen.append('torch_geometric' in sys.modules); "
            "warm_up({}, ready); print(seen, *(m in sys.modules for m in "
            "('torch_geometric', 'monai', 'torch.onnx', 'torch._dynamo')))")
    seen = [subprocess.run([sys.executable, "-c", code.format(graph)], capture_output=True, text=True, check=True,
                           timeout=120).stdout.split() for graph in (False, True)]
    assert seen == [["[False]", "False", "True", "False", "False"], ["[False]", "True", "True", "True", "False"]]


def test_a_rescorer_reading_the_cnn_embedding_gets_the_numbers_training_computes(case, tmp_path):
    """run_model hands the rescorer the detector's embedding from its own prepared image and network;
    training and the benchmark compute it from the source image (graph.rescore.detector_embeddings).
    The two must agree, or a rescorer would be trained on other numbers than it is run on."""
    import copy

    import torch

    from napari_medcad.core.graph import FEATURE_NAMES
    from napari_medcad.core.graph.rescore import detector_embeddings
    from napari_medcad.core.models.card import ModelCard
    from napari_medcad.core.models.networks import build
    from napari_medcad.core.training.gnn_recipe import GNN_CARD
    from napari_medcad.core.training.loop import save_weights

    spec = {"layer": "upcat_1", "channels": 8, "patch_zyx": [16, 16, 16]}
    names = list(FEATURE_NAMES) + [f"cnn_embedding_{i}" for i in range(8)]
    data = copy.deepcopy(GNN_CARD)
    data["architecture"]["params"].update(in_features=len(names), hidden=8)
    data["inference"].update(cnn_embedding=spec, features=names)
    data["decoding"]["threshold"] = 0.0  # every candidate kept: findings and graph nodes alike
    gnn = ModelCard.from_dict(data)
    folder = tmp_path / "gnn-with-embedding"
    folder.mkdir()
    torch.manual_seed(0)
    save_weights(build(gnn.architecture), folder / gnn.weights)
    gnn.save(folder / "card.yaml")
    detector = find_model("lung-nodule-ct")
    detector = dataclasses.replace(detector, inference={**detector.inference, "rescorer": str(folder)})

    result = run_model(case.image, detector, device="cpu", rescore=True)
    assert result.report["rescoring"]["model"] == "lung-nodule-gnn" and "skipped" not in result.report["rescoring"]
    graph = result.graph
    assert graph.feature_names == tuple(names) and graph.n_nodes == len(result.findings) > 1
    assert list(graph.ids) == [f.id for f in result.findings]
    again = detector_embeddings(result.findings, case.image, find_model(str(folder)))
    np.testing.assert_allclose(graph.features[:, len(FEATURE_NAMES):], again, rtol=1e-4, atol=1e-5)
    assert np.abs(again).max() > 0 and not np.allclose(again[0], again[1])


def test_field_of_view_padding_below_minus_1024_does_not_change_what_the_model_sees(case):
    """Scanners fill the corners outside their reconstruction circle with -2000 or -3024: a
    linear resample blended that into the body's edge.  Raised to -1024 first, a CT padded with
    -3024 gives the model the same input, so the same maps and findings, as one padded with -1024."""
    from napari_medcad.core.inference.run import model_input

    geometry = Geometry((1.1, 1.1, 1.6), case.image.geometry.origin_xyz, case.image.geometry.direction)
    array = np.maximum(case.image.array, -1024).astype(np.int16)  # the generator's air, never below -1024
    _, y, x = np.ogrid[tuple(slice(0, n) for n in array.shape)]
    corners = np.broadcast_to((y - 95.5) ** 2 + (x - 95.5) ** 2 > 96 ** 2, array.shape)
    array[corners] = -1024
    plain = MedicalImage(array, geometry, modality="CT", name="plain")
    padded_array = array.copy()
    padded_array[corners] = -3024
    padded = plain.with_array(padded_array)
    assert model_input(plain, find_model("lung-nodule-ct")) == (plain, [])
    raised, notes = model_input(padded, find_model("lung-nodule-ct"))
    np.testing.assert_array_equal(raised.array, array)
    assert len(notes) == 1 and f"{int(corners.sum()):,} voxels below -1024 HU" in notes[0]
    assert padded.array.min() == -3024  # the caller's image is not changed
    first, second = (run_model(image, "lung-nodule-ct", device="cpu", rescore=False) for image in (plain, padded))
    np.testing.assert_array_equal(first.probability.array, second.probability.array)
    assert [f.centre_world_mm for f in first.findings] == [f.centre_world_mm for f in second.findings]
    assert second.report["notes"][:1] == notes and not any("HU" in note for note in first.report["notes"])
    # a model for other images gets them as they are
    card = dataclasses.replace(find_model("lung-nodule-ct"), modality="MR")
    assert model_input(padded, card) == (padded, [])
