"""Backbone registry: each name is registered once, next to the factory that builds it, with its facts
(:class:`~mobilevision.backbones.cfg.BackboneCfg`)."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, TypeVar

from torch import nn

from .cfg import BackboneCfg

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
_CFGS: dict[str, BackboneCfg] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


def register_backbone(fn: F | None = None, *, name: str | None = None, cfg: BackboneCfg | None = None):
    """Decorator registering a backbone factory under its function name (or ``name``), with its facts ``cfg``
    (default: no ImageNet weights, the standard input pipeline)."""

    def wrap(factory: F) -> F:
        key = name or factory.__name__
        if key in _BACKBONES:
            raise ValueError(f"backbone {key!r} is already registered (by {_BACKBONES[key].__module__})")
        _BACKBONES[key] = factory
        _CFGS[key] = cfg or BackboneCfg()
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


def get_backbone_cfg(name: str) -> BackboneCfg:
    """The facts of the registered backbone ``name``: input size, ImageNet weights and their input pipeline."""
    get_backbone_factory(name)  # the error for an unknown name
    return _CFGS[name]


def backbone_knobs(name: str) -> tuple[str, list[str]]:
    """(family class name, sorted keyword arguments) of the registered backbone ``name``: the factory's own
    arguments, plus its family's optional constructor arguments when the factory passes ``**kwargs`` on to it
    (a required one, such as MobileOne's stage ``widths``, is the factory's to fill)."""
    factory = get_backbone_factory(name)
    params = inspect.signature(factory).parameters
    knobs = {p for p, v in params.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)}
    family = typing.get_type_hints(factory).get("return")
    if isinstance(family, type) and any(v.kind == v.VAR_KEYWORD for v in params.values()):
        init = inspect.signature(family.__init__).parameters
        knobs |= {p for p, v in init.items() if p != "self" and v.default is not v.empty
                  and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)}
    return (family.__name__ if isinstance(family, type) else name), sorted(knobs)


def check_backbone_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the knob and the family when ``kwargs`` has an argument that the backbone
    ``name`` does not take (``width`` for MobileOne, whose variants have fixed stage widths, say)."""
    family, knobs = backbone_knobs(name)
    unknown = sorted(set(kwargs) - set(knobs))
    if unknown:
        raise ValueError(f"backbone {name!r} ({family}) has no {', '.join(map(repr, unknown))} "
                         f"{'knob' if len(unknown) == 1 else 'knobs'}; its knobs: {', '.join(knobs)}")


def create_backbone(name: str, output_stride: int = 32, **kwargs) -> nn.Module:
    """Build a registered backbone; keyword arguments go to its factory (width, out_indices, ...), and one that
    the family does not have is a ``ValueError`` naming it (:func:`check_backbone_kwargs`).
    ``output_stride`` 16 or 8 dilates the last stages instead of striding (DeepLabv3; see
    :meth:`~mobilevision.backbones.Backbone.set_output_stride`)."""
    check_backbone_kwargs(name, kwargs)
    backbone = get_backbone_factory(name)(**kwargs)
    return backbone.set_output_stride(output_stride) if output_stride != 32 else backbone
