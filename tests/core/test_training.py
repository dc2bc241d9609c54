"""Training: seeded and deterministic, writes a card and weights run_model can load; the CLI; FROC."""

import numpy as np
import pytest
import torch
import yaml

from napari_medcad.cli import main
from napari_medcad.core.errors import Cancelled, MedcadError
from napari_medcad.core.inference.run import run_model
from napari_medcad.core.models.card import read_card
from napari_medcad.core.models.loading import load_network, safe_load_weights
from napari_medcad.core.phantom import PhantomConfig, generate_chest_ct
from napari_medcad.core.training import train_builtin
from napari_medcad.core.training.evaluation import froc, match_case, threshold_for_fp_rate

TINY = dict(epochs=1, steps_per_epoch=2, train_cases=1, val_cases=0, max_in_plane=96, max_slices=24,
            batch_size=2, patch_zyx=[16, 32, 32])


def test_two_steps_are_deterministic_and_loadable(tmp_path):
    first = train_builtin("lung-nodule-ct", tmp_path / "a", **TINY)
    second = train_builtin("lung-nodule-ct", tmp_path / "b", **TINY)
    other = train_builtin("lung-nodule-ct", tmp_path / "c", **{**TINY, "seed": 5})
    weights = [safe_load_weights(p.parent / "weights.pt") for p in (first, second, other)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0] if weights[0][k].is_floating_point())
    card = read_card(first)
    assert card.name == "lung-nodule-ct" and card.provenance["seed"] == 20240401
    assert card.provenance["epochs"] == 1 and len(card.provenance["losses_per_epoch"]) == 1
    assert card.provenance["recipe"]["train_cases"] == 1 and "torch" in card.provenance["versions"]
    assert card.inference["roi_size_zyx"] == [16, 32, 32]  # inference windows = the training patches
    load_network(card)  # strict state-dict load through the safe loader
    image = generate_chest_ct(1, PhantomConfig(shape_zyx=(16, 64, 64), spacing_xyz=(3.0, 3.0, 4.0))).image
    result = run_model(image, card, device="cpu")
    assert result.probability.spatial_shape == image.spatial_shape


def test_training_can_be_cancelled(tmp_path):
    def cancel(item):
        if "epoch" in item.message:
            raise Cancelled()

    with pytest.raises(Cancelled):
        train_builtin("lung-nodule-ct", tmp_path, progress=cancel, **TINY)
    assert not (tmp_path / "card.yaml").exists()


def test_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(MedcadError, match="unknown built-in"):
        train_builtin("no-such-model", tmp_path)
    with pytest.raises(MedcadError, match="unknown training settings"):
        train_builtin("lung-nodule-ct", tmp_path, learning_speed=3)


def test_cli_trains_tiny(tmp_path, capsys, monkeypatch):
    from napari_medcad.core.training import builtin

    recipe = dict(builtin.BUILTIN_RECIPES["lung-nodule-ct"][1], **{k: v for k, v in TINY.items() if k != "epochs"})
    monkeypatch.setitem(builtin.BUILTIN_RECIPES, "lung-nodule-ct", (builtin.LUNG_NODULE_CT_CARD, recipe))
    status = main(["train-builtin", "lung-nodule-ct", "--out", str(tmp_path), "--epochs", "1", "--seed", "3"])
    assert status == 0
    card_path = capsys.readouterr().out.strip().splitlines()[-1]
    data = yaml.safe_load(open(card_path))
    assert data["provenance"]["seed"] == 3 and data["provenance"]["epochs"] == 1
    assert main(["train-builtin", "nope", "--out", str(tmp_path)]) == 2
    # recipe settings from the command line, as JSON; unknown or malformed ones are one-line errors
    status = main(["train-builtin", "lung-nodule-ct", "--out", str(tmp_path / "set"), "--epochs", "1",
                   "--set", "positive_jitter=0.5", "--set", "n_nodules=[1, 2]"])
    assert status == 0
    recipe_run = yaml.safe_load(open(tmp_path / "set" / "card.yaml"))["provenance"]["recipe"]
    assert recipe_run["positive_jitter"] == 0.5 and recipe_run["n_nodules"] == [1, 2]
    capsys.readouterr()
    assert main(["train-builtin", "lung-nodule-ct", "--out", str(tmp_path / "x"), "--set", "no_such=1"]) == 2
    assert main(["train-builtin", "lung-nodule-ct", "--out", str(tmp_path / "x"), "--set", "positive_jitter"]) == 2
    errors = capsys.readouterr().err
    assert "unknown training settings: no_such" in errors and "--set needs KEY=VALUE" in errors


def test_matching_and_froc():
    truth = np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    found = np.array([[1.0, 0.0, 0.0], [1.5, 0.0, 0.0], [100.0, 0.0, 0.0], [52.0, 0, 0]])
    case = match_case(found, [0.6, 0.5, 0.7, 0.3], truth, [6.0, 3.0])
    assert sorted(case.tp_probs) == [0.6]  # the second nodule's finding is 2 mm off, radius 1.5
    assert sorted(case.fp_probs) == [0.3, 0.7] and case.missed == [1]
    scores = froc([case])
    assert scores["sensitivity"][0.125] == 0.0 and scores["sensitivity"][1.0] == 0.5
    assert scores["sensitivity"][8.0] == 0.5 and scores["max_sensitivity"] == 0.5
    assert 0.3 < threshold_for_fp_rate([case], 1.0) <= 0.7
    assert threshold_for_fp_rate([case], 0.0) > 0.7


def test_nodule_weights_balance_small_and_large_nodules():
    from napari_medcad.core.training.loop import nodule_weights

    instances = np.zeros((20, 40, 40), np.uint16)
    instances[2:4, 2:4, 2:4] = 1  # 8 voxels: a small nodule
    instances[5:15, 10:30, 10:30] = 2  # 4,000 voxels: a large one
    weights = nodule_weights(instances, reference_voxels=400)
    assert weights[0, 0, 0] == 1.0
    assert weights[2, 2, 2] == pytest.approx(np.sqrt(400 / 8))  # 7.07, under the cap of 8
    assert weights[10, 20, 20] == 1.0  # larger than the reference: never below 1
    # the small nodule's total pull is now within 10x of the large one's, not 500x
    assert weights[instances == 2].sum() / weights[instances == 1].sum() < 80


def test_sample_batch_centres_negatives_on_vessels():
    from napari_medcad.core.training.loop import TrainingCase, sample_batch

    image = np.zeros((30, 60, 60), np.float32)
    vessels = np.array([[15, 30, 30]], np.int32)
    image[15, 30, 30] = 5.0  # a marker at the only vessel voxel
    case = TrainingCase(image, np.zeros(image.shape, np.uint8), np.ones(image.shape, np.float32),
                        np.zeros(image.shape, bool), vessels, np.zeros((0, 3)))
    recipe = {"patch_zyx": [16, 24, 24], "batch_size": 8, "positive_fraction": 0.0, "vessel_fraction": 1.0}
    images, targets, weights = sample_batch([case], np.random.default_rng(0), recipe)
    assert images.shape == targets.shape == weights.shape == (8, 1, 16, 24, 24)
    assert all((patch > 2.0).any() for patch in images[:, 0])  # every patch holds the vessel voxel


def test_hard_nodule_weight_shows_hard_nodules_more_often():
    """Positive patches favour the nodules the detector misses (not solid, attached, small)."""
    from types import SimpleNamespace

    from napari_medcad.core.training.loop import TrainingCase, nodule_difficulty, sample_batch

    nodules = [SimpleNamespace(kind="solid", attached="none", diameter_mm=15.0),
               SimpleNamespace(kind="ground-glass", attached="vessel", diameter_mm=6.0)]
    assert nodule_difficulty(nodules).tolist() == [0.0, 3.0]
    image = np.zeros((30, 60, 80), np.float32)
    image[15, 30, 15], image[15, 30, 65] = 5.0, 9.0  # a marker at each nodule's centre
    case = TrainingCase(image, np.zeros(image.shape, np.uint8), np.ones(image.shape, np.float32),
                        np.zeros(image.shape, bool), np.zeros((0, 3), np.int32),
                        np.array([[15, 30, 15], [15, 30, 65]], float), nodule_difficulty(nodules))
    empty = TrainingCase(image * 0, np.zeros(image.shape, np.uint8), np.ones(image.shape, np.float32),
                         np.zeros(image.shape, bool), np.zeros((0, 3), np.int32), np.zeros((0, 3)))
    recipe = {"patch_zyx": [4, 4, 4], "batch_size": 400, "positive_fraction": 1.0}

    def share_of_hard(weight, cases):
        batch = sample_batch(cases, np.random.default_rng(1), {**recipe, "hard_nodule_weight": weight})[0]
        peaks = batch.reshape(len(batch), -1).max(axis=1)
        assert (peaks > 2.0).all()  # every patch is centred on a nodule
        return float(np.mean(peaks > 7.0))

    assert 0.4 < share_of_hard(0.0, [case]) < 0.6  # uniform over nodules
    # weights 1 : 4 -> 0.8; and weighted positives never come from the nodule-free case
    assert 0.7 < share_of_hard(1.0, [case, empty]) < 0.88


def test_detector_loss_batch_dice_forgives_a_faint_response_on_an_empty_patch():
    import torch

    from napari_medcad.core.training.loop import detector_loss

    targets = torch.zeros(2, 1, 8, 8, 8)
    targets[0, 0, 2:6, 2:6, 2:6] = 1.0  # patch 0 holds a nodule, patch 1 none
    logits = torch.where(targets > 0, torch.tensor(6.0), torch.tensor(-6.0))
    logits[1, 0, 0, 0, :4] = 0.0  # a faint (p 0.5) response on four voxels of the empty patch
    weights = torch.ones_like(targets)
    per_patch = float(detector_loss(logits, targets, weights, "patch"))
    per_batch = float(detector_loss(logits, targets, weights, "batch"))
    assert per_patch > 0.3  # the empty patch's Dice alone is ~0.67
    assert per_batch < 0.1
    with pytest.raises(ValueError):
        detector_loss(logits, targets, weights, "volume")


def test_an_unknown_dice_mode_is_refused_before_any_training(tmp_path):
    from napari_medcad.core.errors import MedcadError
    from napari_medcad.core.training.builtin import train_builtin

    with pytest.raises(MedcadError, match="dice_over must be one of patch, batch, positive"):
        train_builtin("lung-nodule-ct", tmp_path / "out", dice_over="volume")
    assert not (tmp_path / "out").exists()


def test_detector_loss_positive_dice_weighs_a_missed_small_nodule_like_a_missed_large_one():
    """With one Dice over the batch a missed 2-voxel-wide nodule costs almost nothing next to a
    found large one (the small nodules the detector never learnt); per nodule patch it costs as
    much as missing the large one would."""
    import torch

    from napari_medcad.core.training.loop import detector_loss

    targets = torch.zeros(3, 1, 16, 16, 16)
    targets[0, 0, 2:14, 2:14, 2:14] = 1.0  # a large nodule
    targets[1, 0, 7:9, 7:9, 7:9] = 1.0  # a small one; patch 2 holds none
    found_large = torch.where(targets[:1] > 0, torch.tensor(8.0), torch.tensor(-8.0))
    nothing = torch.full((2, 1, 16, 16, 16), -8.0)
    logits = torch.cat([found_large, nothing])
    weights = torch.ones_like(targets)
    missed_small = {mode: float(detector_loss(logits, targets, weights, mode)) for mode in ("batch", "positive")}
    assert missed_small["batch"] < 0.05
    assert missed_small["positive"] > 0.45  # half the nodule patches missed: Dice term ~0.5
    # a nodule-free patch adds nothing to the Dice term, however it fires
    firing = logits.clone()
    firing[2, 0, :4, :4, :4] = 0.0
    assert float(detector_loss(firing, targets, weights, "positive")) - missed_small["positive"] < 0.01


def test_every_builtin_model_has_a_recipe_with_its_trainer():
    from napari_medcad.core.models.registry import BUILTIN_DIR
    from napari_medcad.core.training.builtin import BUILTIN_RECIPES

    shipped = {folder.name for folder in BUILTIN_DIR.iterdir() if (folder / "card.yaml").exists()}
    assert shipped and shipped <= set(BUILTIN_RECIPES)
    for name in shipped:
        card = read_card(BUILTIN_DIR / name / "card.yaml")
        template = BUILTIN_RECIPES[name][0]
        assert (template["family"], template["task"]) == (card.family, card.task), name


def test_positive_jitter_puts_nodules_anywhere_in_the_patch():
    """With ``positive_jitter`` 0.5 a nodule can sit at a patch's edge, as it does in inference
    windows; with 0.35 (the first recipes) it stays in the patch's middle 70%."""
    from napari_medcad.core.training.loop import TrainingCase, sample_batch

    image = np.zeros((40, 40, 40), np.float32)
    image[20, 20, 20] = 5.0  # a marker at the nodule's centre
    case = TrainingCase(image, np.zeros(image.shape, np.uint8), np.ones(image.shape, np.float32),
                        np.zeros(image.shape, bool), np.zeros((0, 3), np.int32), np.array([[20.0, 20.0, 20.0]]))
    recipe = {"patch_zyx": [20, 20, 20], "batch_size": 300, "positive_fraction": 1.0}

    def offsets(jitter):
        batch = sample_batch([case], np.random.default_rng(3), {**recipe, "positive_jitter": jitter})[0][:, 0]
        found = [np.argwhere(np.abs(patch) > 2.0) for patch in batch]
        return np.array([np.abs(where[0] - 10).max() for where in found if len(where)])

    assert offsets(0.35).max() <= 8  # 0.35 x 20 voxels, rounded
    assert offsets(0.5).max() >= 9  # within a voxel of the edge


def test_recipe_sets_the_training_phantoms_pixels_and_nodule_count():
    from napari_medcad.core.training.builtin import LUNG_NODULE_CT_TRAINING
    from napari_medcad.core.training.loop import case_config

    recipe = {**LUNG_NODULE_CT_TRAINING, "pixel_mm": [1.2, 1.5], "n_nodules": [4, 9]}
    configs = [case_config(seed, recipe) for seed in range(12)]
    assert all(1.2 <= c.spacing_xyz[0] == c.spacing_xyz[1] <= 1.5 for c in configs)
    assert all(c.n_nodules == (4, 9) for c in configs)
    legacy = case_config(5, {**LUNG_NODULE_CT_TRAINING, "pixel_mm": [0.5, 1.0], "n_nodules": None})
    assert legacy == case_config(5, {k: v for k, v in LUNG_NODULE_CT_TRAINING.items()
                                     if k not in ("pixel_mm", "n_nodules")})
    assert 0.5 <= legacy.spacing_xyz[0] <= 1.0 and legacy.n_nodules[0] == 1
