"""arpro plugin for images: one anomaly score per pixel, a UNet DDPM repairer, image datasets."""

import warnings

import arpro

# anomalib and timm announce their own internal deprecations on import; a user can act on none of them.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"(anomalib|timm)\.")

from arpro_vision.datasets import IMAGE_DATASETS
from arpro_vision.efficient_ad import EfficientAdDetector
from arpro_vision.fastflow import FastFlowDetector
from arpro_vision.repairer import ImageDDPM
from arpro_vision.textures import Textures


@arpro.hookimpl
def arpro_register_detectors(register):
    register(FastFlowDetector)
    register(EfficientAdDetector)


@arpro.hookimpl
def arpro_register_repairers(register):
    register(ImageDDPM)


@arpro.hookimpl
def arpro_register_datasets(register):
    register(Textures)
    for dataset in IMAGE_DATASETS:
        register(dataset)
