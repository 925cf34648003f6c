"""arpro plugin for images: one anomaly score per pixel, a UNet DDPM repairer, image datasets.

Each class is registered by its import path, so listing plugins imports neither torch nor anomalib.
"""

import warnings

import arpro
from arpro_vision.weights import INSTALL_HINT, pretrained_available

# anomalib and timm announce their own internal deprecations on import; a user can act on none of them.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"(anomalib|timm)\.")


@arpro.hookimpl
def arpro_register_detectors(register):
    register("arpro_vision.fastflow:FastFlowDetector", name="fastflow", domain="image",
             description="FastFlow (anomalib's FastflowModel): feature negative log-likelihood, one score per pixel.")
    register("arpro_vision.efficient_ad:EfficientAdDetector", name="efficientad", domain="image",
             description="EfficientAD (anomalib's EfficientAdModel): the per-pixel anomaly map, score = its sum.")
    pretrained = pretrained_available()  # the weights package or a hub-cached file: no torch imported to know
    weights = "pretrained weights found" if pretrained else f"no pretrained weights found: {INSTALL_HINT}"
    register("arpro_vision.patchcore:PatchCoreDetector", name="patchcore", domain="image", default=pretrained,
             baseline=pretrained,
             description=f"PatchCore (anomalib's PatchcoreModel) on ImageNet EfficientNet-Lite0: mean of the top-k patch "
                         f"distances ({weights}).")
    register("arpro_vision.patch_nn:PatchNNDetector", name="patchnn", domain="image", baseline=not pretrained,
             description="Nearest-neighbour distances of illumination-flattened pixel patches; no pretrained weights.")


@arpro.hookimpl
def arpro_register_repairers(register):
    register("arpro_vision.repairer:ImageDDPM", name="ddpm", domain="image", default=True,
             description="DDPM with a diffusers UNet2DModel noise predictor for [3, S, S] images in [-1, 1].")
    register("arpro_vision.nearest:NearestPatches", name="nearest-patches", domain="image", baseline=True,
             description="In-fills from the nearest normal patches of the training pictures; no training "
                         "(fit indexes them in seconds).")


@arpro.hookimpl
def arpro_register_datasets(register):
    register("arpro_vision.textures:Textures", name="textures", domain="image", default=True,
             description="scikit-image texture photographs (brick, grass, gravel) with seeded synthetic defects (embedded).")
    register("arpro_vision.surface:Surface", name="surface", domain="image",
             description="Generated grayscale surface-inspection pictures: cracks, pits, frayed edges, dents; varied sizes (no files).")
    for name, cls, description in (
        ("mvtec", "MVTecAD", "MVTec AD, read from --data-root in its published layout (category/train/good, test/*, ground_truth/*)."),
        ("visa", "VisA", "VisA, read from --data-root: anomalib's prepared split (visa_pytorch/CATEGORY) or the raw release."),
        ("mpdd", "MPDD", "MPDD (metal parts), read from --data-root in its published MVTec-style layout."),
        ("btech", "BTech", "BTech AD, read from --data-root in its published layout (01/train/ok, test/{ok,ko}, ground_truth/ko)."),
        ("kolektor", "Kolektor", "KolektorSDD, read from --data-root (kosNN/PartN.jpg + PartN_label.bmp); 80 % of good parts train."),
        ("folder", "Folder", "Any folder of images: --data-root DIR with normal/ (train), abnormal/, masks/ and optional normal_test/."),
    ):
        register(f"arpro_vision.datasets:{cls}", name=name, domain="image", description=description)
