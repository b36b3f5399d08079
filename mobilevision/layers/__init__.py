"""Building blocks: conv-BN-act, depthwise separable, inverted residual, squeeze-excite, MobileOne."""

from .conv import ConvBNAct, DepthwiseSeparableConv, StridedPointwiseConv2d, make_divisible
from .inverted_residual import InvertedResidual
from .mobileone import MobileOneBlock, fold_conv_bn, reparameterize_model
from .squeeze_excite import SqueezeExcite

__all__ = ["ConvBNAct", "DepthwiseSeparableConv", "InvertedResidual", "MobileOneBlock", "SqueezeExcite",
           "StridedPointwiseConv2d", "fold_conv_bn", "make_divisible", "reparameterize_model"]
