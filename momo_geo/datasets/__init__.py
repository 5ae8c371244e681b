"""Datasets: TorchGeo rasters of the three Mars cameras, nodata-aware samplers, and the labelled
real data (HiRISE landmarks, CTX and THEMIS craters) with deterministic train/val splits.

Importing this package reads no data; every dataset decodes its images lazily.
"""

from momo_geo.datasets.chips import ChipDataset, random_chips, stack_chips, unlabelled_chips
from momo_geo.datasets.craters import (
    CTX_VAL_TILES,
    CTXCraters,
    THEMISCraters,
    boxes_to_mask,
    circles_to_mask,
    ctx_split,
    read_voc_boxes,
    read_yolo_boxes,
    themis_split,
)
from momo_geo.datasets.landmarks import (
    LANDMARK_CLASSES,
    HiRISELandmarks,
    products_overlap,
    split_products,
)
from momo_geo.datasets.rasters import CTX, RASTER_DATASETS, THEMIS, HiRISE, MarsRasterDataset
from momo_geo.datasets.samplers import ValidGeoSampler, valid_fraction, valid_mask

__all__ = [
    "CTX", "CTX_VAL_TILES", "LANDMARK_CLASSES", "RASTER_DATASETS", "THEMIS", "CTXCraters",
    "ChipDataset", "HiRISE", "HiRISELandmarks", "MarsRasterDataset", "THEMISCraters",
    "ValidGeoSampler", "boxes_to_mask", "circles_to_mask", "ctx_split", "products_overlap",
    "random_chips", "read_voc_boxes", "read_yolo_boxes", "split_products", "stack_chips",
    "themis_split", "unlabelled_chips", "valid_fraction", "valid_mask",
]
