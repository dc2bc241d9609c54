"""`napari-medcad predict INPUT... --model NAME|PATH --out DIR`: run a model on images, write results.

For each input, ``DIR/<case>/`` gets ``findings.csv`` (LUNA16 submission columns first, world
mm), ``labels.nii.gz`` (when the model gives masks, on the source grid) and ``report.json``.
What the reader had to assume or change (a series resampled over a gap, files left out...) is
printed on stderr, one line per note, and kept in the report's ``notes``.
``<case>`` comes from the file or folder name only (never from DICOM tags, which may name the
patient).  A bad case is reported in one line and skipped; the exit status is then 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import traceback
import unicodedata
from pathlib import Path

from ..cli import EXIT_USER_ERROR, command
from ..core.inference.devices import DEVICE_CHOICES

#: a case failed on a bug, not on its input (set NAPARI_MEDCAD_DEBUG=1 for the traceback)
EXIT_INTERNAL_ERROR = 1

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_CASE_CHARS = 96


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file or DICOM folder (several allowed)")
    parser.add_argument("--model", default="lung-nodule-ct", metavar="NAME|PATH",
                        help="registered model name, or a model folder / card file (default: lung-nodule-ct)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the results (one subfolder per case)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where to run the model (default: auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--rescore", dest="rescore", action=argparse.BooleanOptionalAction, default=None,
                        help="run (or skip) the model's graph rescorer (lung-nodule-ct: the GNN false-positive "
                             "reduction); default: as the model's card says")


def case_name(path: str | os.PathLike) -> str:
    """A safe folder name from an input's file or folder name: no separators, no '..', no dot
    first; accented letters lose their accents (``été`` -> ``ete``, also from a Latin-1 name on a
    UTF-8 system), other characters become ``_``."""
    from ..core.io.paths import extension_of

    name = os.path.basename(os.path.normpath(os.path.abspath(os.fspath(path))))
    ext = extension_of(name)
    if ext and name.lower().endswith(ext) and len(name) > len(ext):
        name = name[: -len(ext)]
    if any("\udc80" <= c <= "\udcff" for c in name):  # bytes that are not UTF-8: most often Latin-1
        name = os.fsencode(name).decode("latin-1")
    name = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    name = _UNSAFE.sub("_", name).strip("._-")
    name = re.sub(r"\.{2,}", ".", name)[:_MAX_CASE_CHARS].strip("._-")
    return name or "case"


def unique_case_names(inputs: list[str]) -> list[str]:
    """``case_name`` of each input, with ``_2``, ``_3``... when two inputs share a name."""
    names, seen = [], set()
    for item in inputs:
        base = case_name(item)
        name, number = base, 1
        while name.lower() in seen:  # case-insensitive file systems would merge them
            number += 1
            name = f"{base}_{number}"
        seen.add(name.lower())
        names.append(name)
    return names


class _StderrProgress:
    """Progress lines on stderr: one per 10 % of a case, saying what is being done then.

    The core reports every unit of work (each slice of a mask, each window); a log needs a
    line now and then, not one per unit or per pipeline step."""

    def __init__(self, case: str, quiet: bool):
        self.case, self.quiet, self.last_decile = case, quiet, -1

    def __call__(self, item) -> None:
        if self.quiet or item.message == "done":  # a pipeline's own "done" says nothing here
            return
        decile = int(item.fraction * 10)
        if decile > self.last_decile:
            self.last_decile = decile
            print(f"{self.case}: {item.fraction * 100:3.0f}% {item.message}", file=sys.stderr, flush=True)


def predict_case(image, card, case: str, out_dir: Path, device: str, progress=None, rescore: bool | None = None) -> dict:
    """Run ``card`` on ``image`` and write the case folder; returns the report written."""
    from ..core.atomic import write_text
    from ..core.inference.run import run_model
    from ..core.io import reader_notes, write_image

    result = run_model(image, card, device=device, progress=progress, rescore=rescore)
    folder = out_dir / case
    folder.mkdir(parents=True, exist_ok=True)
    written = ["findings.csv", "report.json"]
    write_text(folder / "findings.csv", result.findings.to_csv(seriesuid=case))
    labels_path = folder / "labels.nii.gz"
    if result.labels is not None:
        write_image(result.labels.with_array(result.labels.array, name=f"{case} labels"), labels_path)
        written.insert(1, "labels.nii.gz")
    elif labels_path.exists():  # from an earlier run with another model: would not match these findings
        labels_path.unlink()
    report = {"case": case, **result.report, "notes": reader_notes(image) + result.report.get("notes", []),
              "files": written}
    # the image's own name may be a DICOM series description (free text that can name the
    # patient): the report names the case by its sanitised file name only
    report["image"] = {**report.get("image", {}), "name": case}
    write_text(folder / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    return report


@command("predict", "run a model on images or DICOM folders; write findings (LUNA16 CSV), labels and a report",
         arguments)
def run(args: argparse.Namespace) -> int:
    from ..core.inference.devices import select_device
    from ..core.models.registry import find_model

    card = find_model(args.model)  # a bad model or device fails every case: one line, exit 2
    select_device(args.device)
    # MONAI and torch_geometric take seconds to import: on the other core while the first image is
    # read.  The main thread imports none of the detector's stack until this thread has (two
    # threads importing one package can break it: MONAI did) and the reader's own imports come
    # first.  The graph stack, which the run does not import before the rescorer, goes on
    # importing while the first case is prepared and the CNN runs.
    import scipy.ndimage  # noqa: F401
    import SimpleITK  # noqa: F401

    detector_ready = threading.Event()
    warm = threading.Thread(target=_warm_up, args=(card.rescores(args.rescore), detector_ready),
                            name="medcad-warm-up", daemon=True)
    warm.start()
    try:
        return _predict_all(args, card, detector_ready)
    finally:
        warm.join()  # no interpreter shutdown in the middle of an import


def _warm_up(graph: bool, detector_ready: threading.Event) -> None:
    try:
        from ..core.inference.run import warm_up

        warm_up(graph, detector_ready)
    except Exception:  # noqa: BLE001 - whatever failed fails again, with its message, where it is used
        pass
    finally:
        detector_ready.set()  # even when the import of run itself failed


def _predict_all(args: argparse.Namespace, card, detector_ready: threading.Event) -> int:
    from ..core.errors import MedcadError, first_line
    from ..core.io import read_image, reader_notes

    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MedcadError(f"cannot create the output folder ({err.strerror or err})", out_dir) from None

    failed = crashed = 0
    for source, case in zip(args.inputs, unique_case_names(args.inputs)):
        started = time.perf_counter()
        try:
            image = read_image(source)
            read_notes = reader_notes(image)
            for note in read_notes:  # the user must know the image is not quite the file
                print(f"{case}: note: {note}", file=sys.stderr, flush=True)
            detector_ready.wait()  # the first image is read: the detector's imports finish first
            report = predict_case(image, card, case, out_dir, args.device, _StderrProgress(case, args.quiet),
                                  rescore=args.rescore)
        except MedcadError as err:
            failed += 1
            print(f"napari-medcad predict: {case}: {err}", file=sys.stderr, flush=True)
            continue
        except MemoryError:
            failed += 1
            print(f"napari-medcad predict: {case}: {source}: not enough memory", file=sys.stderr, flush=True)
            continue
        except OSError as err:  # writing the case's folder: a file in its place, a full disk
            failed += 1
            print(f"napari-medcad predict: {case}: cannot write {out_dir / case} ({err.strerror or err})",
                  file=sys.stderr, flush=True)
            continue
        except Exception as err:  # noqa: BLE001 - a bug in one case must not cost the others theirs
            crashed += 1
            print(f"napari-medcad predict: {case}: internal error, please report it: {type(err).__name__}"
                  f"{': ' + first_line(err) if str(err).strip() else ''}", file=sys.stderr, flush=True)
            if os.environ.get("NAPARI_MEDCAD_DEBUG"):
                traceback.print_exc()
            continue
        for note in report["notes"][len(read_notes):]:  # the run's own: an empty mask, memory fallbacks...
            print(f"{case}: note: {note}", file=sys.stderr, flush=True)
        print(f"{case}: {report['findings']} findings in {time.perf_counter() - started:.1f} s -> {out_dir / case}",
              flush=True)
    return EXIT_INTERNAL_ERROR if crashed else EXIT_USER_ERROR if failed else 0

