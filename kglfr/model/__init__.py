"""Re-ID networks: the AGW baseline with a two-stream stem, on plain-torch ResNets."""

from kglfr.model.agw import AGWNet
from kglfr.model.layers import GeM, NonLocal
from kglfr.model.registry import build_model, model_names
from kglfr.model.resnet import Arch, resnet18, resnet34, resnet50
from kglfr.model.weights import WeightsInfo, imagenet_file, load_imagenet, load_pretrained

__all__ = [
    "AGWNet",
    "Arch",
    "GeM",
    "NonLocal",
    "WeightsInfo",
    "build_model",
    "imagenet_file",
    "load_imagenet",
    "load_pretrained",
    "model_names",
    "resnet18",
    "resnet34",
    "resnet50",
]
