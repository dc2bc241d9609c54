"""Run a model on an image: the card's preprocessing, mask, tiled inference, findings, back to the source.

This is the one function the CLI, the napari widget, notebooks and the benchmark call, so they
cannot drift apart.  Steps (each reported through ``progress``, each a place to cancel):

1. check the image against the card (dimensionality, colour, modality, finite values);
2. the card's geometry steps (resampling to its spacing), then, when the card asks for mask
   skipping, the lung mask on that grid (still in HU), then the card's remaining steps;
   together exactly ``Pipeline.run`` of the card's pipeline;
3. tiled inference (engine.infer_probabilities: MONAI sliding window, windows outside the mask
   skipped);
4. decoding to findings on the model's grid (connected components), then findings, labels and
   probability mapped onto the source grid (world positions are the truth in between).

torch is imported inside the functions only: ``import napari_medcad.core`` stays light.
"""

from __future__ import annotations

import platform
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MedcadError
from ..findings import Findings
from ..image import MedicalImage
from ..models.card import ModelCard
from ..preprocess.common import HU_FLOOR, INTENSITY_KEY, UNKNOWN_MODALITIES, check_hounsfield, raise_to_hu_floor
from ..progress import ProgressFn, report, scaled

#: share of the progress bar per stage: prepare, mask, infer, decode
_STAGES = {"prepare": (0.0, 0.12), "mask": (0.12, 0.22), "infer": (0.22, 0.92), "decode": (0.92, 1.0)}


@dataclass
class ModelResult:
    findings: Findings  # centres in world mm (LPS) and voxel index of the SOURCE image
    labels: MedicalImage | None  # nodule masks on the source grid, uint16, value = finding id
    probability: MedicalImage | None  # float32 heatmap on the source grid (0..1)
    report: dict = field(default_factory=dict)
    graph: Any = None  # the rescorer's CandidateGraph (every candidate, CNN and GNN scores), if one ran


def _card_of(model: str | ModelCard) -> ModelCard:
    if isinstance(model, ModelCard):
        return model
    from ..models.registry import find_model

    return find_model(model)


def check_input(image: MedicalImage, card: ModelCard) -> float:
    """Refuse images the model cannot read, with a message a user understands; the image's
    lowest value if it can.

    The messages do not name the image: a DICOM image's name is its series description, which
    can hold anything a technician typed; callers say which case or layer it was."""
    if card.task not in ("detection", "segmentation") or card.inference.get("stage") == "rescore":
        what = "rescores a detector's candidates" if card.inference.get("stage") == "rescore" else f"is a {card.task} model"
        raise MedcadError(f"model '{card.name}' {what}: run_model runs detection and segmentation models "
                          "(explanations of classifiers: napari_medcad.core.explain)")
    if image.rgb:
        raise MedcadError(f"model '{card.name}' needs a grey-level {card.modality} image; this image is a colour picture")
    if image.ndim != card.dims:
        raise MedcadError(f"model '{card.name}' works on {card.dims}-D images; this image is {image.ndim}-D")
    if card.dims == 3 and min(image.spatial_shape) == 1:  # a single DICOM slice is read as a 3-D image
        raise MedcadError(f"model '{card.name}' works on volumes; this image is a single slice "
                          f"({' x '.join(str(n) for n in image.spatial_shape[::-1])} voxels, x y z)")
    modality = (image.modality or "").upper()
    if modality not in UNKNOWN_MODALITIES and card.modality and modality != card.modality.upper():
        raise MedcadError(f"model '{card.name}' is for {card.modality} images; this image is {image.modality}")
    array = image.array
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise MedcadError(f"this image holds {array.dtype} values, not real numbers")
    if array.size == 0:
        raise MedcadError("this image is empty")
    low, high = np.min(array), np.max(array)
    if np.issubdtype(array.dtype, np.floating) and not (np.isfinite(low) and np.isfinite(high)):
        raise MedcadError("this image contains NaN or infinite values")
    if modality in UNKNOWN_MODALITIES and (card.modality or "").upper() == "CT":
        check_hounsfield(float(low), float(high), f"model '{card.name}'")
    return float(low)


def model_input(image: MedicalImage, card: ModelCard, low: float | None = None) -> tuple[MedicalImage, list[str]]:
    """The image a CT model's preprocessing starts from, and a note if it is not ``image``:
    values below -1024 HU (a scanner's padding outside its field of view) raised to -1024
    (``preprocess.common.raise_to_hu_floor``).  Other models get the image as it is."""
    if (card.modality or "").upper() != "CT" or image.metadata.get(INTENSITY_KEY) is not None:
        return image, []
    raised, count = raise_to_hu_floor(image, low)
    if not count:
        return image, []
    return raised, [f"{count:,} voxels below {HU_FLOOR:g} HU (padding outside the scanner's field of view) "
                    f"were raised to {HU_FLOOR:g} before the model's preprocessing"]


def _split_pipeline(card: ModelCard):
    """The card's pipeline as (leading geometry steps, the rest): the mask is made in between."""
    from ..preprocess import Pipeline

    pipeline = Pipeline.from_dict(card.preprocessing)
    steps = list(pipeline.steps)
    cut = 0
    while cut < len(steps) and steps[cut].operation.family == "Geometry":
        cut += 1
    return pipeline, Pipeline(tuple(steps[:cut])), Pipeline(tuple(steps[cut:]))


def _check_mask_shape(mask: MedicalImage | None, image: MedicalImage) -> None:
    """A user mask must lie on the image's grid."""
    if mask is not None and mask.spatial_shape != image.spatial_shape:
        raise MedcadError(f"the mask's shape {mask.spatial_shape} does not match the image's {image.spatial_shape}")


def _card_mask(card: ModelCard) -> str | None:
    """The mask the card asks windows to be limited to (``inference.mask``), if any."""
    wanted = card.inference.get("mask")
    if wanted and wanted != "lung":
        raise MedcadError(f"model card '{card.name}': unknown inference mask '{wanted}' (known: lung)")
    return wanted or None


def _check_mask_grid(mask_array: np.ndarray | None, prepared: MedicalImage) -> None:
    if mask_array is not None and mask_array.shape != prepared.spatial_shape:
        raise MedcadError("the mask does not cover the same grid as the prepared image")


def _mask_on_grid(mask: MedicalImage, geometry_steps) -> np.ndarray:
    """A user mask (source grid) on the model's grid: the same geometry steps, nearest neighbour."""
    from ..preprocess import Pipeline, Step

    nearest = []
    for step in geometry_steps:
        params = dict(step.params)
        if "interpolation" in params:
            params["interpolation"] = "nearest"
        nearest.append(Step(step.op, params))
    binary = mask.with_array((np.asarray(mask.array) > 0).astype(np.uint8))
    return np.asarray(Pipeline(tuple(nearest)).run(binary).array) > 0


def _to_source(image: MedicalImage, source: MedicalImage, interpolation: str, dtype) -> MedicalImage:
    """``image`` resampled onto ``source``'s grid (SimpleITK; world positions are kept)."""
    import SimpleITK as sitk

    if image.spatial_shape == source.spatial_shape and image.geometry == source.geometry:
        return source.with_array(np.asarray(image.array, dtype=dtype), modality=image.modality, name=image.name,
                                 metadata={})
    moving = image.to_sitk()
    reference = sitk.Image([int(v) for v in source.size_xyz], sitk.sitkUInt8)
    source.geometry.apply_to_sitk(reference)
    method = sitk.sitkNearestNeighbor if interpolation == "nearest" else sitk.sitkLinear
    resampled = sitk.Resample(moving, reference, sitk.Transform(), method, 0.0, moving.GetPixelID())
    array = sitk.GetArrayFromImage(resampled).astype(dtype, copy=False)
    return source.with_array(array, modality=image.modality, name=image.name, metadata={})


def _versions() -> dict[str, str]:
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for package in ("napari-medcad", "torch", "monai", "numpy", "scipy", "SimpleITK"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def run_model(
    image: MedicalImage,
    model: str | ModelCard = "lung-nodule-ct",
    device: str = "auto",
    progress: ProgressFn | None = None,
    mask: MedicalImage | None = None,
    rescore: bool | None = None,
) -> ModelResult:
    """Findings, label map and probability map of ``model`` on ``image``, on the image's own grid.

    A card whose ``inference.rescorer`` names a graph model (``lung-nodule-gnn``) decodes at that
    model's candidate threshold, rescores every candidate with it and keeps those above its
    threshold (``rescore=False``: the detector alone, at its own threshold; ``None``: as the card's
    ``inference.rescore_by_default`` says, on unless it says false).  Without
    torch_geometric, or on an image not in HU, the detector's findings stand and the report says why.

    ``mask`` (same grid as ``image``) replaces the lung mask the card would compute; windows
    wholly outside it are not run.  Raises MedcadError for images the model cannot read and
    Cancelled when ``progress`` raises it.
    """
    from ..inference.decode import decode_classes
    from ..inference.engine import TileSettings, infer_probabilities
    from ..models.loading import load_network
    from ..preprocess import lung_mask

    card = _card_of(model)
    model_image, input_notes = model_input(image, card, check_input(image, card))
    _check_mask_shape(mask, image)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    # 1. preprocessing, with the mask made on the model's grid before intensity steps
    clock = time.perf_counter()
    report(progress, 0, 1000, "preparing the image")
    pipeline, geometry_steps, intensity_steps = _split_pipeline(card)
    start, stop = _STAGES["prepare"]
    gridded = geometry_steps.run(model_image, scaled(progress, start, (start + stop) / 2),
                                 device=_pipeline_device(device))
    del model_image  # a raised copy is not kept through inference
    prepared = intensity_steps.run(gridded, scaled(progress, (start + stop) / 2, stop), device=_pipeline_device(device))
    timings["preprocess_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    mask_array = None
    mask_source = "none"
    use_mask = _card_mask(card)
    if mask is not None:
        mask_array = _mask_on_grid(mask, geometry_steps)
        mask_source = "given"
    elif use_mask == "lung":
        mask_array = lung_mask(gridded, progress=scaled(progress, *_STAGES["mask"])).array > 0
        mask_source = "lung_mask"
    _check_mask_grid(mask_array, prepared)
    timings["mask_s"] = time.perf_counter() - clock

    # 2. tiled inference
    clock = time.perf_counter()
    network = load_network(card)
    settings = TileSettings.from_card(card.inference)
    activation = str(card.output.get("activation", "sigmoid"))
    out_channels = int(card.output.get("channels", 1))
    probabilities, engine_report = infer_probabilities(
        network, np.asarray(prepared.array, dtype=np.float32), settings, mask=mask_array, device=device,
        activation=activation, out_channels=out_channels, progress=scaled(progress, *_STAGES["infer"]),
    )
    timings["inference_s"] = time.perf_counter() - clock

    # 3. decoding on the model's grid, then onto the source grid
    clock = time.perf_counter()
    report(progress, int(_STAGES["decode"][0] * 1000), 1000, "decoding findings")
    class_maps = _class_maps(card, probabilities, activation)
    heat = class_maps[0][0] if len(class_maps) == 1 else np.maximum.reduce([values for values, _ in class_maps])
    probability_grid = prepared.with_array(heat, modality="OT", name=f"{image.name} probability", metadata={})
    hu_grid = gridded if gridded.metadata.get("intensity") is None else None
    # a card with decoding.within_mask keeps only findings inside the mask it searched (the lungs)
    within = mask_array if card.decoding.get("within_mask") else None
    rescorer_clock = time.perf_counter()
    rescorer, rescoring = _rescorer(card, card.rescores(rescore),
                                    hu_grid is not None and mask_array is not None and len(class_maps) == 1)
    # in a fresh process this imports torch_geometric (about 2 s): the graph stage's cost, not decoding's
    rescorer_s = time.perf_counter() - rescorer_clock if rescorer is not None else 0.0
    decoding = dict(card.decoding)
    if rescorer is not None:  # the graph model sees every candidate, not just the confident ones
        decoding.update(threshold=float(rescorer.inference.get("candidate_threshold", 0.2)),
                        max_findings=int(rescorer.inference.get("max_candidates", 100)))
    findings_grid, label_array = decode_classes(
        [(prepared.with_array(values, modality="OT", metadata={}), label) for values, label in class_maps],
        hu_grid, decoding, within=within)
    del probabilities, class_maps

    findings = Findings(geometry=image.geometry, shape_zyx=image.spatial_shape,
                        image_signature=image.content_signature())
    for finding in findings_grid:
        finding.centre_index_zyx = tuple(float(v) for v in image.world_to_index(finding.centre_world_mm))
        if finding.bbox_index_zyx is not None:
            grid_start, grid_stop = finding.bbox_index_zyx
            corners = np.array([np.asarray(grid_start, float) - 0.5, np.asarray(grid_stop, float) - 0.5])
            source_corners = image.world_to_index(prepared.index_to_world(corners))
            low = np.clip(np.floor(source_corners.min(axis=0) + 0.5), 0, None).astype(int)
            high = np.minimum(np.ceil(source_corners.max(axis=0) + 0.5), image.spatial_shape).astype(int)
            finding.bbox_index_zyx = (tuple(int(v) for v in low), tuple(int(v) for v in high))
        findings.add(finding)

    label_grid = prepared.with_array(label_array.astype(np.uint16), modality="SEG", name=f"{image.name} findings",
                                     metadata={})
    labels = _to_source(label_grid, image, "nearest", np.uint16)
    measure_on_source(findings, labels)
    probability = _to_source(probability_grid, image, "linear", np.float32)
    np.clip(probability.array, 0.0, 1.0, out=probability.array)
    timings["decode_s"] = time.perf_counter() - clock - rescorer_s

    # 4. the graph rescorer: every candidate rescored in its k-nearest-neighbour graph
    graph = None
    threshold = card.threshold
    if rescorer is not None:
        clock = time.perf_counter()
        lungs = gridded.with_array(mask_array.astype(np.uint8), modality="SEG", name="lungs", metadata={})
        findings, labels, graph = _rescore(findings, image, probability, lungs, labels, rescorer,
                                           prepared=prepared, network=network, device=engine_report.device)
        threshold = rescorer.threshold
        rescoring.update(candidates=graph.n_nodes, kept=len(findings))
        timings["rescore_s"] = time.perf_counter() - clock + rescorer_s
    timings["total_s"] = time.perf_counter() - started

    findings.provenance = {
        **findings.provenance,  # the rescorer's own entry (rescored_by), if one ran
        "model": card.name,
        "model_version": card.version,
        "threshold": threshold,
        "decoding": decoding,
        "device": engine_report.device,
    }
    summary: dict[str, Any] = {
        "model": {"name": card.name, "version": card.version, "task": card.task, "format": card.format,
                  "path": str(card.path) if card.path else None, "license": card.license},
        "image": {"name": image.name, "shape_zyx": list(image.spatial_shape),
                  "spacing_xyz": list(image.geometry.spacing_xyz), "modality": image.modality},
        "model_grid": {"shape_zyx": list(prepared.spatial_shape), "spacing_xyz": list(prepared.geometry.spacing_xyz)},
        "device": engine_report.device,
        "precision": engine_report.precision,
        "preprocessing": pipeline.to_dict(),
        "mask": mask_source,
        "decoding": decoding,
        "rescoring": rescoring,
        "tiling": {"roi_size_zyx": list(settings.roi_size_zyx), "overlap": settings.overlap,
                   "batch_size": settings.batch_size, "blend": settings.blend},
        "engine": engine_report.to_dict(),
        "findings": len(findings),
        "notes": input_notes + _notes(engine_report.notes, findings_grid, decoding),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "versions": _versions(),
    }
    report(progress, 1000, 1000, f"{len(findings)} findings")
    return ModelResult(findings=findings, labels=labels, probability=probability, report=summary, graph=graph)


def _notes(engine_notes: list[str], decoded: Findings, decoding: dict) -> list[str]:
    """What a user should hear about this run: the engine's notes (an empty mask, memory
    fallbacks) and regions the card's ``max_findings`` left out."""
    notes = list(engine_notes)
    over = int(decoded.provenance.get("over_max_findings", 0))
    if over:
        notes.append(f"{over} more regions than the card's decoding.max_findings "
                      f"({int(decoding.get('max_findings', 100))}) were left out, the least probable")
    return notes


def _class_maps(card: ModelCard, probabilities: np.ndarray, activation: str) -> list[tuple[np.ndarray, str]]:
    """Each class a finding can have: (its probability map, its name).

    ``output.finding_channel`` names one channel.  Otherwise a softmax with one channel per class
    (background first) gives every other class the voxels where it wins; sigmoid channels, one
    per class after the background, are each their own map; anything else (one channel, say) is
    the last channel, named by the last class.
    """
    channels = probabilities.shape[0]
    classes = [str(c) for c in card.classes or []]

    def name(channel: int) -> str:
        if len(classes) == channels:
            return classes[channel]
        if len(classes) == channels + 1:
            return classes[channel + 1]
        return classes[-1] if classes else "finding"

    if "finding_channel" in card.output:
        channel = int(card.output["finding_channel"])
        return [(probabilities[channel], name(channel))]
    if activation == "softmax" and channels > 2 and len(classes) == channels:
        winner = np.argmax(probabilities, axis=0)
        return [(np.where(winner == c, probabilities[c], np.float32(0)), classes[c]) for c in range(1, channels)]
    if activation != "softmax" and channels > 1 and len(classes) == channels + 1:
        return [(probabilities[c], classes[c + 1]) for c in range(channels)]
    return [(probabilities[channels - 1], name(channels - 1))]


def _rescorer(card: ModelCard, wanted: bool, possible: bool) -> tuple[ModelCard | None, dict]:
    """The card's graph rescorer, if it names one, it is wanted and can run; and why not."""
    name = card.inference.get("rescorer")
    if not name:
        return None, {"model": None}
    if not wanted:
        return None, {"model": name, "skipped": "switched off"}
    if not possible:
        return None, {"model": name, "skipped": "needs an image in HU and a lung mask"}
    try:
        from ..graph import gnn_card
        from ..graph.pyg import load

        load()

        rescorer = gnn_card(str(name))
    except ImportError:
        reason = "torch_geometric is not installed (pip install torch_geometric)"
    except MedcadError as err:
        reason = str(err)
    else:
        return rescorer, {"model": rescorer.name, "model_version": rescorer.version,
                          "threshold": rescorer.threshold}
    warnings.warn(f"graph rescoring skipped: {reason}", stacklevel=3)
    return None, {"model": name, "skipped": reason}


def _mask_box(finding) -> tuple[slice, ...]:
    """The finding's box on the label map, with a voxel of margin: where its mask can be, so a
    mask is counted or cleared there rather than over the whole volume."""
    return tuple(slice(max(0, int(low) - 1), int(high) + 1) for low, high in zip(*finding.bbox_index_zyx))


def measure_on_source(findings: Findings, labels: MedicalImage) -> None:
    """Each finding's volume and diameter from its mask in ``labels`` (the image's own grid).

    The decoder measured the masks on the model's grid; the reader sees, edits and exports the
    masks on the image's grid, and the review adds a stroke's voxels to the volume it has, so a
    first edit would start from a volume a few percent off the mask on screen.  A mask the
    resampling lost (a speck finer than the image's voxels) keeps the decoder's measures.
    """
    from ..findings import equivalent_diameter_mm

    voxel_mm3 = float(np.prod(labels.geometry.spacing_xyz))
    for finding in findings:
        if not finding.mask_value or finding.bbox_index_zyx is None:
            continue
        count = int(np.count_nonzero(labels.array[_mask_box(finding)] == finding.mask_value))
        if count:
            finding.volume_mm3 = count * voxel_mm3
            finding.diameter_mm = equivalent_diameter_mm(finding.volume_mm3, labels.ndim)


def _rescore(findings: Findings, image: MedicalImage, probability: MedicalImage, lungs: MedicalImage,
             labels: MedicalImage, rescorer: ModelCard, prepared: MedicalImage, network, device: str):
    """Rescored findings above the rescorer's threshold, their masks, and the whole graph.  A
    rescorer reading the detector's embedding takes it from this run's ``prepared`` image and
    ``network`` (a detector without the layer it names fails with a message)."""
    from ..graph import rescore_with_graph

    rescored, graph = rescore_with_graph(findings, image, probability, lungs, labels, model=rescorer,
                                         prepared=prepared, detector_network=network, device=device)
    dropped = [f for f in rescored if f.probability < rescorer.threshold]
    for finding in dropped:
        rescored.remove(finding.id)
    for finding in dropped:  # within each mask's box (a voxel of margin): not a pass over the whole volume
        if not finding.mask_value:
            continue
        if finding.bbox_index_zyx is None:
            labels.array[labels.array == finding.mask_value] = 0
            continue
        part = labels.array[_mask_box(finding)]
        part[part == finding.mask_value] = 0
    return rescored, labels, graph


def warm_up(graph: bool = True, detector_ready: threading.Event | None = None) -> None:
    """Import what ``run_model`` needs (torch, MONAI, SciPy, SimpleITK, the network builders; with
    ``graph`` the rescorer's torch_geometric too).

    A GUI calls this in a background thread when its inference panel opens: imported later,
    inside the first run's worker, these modules hold the GIL for hundreds of milliseconds and
    freeze the event loop mid-run.  ``detector_ready`` is set once everything but the graph stack
    is imported: ``predict`` starts its first case then and the graph stack's imports overlap
    with preprocessing and the CNN (the run imports nothing they import; ``graph.pyg.load``
    waits for them if they are not done when the rescorer starts).  Safe from any thread; cheap
    once done.
    """
    try:
        import SimpleITK  # noqa: F401
        import scipy.ndimage  # noqa: F401
        import torch  # noqa: F401
        from monai.inferers import sliding_window_inference  # noqa: F401
        from monai.networks import nets  # noqa: F401

        from ..models import loading, networks  # noqa: F401
        from ..preprocess import lung_mask  # noqa: F401
        from . import decode, engine  # noqa: F401
    finally:
        if detector_ready is not None:
            detector_ready.set()
    if not graph:
        return
    try:  # the graph rescorer's stack (optional: without it rescoring is skipped)
        from ..graph import rescore  # noqa: F401
        from ..graph.pyg import load
        from ..models.networks import gnn  # noqa: F401

        load()
        # torch_geometric's softmax asks torch.onnx whether an export is running: its first call
        # imports torch.onnx (0.1-0.2 s), which would otherwise fall inside the first rescoring
        import torch.onnx  # noqa: F401
    except ImportError:
        pass


def _pipeline_device(device: str) -> str:
    """Preprocessing runs where inference runs; "auto" lets each step choose."""
    return device if device in ("auto", "cpu") or device.startswith(("cuda", "mps")) else "auto"
