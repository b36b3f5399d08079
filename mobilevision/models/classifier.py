"""ImageNet-style classifier: any registered backbone + global average pool + dropout + linear."""

from __future__ import annotations

import torch
from torch import nn

from ..backbones import Backbone, create_backbone
from ..backbones._features import init_weights
from .pretrained import load_pretrained


class ImageClassifier(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int = 1000, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.num_features, num_classes)
        init_weights(self.fc)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding (batch, backbone.num_features)."""
        return self.pool(self.backbone.forward_head_features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


def create_classifier(name: str, num_classes: int = 1000, weights: str | None = None,
                      dropout: float | None = None, **backbone_kwargs) -> ImageClassifier:
    """Backbone ``name`` + pooling + dropout + linear over ``num_classes``.

    ``dropout`` defaults to the backbone's published rate (EfficientNet) or 0.2 (MobileNets).
    ``weights``: path to a torchvision or timm state dict of the same architecture (see
    :func:`mobilevision.models.load_pretrained`), or ``"imagenet"`` to fetch one through those
    libraries' own download machinery.
    """
    backbone = create_backbone(name, **backbone_kwargs)
    if dropout is None:
        dropout = getattr(backbone, "dropout", 0.2)
    model = ImageClassifier(backbone, num_classes, dropout)
    if weights is not None:
        load_pretrained(model, name, weights)
    return model
