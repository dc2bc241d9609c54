"""Model cards as a user (or an attacker) writes them, and the registry that lists them: every
malformed card is one MedcadError naming its file, one bad user card never hides the others,
and a YAML alias bomb costs nothing."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import yaml

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.models import registry
from napari_medcad.core.models.card import ModelCard, read_card

GOOD = {
    "name": "good", "task": "detection", "dims": 3, "format": "torchscript", "weights": "model.ts",
    "output": {"activation": "sigmoid", "channels": 1}, "decoding": {"threshold": 0.5},
    "inference": {"roi_size_zyx": [8, 32, 32], "overlap": 0.25, "batch_size": 2},
}


def changed(path: str, value) -> dict:
    """GOOD with the field at dotted ``path`` set to ``value``."""
    card = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    target = card
    for key in parents:
        target = target.setdefault(key, {})
    target[last] = value
    return card


def write_card(folder: Path, data=None, text: str | None = None, raw: bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "card.yaml"
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(text if text is not None else yaml.safe_dump(data))
    return path


ALIAS_BOMB = ("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
              "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
              "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
              "h: [*g,*g,*g,*g,*g,*g,*g,*g,*g]\nname: bomb\ntask: detection\ndims: 3\n")


@pytest.mark.parametrize("case, card, message", [
    ("int-key", "name: k\ntask: detection\ndims: 3\n1: x\n", "key that is not text"),
    ("nested-int-key", "name: k\ntask: detection\ndims: 3\nprovenance: {1: x}\n", "key that is not text"),
    ("python-tag", "name: !!python/object/apply:os.system ['true']\ntask: detection\ndims: 3\n", "not valid YAML"),
    ("binary", "name: k\ntask: detection\ndims: 3\nlicense: !!binary aGVsbG8=\n", "type bytes"),
    ("syntax", "name: k\ntask: detection\ndims: [3\n", "not valid YAML"),
    ("list", "- a\n- b\n", "mapping of fields"),
    ("alias", "x: &x [1]\nname: k\ntask: detection\ndims: 3\nclasses: *x\n", "aliases"),
    ("name-int", changed("name", 123), "name must be non-empty text, not 123"),
    ("name-null", changed("name", None), "name must be non-empty text"),
    ("name-empty", changed("name", " "), "name must be non-empty text"),
    ("dims-str", changed("dims", "3"), "dims must be 2 or 3, not '3'"),
    ("dims-bool", changed("dims", True), "dims must be 2 or 3"),
    ("task-list", changed("task", ["detection"]), "task must be one of"),
    ("modality-int", changed("modality", 5), "modality must be text, not 5"),
    ("weights-int", changed("weights", 5), "weights must be text"),
    ("weights-empty", changed("weights", ""), "weights must be the name of the weights file"),
    ("architecture-list", changed("architecture", ["monai:BasicUNet"]), "architecture must be a mapping"),
    ("output-list", changed("output", [1]), "output must be a mapping"),
    ("channels-str", changed("output.channels", "one"), "output.channels must be a whole number"),
    ("activation", changed("output.activation", "relu"), "output.activation must be sigmoid or softmax"),
    ("finding-channel", changed("output.finding_channel", 5), "output.finding_channel must be a channel"),
    ("decoding-list", changed("decoding", []), "decoding must be a mapping"),
    ("threshold-str", changed("decoding.threshold", "high"), "decoding.threshold must be a number"),
    ("threshold-2", changed("decoding.threshold", 2.0), "decoding.threshold must be a number from 0 to 1"),
    ("threshold-negative", changed("decoding.threshold", -0.1), "decoding.threshold"),
    ("inference-str", changed("inference", "fast"), "inference must be a mapping"),
    ("overlap-1", changed("inference.overlap", 1.0), "inference.overlap must be a number from 0 to below 1"),
    ("overlap-negative", changed("inference.overlap", -0.5), "inference.overlap"),
    ("roi-zero", changed("inference.roi_size_zyx", [0, 32, 32]), "roi_size_zyx must be 3 whole numbers of at least 1"),
    ("roi-negative", changed("inference.roi_size_zyx", [-8, 32, 32]), "roi_size_zyx must be 3 whole numbers"),
    ("roi-length", changed("inference.roi_size_zyx", [32, 32]), "roi_size_zyx must be 3 whole numbers"),
    ("batch-zero", changed("inference.batch_size", 0), "inference.batch_size"),
    ("spacing-negative", changed("spacing_xyz", [-1.0, 1.0, 1.0]), "spacing_xyz must be 3 positive numbers"),
    ("classes-str", changed("classes", "lesion"), "classes must be a list of text"),
    ("preprocessing-str", changed("preprocessing", "window"), "preprocessing must be a list"),
    ("rescore-default", changed("inference.rescore_by_default", "yes"), "rescore_by_default must be true or false"),
])
def test_a_malformed_card_is_one_line_naming_its_file(tmp_path, case, card, message):
    path = write_card(tmp_path / case, text=card) if isinstance(card, str) else write_card(tmp_path / case, card)
    with pytest.raises(MedcadError, match=message) as caught:
        read_card(path)
    text = str(caught.value)
    assert text.startswith(str(path.resolve())) or text.startswith(str(path)), text
    assert "\n" not in text and len(text) < 400


def test_a_card_that_is_not_utf8_text(tmp_path):
    path = write_card(tmp_path / "latin", raw=b"name: x\ntask: detection\ndims: 3\ndescription: caf\xe9\n")
    with pytest.raises(MedcadError, match="not UTF-8 text"):
        read_card(path)


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    path = write_card(tmp_path / "bomb", text=ALIAS_BOMB)
    started = time.perf_counter()
    with pytest.raises(MedcadError, match="aliases"):
        read_card(path)
    assert time.perf_counter() - started < 1.0


def test_a_huge_card_is_refused_without_reading_it_all(tmp_path):
    path = write_card(tmp_path / "huge", text="name: x\ntask: detection\ndims: 3\ndescription: " + "a" * (2 << 20))
    with pytest.raises(MedcadError, match="larger than"):
        read_card(path)


def test_a_huge_wrong_value_is_not_copied_into_the_message(tmp_path):
    path = write_card(tmp_path / "long", changed("modality", list(range(100_000))))
    with pytest.raises(MedcadError, match="modality must be text") as caught:
        read_card(path)
    assert len(str(caught.value)) < 300


def test_dates_stay_text_and_a_numeric_version_is_read_as_text(tmp_path):
    path = write_card(tmp_path / "dated", text=yaml.safe_dump(GOOD) + "version: 1.0\nprovenance: {trained: 2024-01-31}\n")
    card = read_card(path)
    assert card.version == "1.0" and card.provenance["trained"] == "2024-01-31"


def test_a_saved_card_holds_no_aliases_even_for_shared_values(tmp_path):
    roi = [8, 32, 32]
    card = ModelCard(name="shared", task="detection", dims=3, format="torchscript", weights="model.ts",
                     inference={"roi_size_zyx": roi, "mask_margin_zyx": roi})
    path = card.save(tmp_path / "card.yaml")
    assert "&" not in path.read_text() and "*" not in path.read_text()
    assert read_card(path).inference["mask_margin_zyx"] == roi


def test_a_card_made_in_code_is_checked_too():
    with pytest.raises(MedcadError, match="output.channels"):
        ModelCard(name="m", task="detection", dims=3, weights="w.pt", architecture={"name": "x"},
                  output={"channels": "one"})


# -- the registry ------------------------------------------------------------------------------

@pytest.fixture
def user_models(tmp_path, monkeypatch):
    folder = tmp_path / "user models"
    folder.mkdir()
    monkeypatch.setenv("NAPARI_MEDCAD_MODELS", str(folder))
    monkeypatch.setattr(registry, "_reported", set())
    return folder


def test_bad_user_cards_do_not_hide_the_others(user_models, caplog):
    good = write_card(user_models / "good", GOOD)
    broken = {
        "int-key": write_card(user_models / "int-key", text="name: int-key\ntask: detection\ndims: 3\n1: x\n"),
        "latin": write_card(user_models / "latin", raw=b"name: latin\ntask: detection\ndims: 3\ndescription: caf\xe9\n"),
        "name-int": write_card(user_models / "name-int", changed("name", 7)),
        "bomb": write_card(user_models / "bomb", text=ALIAS_BOMB),
    }
    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        names = [card.name for card in registry.list_models()]
        registry.list_models()  # reported once per process, not on every scan
    assert "good" in names and "lung-nodule-ct" in names
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == len(broken)
    for path in broken.values():
        (line,) = [line for line in lines if str(path) in line]
        assert "\n" not in line and line.startswith("skipped a user model")
    with pytest.raises(MedcadError, match="unknown model 'nosuch' \\(registered: .*good"):
        registry.find_model("nosuch")
    assert registry.find_model("good").path == good.resolve()


def test_a_user_model_may_not_take_a_taken_name(user_models, caplog):
    write_card(user_models / "a", changed("name", "dup"))
    write_card(user_models / "b", changed("name", "dup"))
    write_card(user_models / "c", changed("name", "lung-nodule-ct"))
    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        cards = registry.list_models()
    (dup,) = [card for card in cards if card.name == "dup"]
    assert dup.folder == (user_models / "a").resolve()
    assert registry.find_model("lung-nodule-ct").path.is_relative_to(registry.BUILTIN_DIR)
    lines = [record.getMessage() for record in caplog.records]
    assert any(str(user_models / "b") in line and "the user model in" in line for line in lines)
    assert any(str(user_models / "c") in line and "a built-in model" in line for line in lines)


def test_a_folder_in_the_current_directory_does_not_shadow_a_registered_name(user_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lung-nodule-ct" / "case").mkdir(parents=True)  # what `predict --out lung-nodule-ct` leaves
    assert registry.find_model("lung-nodule-ct").path.is_relative_to(registry.BUILTIN_DIR)
    with pytest.raises(MedcadError, match="no model card in this folder"):
        registry.find_model("./lung-nodule-ct")  # with a separator it is the folder
    write_card(tmp_path / "mine", changed("name", "mine-by-path"))
    assert registry.find_model("mine").name == "mine-by-path"  # no model of that name: the folder
    with pytest.raises(MedcadError, match="no such model folder or file"):
        registry.find_model("./missing")


def test_the_models_command_reports_bad_cards_one_line_each(user_models, run_cli):
    write_card(user_models / "good", GOOD)
    write_card(user_models / "int-key", text="name: int-key\ntask: detection\ndims: 3\n1: x\n")
    write_card(user_models / "bomb", text=ALIAS_BOMB)
    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    assert "good" in result.stdout and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("skipped a user model: ") for line in lines), result.stderr
    listing = json.loads(run_cli("models", "--json").stdout)
    assert sorted(Path(item["card"]).parent.name for item in listing["skipped"]) == ["bomb", "int-key"]
