"""Re-ID networks: the AGW baseline with a two-stream stem, on plain-torch ResNets."""

from kglfr.model.agw import AGWNet, build_model
from kglfr.model.layers import GeM, NonLocal
from kglfr.model.resnet import load_imagenet, resnet18, resnet34, resnet50

__all__ = ["AGWNet", "GeM", "NonLocal", "build_model", "load_imagenet", "resnet18", "resnet34", "resnet50"]
