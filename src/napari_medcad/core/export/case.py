"""export_case: add one reviewed case to a retraining dataset, all or nothing.

Everything is staged in the dataset's staging folder (see :mod:`.dataset`), checked for
identifying values, and moved into place only when complete; a cancelled or failed export
leaves the dataset as it was, and a killed one is finished or cleaned up by the next export.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MedcadError
from ..findings import Findings, Status, measurement_problem
from ..image import MedicalImage
from ..progress import ProgressFn, report
from . import coco, luna, nnunet, provenance
from .dataset import MANIFEST_NAME, Transaction, check_dataset_folder, dataset_lock, recover
from .deidentify import case_name_leak, check_no_identifiers, read_source_header
from .labelmap import build_case_labels

PENDING_POLICIES = {
    "negative": "pending (unreviewed) findings are background in the label map, absent from annotations.csv and "
                "class 0 in candidates.csv",
    "omit": "pending (unreviewed) findings are background in the label map and absent from both CSV files",
}
_STEPS = 9


@dataclass
class ExportResult:
    """What one export did, for the CLI's summary and the widget's notification."""

    dataset: Path
    case: str
    replaced: list[str]
    files: list[str]
    counts: dict[str, int]
    identifying_fields_removed: list[str]
    recovered: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        positives = sum(self.counts.get(s.value, 0) for s in Status if s.is_positive)
        text = (f"exported {self.case} to {self.dataset}: {positives} positive, "
                f"{self.counts.get('rejected', 0)} rejected, {self.counts.get('pending', 0)} pending")
        if self.replaced:
            text += f"; replaced {', '.join(self.replaced)} (the same image's earlier case)"
        if self.identifying_fields_removed:
            text += f"; left out {len(self.identifying_fields_removed)} identifying DICOM fields"
        return text


#: class names nnU-Net gives a meaning of its own: 'background' is 0 and 'ignore' marks voxels left out
#: of training, which must have the highest value; a lesion class cannot take either name (values are
#: fixed once given, so 'ignore' could not stay the highest when the next class comes)
_RESERVED_CLASSES = {"background": "means 'no lesion'",
                     "ignore": "is nnU-Net's name for voxels left out of training, not a lesion class"}


def _class_values(manifest: dict, findings: Findings) -> dict[str, int]:
    """Existing classes keep their values (earlier label files stay right); new ones follow."""
    classes = dict(manifest.get("classes") or {})
    for finding in sorted(findings, key=lambda f: f.id):
        if finding.status.is_positive and finding.label not in classes:
            reserved = _RESERVED_CLASSES.get(finding.label.strip().lower())
            if reserved:
                raise MedcadError(f"finding {finding.id} has the class {finding.label!r}, which {reserved}; "
                                  "give it another class name")
            classes[finding.label] = len(classes) + 1
    return classes


def _check_measurements(findings: Findings) -> None:
    """NaN, infinite or negative sizes would go into the tables and make the JSON invalid."""
    for finding in findings:
        problem = measurement_problem(finding)
        if problem:
            raise MedcadError(f"finding {finding.id} has {problem}; correct it before exporting")


def _check_layout(manifest: dict, image: MedicalImage, channels: dict[str, str]) -> None:
    """One dataset, one kind of image: nnU-Net trains on a fixed dimension and channel list."""
    if manifest.get("ndim") not in (None, image.ndim):
        raise MedcadError(f"this dataset holds {manifest['ndim']}D images; a {image.ndim}D image cannot join it")
    if manifest.get("channel_names") not in (None, channels):
        raise MedcadError(f"this dataset's images have channels {manifest['channel_names']}, this image has "
                          f"{channels}; export it into another dataset")


def _prepare_root(out_dir: str | os.PathLike) -> Path:
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise MedcadError("the dataset path exists and is not a folder", root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MedcadError(f"cannot create the dataset folder ({err.strerror or err})", root) from None
    return root


def export_case(image: MedicalImage, findings: Findings, out_dir: str | os.PathLike,
                labels: MedicalImage | None = None, case_name: str | None = None,
                source_path: str | os.PathLike | None = None, progress: ProgressFn | None = None,
                pending: str = "negative", image_signature: str | None = None) -> ExportResult:
    """Add (or replace) one case in the dataset at ``out_dir``, creating it if needed.

    ``labels`` is the findings' label map on the image grid (value = ``mask_value``, or the id
    of a model finding, as `predict` writes it).  ``source_path`` is the file or folder the
    image was read from: its DICOM header is read to report (and guard against) identifying
    fields.  ``pending`` says what unreviewed findings become (see ``PENDING_POLICIES``).
    ``image_signature`` is the image's ``content_signature()`` when the caller already has it
    (hashing a large CT's voxels takes a while).
    """
    if pending not in PENDING_POLICIES:
        raise MedcadError(f"unknown pending policy {pending!r} (use {' or '.join(PENDING_POLICIES)})")
    if case_name is not None:
        provenance.check_case_name(case_name)  # before anything is created
    _check_measurements(findings)
    signature = image_signature or image.content_signature()
    if findings.image_signature and findings.image_signature != signature:
        raise MedcadError("these findings belong to a different image (content signatures differ)")
    root = _prepare_root(out_dir)
    check_dataset_folder(root)  # before the lock file and the recovery touch someone else's folder
    with dataset_lock(root):
        recovered = recover(root)
        report(progress, 0, _STEPS, "reading the dataset")
        manifest = provenance.load_manifest(root)
        channels = nnunet.channel_names(image)
        _check_layout(manifest, image, channels)
        header = read_source_header(source_path)
        report(progress, 1, _STEPS, "checking the source header")
        case, replaced = provenance.choose_case_name(manifest, signature, case_name,
                                                     usable=lambda name: case_name_leak(name, header) is None)
        classes = _class_values(manifest, findings)

        transaction = Transaction(root)
        try:
            result = _stage(transaction, root, manifest, image, findings, labels, case, replaced, classes,
                            channels, header, signature, pending, progress)
            report(progress, _STEPS - 1, _STEPS, "checking for identifying values")
            check_no_identifiers(transaction.staged_files(), header, case, typed_text=_typed_text(findings))
            report(progress, _STEPS, _STEPS, "moving files into place")  # last chance to cancel
        except BaseException:
            transaction.abort()
            raise
        transaction.commit(order=_commit_order)
    result.recovered = recovered
    return result


def _typed_text(findings: Findings) -> dict[str, str]:
    """Text a person (or a model) chose for this case's findings and the export copies: class names."""
    return {f"the class name of finding {f.id}": f.label for f in findings}


def _commit_order(relative: str) -> int:
    """The order of the renames.  First the case's own files, which no table lists yet; then
    dataset.json, whose ``dataset`` list is the moment nnU-Net sees the new case list (every
    file of every listed case exists before and after it); then the LUNA16 tables and COCO;
    the manifest last.  Files of replaced cases are deleted after all of them."""
    if "/" in relative:
        return 0
    if relative == nnunet.DATASET_JSON:
        return 1
    return 3 if relative == MANIFEST_NAME else 2


def _stage(transaction: Transaction, root: Path, manifest: dict, image: MedicalImage, findings: Findings,
           labels: MedicalImage | None, case: str, replaced: list[str], classes: dict[str, int],
           channels: dict[str, str], header, signature: str, pending: str,
           progress: ProgressFn | None) -> ExportResult:
    report(progress, 2, _STEPS, "drawing the label map")
    case_labels = build_case_labels(image, findings, labels, classes)

    report(progress, 3, _STEPS, "writing the image")
    files = nnunet.image_paths(case, len(channels))
    nnunet.write_channels(image, [transaction.path(p) for p in files])

    report(progress, 4, _STEPS, "writing the label map")
    files.append(nnunet.label_path(case))
    nnunet.write_labels(case_labels.classes, image, transaction.path(files[-1]))

    report(progress, 5, _STEPS, "writing COCO")
    drop = set(replaced) | {case}
    if image.ndim == 2:
        files.append(coco.png_path(case))
        mapping = coco.write_png(image, transaction.path(files[-1]))
        class_of_finding = {f.id: classes[f.label] for f in findings if f.status.is_positive}
        data = coco.merged(coco.load(root / coco.COCO_NAME), case, drop, image, case_labels.instances,
                           case_labels.instance_of, class_of_finding, classes, mapping)
        transaction.path(coco.COCO_NAME).write_text(_json(data), encoding="utf-8")
    elif (root / coco.COCO_NAME).is_file() and replaced:
        data = coco.load(root / coco.COCO_NAME)
        kept = [im for im in data["images"] if im.get("medcad_case") not in drop]
        if len(kept) != len(data["images"]):
            ids = {im["id"] for im in kept}
            data.update(images=kept, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
            transaction.path(coco.COCO_NAME).write_text(_json(data), encoding="utf-8")

    report(progress, 6, _STEPS, "writing the LUNA16 tables")
    ndim = image.ndim
    transaction.path("annotations.csv").write_text(luna.merged_csv(
        root / "annotations.csv", luna.ANNOTATION_COLUMNS, luna.annotation_rows(case, findings, ndim), drop),
        encoding="utf-8")
    transaction.path("candidates.csv").write_text(luna.merged_csv(
        root / "candidates.csv", luna.CANDIDATE_COLUMNS,
        luna.candidate_rows(case, findings, ndim, include_pending=pending == "negative"), drop), encoding="utf-8")

    report(progress, 7, _STEPS, "writing dataset.json and the provenance")
    for old in replaced:
        for relative in manifest["cases"].get(old, {}).get("files", []):
            if relative not in files:
                transaction.delete(relative)
        manifest["cases"].pop(old, None)
    manifest["cases"][case] = _case_entry(image, findings, case_labels, header, signature, pending, files)
    manifest.update(classes=classes, channel_names=channels, ndim=image.ndim)
    training = {name: entry.get("files", []) for name, entry in manifest["cases"].items()}
    transaction.path(nnunet.DATASET_JSON).write_text(_json(nnunet.dataset_json(classes, channels, training),
                                                           indent=2), encoding="utf-8")
    transaction.path(MANIFEST_NAME).write_text(_json(manifest, indent=1), encoding="utf-8")
    return ExportResult(dataset=root, case=case, replaced=[r for r in replaced if r != case], files=files,
                        counts=provenance.status_counts(findings),
                        identifying_fields_removed=sorted(header.present))


def _json(data: Any, indent: int | None = None) -> str:
    """JSON that every reader accepts: a NaN or infinity that slipped past the checks is a bug, not
    a value to write (Python would write the non-standard NaN / Infinity)."""
    return json.dumps(data, indent=indent, allow_nan=False)


def _case_entry(image: MedicalImage, findings: Findings, case_labels, header, signature: str, pending: str,
                files: list[str]) -> dict[str, Any]:
    review = findings.provenance.get("review") or {}
    technical = {key: image.metadata[key] for key in ("manufacturer", "manufacturer_model", "slice_thickness_mm",
                                                      "kvp", "convolution_kernel", "body_part")
                 if key in image.metadata}
    return {
        "exported_at": provenance.now(),
        "image_signature": signature,
        "image": {"modality": image.modality, "ndim": image.ndim, "size_xyz": list(image.size_xyz),
                  "spacing_xyz": list(image.geometry.spacing_xyz), "dtype": str(image.array.dtype),
                  "rgb": image.rgb, **provenance._plain(technical)},
        "model": provenance.model_provenance(findings),
        "review": {"reviewed": bool(review), "actions": review.get("actions") if isinstance(
            review.get("actions"), int) else None},
        "pending_policy": PENDING_POLICIES[pending],
        "counts": provenance.status_counts(findings),
        "findings": provenance.decisions(findings, case_labels.drawn),
        "label_map": {"values": "0 background, then the dataset's class values",
                      "unmatched_label_values": case_labels.unmatched_label_values},
        "deidentification": header.report(),
        "software": provenance.software_versions(),
        "files": files,
    }
