"""Export of reviewed cases as a retraining dataset (nnU-Net v2, LUNA16 CSVs, COCO, provenance).

Qt-free: the Export button and `napari-medcad export` both call :func:`export_case`.
"""

from .case import PENDING_POLICIES, ExportResult, export_case
from .dataset import recover

__all__ = ["export_case", "ExportResult", "PENDING_POLICIES", "recover"]
