"""Backbone registry: each name is registered once, next to the factory that builds it."""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


def register_backbone(fn: F | None = None, *, name: str | None = None):
    """Decorator registering a backbone factory under its function name (or ``name``)."""

    def wrap(factory: F) -> F:
        key = name or factory.__name__
        if key in _BACKBONES:
            raise ValueError(f"backbone {key!r} is already registered (by {_BACKBONES[key].__module__})")
        _BACKBONES[key] = factory
        return factory

    return wrap(fn) if fn is not None else wrap


def list_backbones() -> list[str]:
    """Names of every registered backbone, sorted."""
    return sorted(_BACKBONES)


def get_backbone_factory(name: str) -> Callable[..., nn.Module]:
    try:
        return _BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known backbones: {', '.join(list_backbones())}") from None


def create_backbone(name: str, output_stride: int = 32, **kwargs) -> nn.Module:
    """Build a registered backbone; keyword arguments go to its factory (width, out_indices, ...).
    ``output_stride`` 16 or 8 dilates the last stages instead of striding (DeepLabv3; see
    :meth:`~mobilevision.backbones.Backbone.set_output_stride`)."""
    backbone = get_backbone_factory(name)(**kwargs)
    return backbone.set_output_stride(output_stride) if output_stride != 32 else backbone
