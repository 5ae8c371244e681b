"""Datasets: TorchGeo rasters of the three Mars cameras, nodata-aware samplers, and the labelled
real data (HiRISE landmarks, CTX and THEMIS craters) with deterministic train/val splits.

Importing this package reads no data and imports nothing heavy: each name is imported from its
module on first use (PEP 562). Only the raster datasets and samplers need TorchGeo (which pulls
in matplotlib, seconds of start-up); the labelled datasets need torch and PIL only, so
``momo-geo evaluate`` and ``finetune`` never load TorchGeo, and mapping loads none of this.
"""

from __future__ import annotations

from momo_geo._lazy import lazy_names

_HOMES = {
    "ChipDataset": "chips",
    "random_chips": "chips",
    "stack_chips": "chips",
    "unlabelled_chips": "chips",
    "CTX_VAL_TILES": "craters",
    "CTXCraters": "craters",
    "THEMISCraters": "craters",
    "boxes_to_mask": "craters",
    "circles_to_mask": "craters",
    "ctx_split": "craters",
    "read_voc_boxes": "craters",
    "read_yolo_boxes": "craters",
    "themis_split": "craters",
    "LANDMARK_CLASSES": "landmarks",
    "HiRISELandmarks": "landmarks",
    "products_overlap": "landmarks",
    "split_products": "landmarks",
    "CTX": "rasters",
    "RASTER_DATASETS": "rasters",
    "THEMIS": "rasters",
    "HiRISE": "rasters",
    "MarsRasterDataset": "rasters",
    "ValidGeoSampler": "samplers",
    "valid_fraction": "samplers",
    "valid_mask": "samplers",
}

__all__ = sorted(_HOMES)

__getattr__, __dir__ = lazy_names(__name__, _HOMES)
