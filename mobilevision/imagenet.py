"""The standard ImageNet input pipeline's constants: what a network sees when nothing else is said (the data
modules' defaults, a backbone without weights of its own, an exported file without a recorded normalization)."""

#: channel mean and std of ImageNet-1k RGB in [0, 1]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: evaluation resize: the shorter side to ``size / crop_pct``, then a center crop of ``size``
DEFAULT_CROP_PCT = 0.875
#: how images are enlarged (every resize shrinks by area averaging)
DEFAULT_INTERPOLATION = "bilinear"
INTERPOLATIONS = ("bilinear", "bicubic")
