"""`napari-medcad export --image IMAGE --findings CASE_DIR_OR_CSV [--review FILE] --out DATASET`.

Adds one reviewed case to a retraining dataset (nnU-Net v2 layout, LUNA16 CSVs, COCO for 2D,
provenance) through :func:`napari_medcad.core.export.export_case`.  ``CASE_DIR`` is a
`predict` output folder (findings.csv, and labels.nii.gz when the model gave masks).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import command


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, metavar="IMAGE", help="the image file or DICOM folder")
    parser.add_argument("--findings", metavar="CASE_DIR_OR_CSV",
                        help="a predict output folder (findings.csv + labels.nii.gz) or a findings CSV")
    parser.add_argument("--seriesuid", metavar="UID",
                        help="with a findings CSV of several series (LUNA16's annotations.csv): this image's rows")
    parser.add_argument("--review", metavar="REVIEW_FILE", help="a review file: its decisions replace the CSV's")
    parser.add_argument("--out", required=True, metavar="DATASET", help="dataset folder (created if needed)")
    parser.add_argument("--case", metavar="NAME", help="case name (default: a pseudonym, case_0001...)")
    parser.add_argument("--pending", choices=("negative", "omit"), default="negative",
                        help="unreviewed findings in candidates.csv: class 0 (default) or left out")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def load_case_folder(folder: Path):
    """Findings (and label map, model provenance) from a `predict` case folder."""
    from ..core.errors import MedcadError
    from ..core.findings import read_findings_csv
    from ..core.io import read_image

    csv_path = folder / "findings.csv"
    if not csv_path.is_file():
        raise MedcadError("this folder has no findings.csv (expected a `napari-medcad predict` case folder)", folder)
    findings = read_findings_csv(csv_path)
    labels = read_image(folder / "labels.nii.gz") if (folder / "labels.nii.gz").is_file() else None
    findings.provenance.update(_model_from_report(folder / "report.json"))
    return findings, labels


def _model_from_report(path: Path) -> dict:
    """Model name, version and decoding settings from predict's report.json (nothing else)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        model = report.get("model") or {}
        out = {"model": model.get("name"), "model_version": model.get("version"), "decoding": report.get("decoding")}
        return {key: value for key, value in out.items() if value is not None}
    except (OSError, ValueError, AttributeError):
        return {}


def load_reviewed(path: str, image, image_signature: str, labels=None):
    """(reviewed findings, masks as the reader left them) of a review file of ``image``; refused
    when it belongs to another image.  The reader's mask strokes are saved with the review, so
    they are made again on ``labels`` (the model's masks the review began with; None: an empty
    map on the image's grid, when the reader painted masks onto findings that came without any)."""
    import numpy as np

    from ..core.review import ReviewSession

    session = ReviewSession.open(path, image_signature)  # refuses a review of another image
    if any(action.voxels is not None for action in session.history):
        if labels is None:
            labels = image.with_array(np.zeros(image.spatial_shape, np.uint16), modality="SEG",
                                      name=f"{image.name} masks", metadata={})
        labels = labels.with_array(session.apply_mask_edits(np.asarray(labels.array)))
    return session.reviewed_findings(), labels


def _progress(quiet: bool):
    if quiet:
        return None

    def show(item) -> None:
        print(f"export: {item.fraction * 100:3.0f}% {item.message}", file=sys.stderr, flush=True)

    return show


@command("export", "add a reviewed case to a retraining dataset (nnU-Net v2, LUNA16 CSVs, COCO, provenance)",
         arguments)
def run(args: argparse.Namespace) -> int:
    from ..core.errors import MedcadError
    from ..core.export import export_case
    from ..core.findings import read_findings_csv
    from ..core.io import read_image

    if args.findings is None and args.review is None:
        raise MedcadError("give --findings (a predict case folder or CSV) and/or --review (a review file)")
    image = read_image(args.image)
    signature = image.content_signature()  # once: it hashes every voxel
    findings, labels = None, None
    if args.findings is not None:
        source = Path(args.findings)
        if source.is_dir():
            findings, labels = load_case_folder(source)
        elif source.is_file():
            findings = read_findings_csv(source, seriesuid=args.seriesuid)
        else:
            raise MedcadError("the findings folder or CSV does not exist", source)
    if args.review is not None:
        reviewed, labels = load_reviewed(args.review, image, signature, labels)
        if findings is not None:  # the CSV's model provenance, unless the review carries its own
            reviewed.provenance = {**findings.provenance, **reviewed.provenance}
        findings = reviewed
    result = export_case(image, findings, args.out, labels=labels, case_name=args.case, source_path=args.image,
                         progress=_progress(args.quiet), pending=args.pending, image_signature=signature)
    print(result.summary())
    return 0
