"""SSD(Lite) detection pieces: default boxes, box coding, anchor matching, loss, post-processing."""

from .anchors import DefaultBoxGenerator
from .box_coder import BoxCoder
from .loss import SSDLoss, ssd_loss
from .matcher import match_anchors
from .postprocess import postprocess, select_detections

__all__ = ["BoxCoder", "DefaultBoxGenerator", "SSDLoss", "match_anchors", "postprocess", "select_detections", "ssd_loss"]
