"""Load torchvision / timm / mobilevision weights into an :class:`~mobilevision.models.ImageClassifier`.

Keys are mapped by structure, not by per-model tables. Both sides are cut into blocks:

* ours: ``backbone.blocks.{k}`` (a flat list);
* the checkpoint: ``features.{i}`` / ``features.{stage}.{i}`` (torchvision), ``blocks.{stage}.{i}`` /
  ``stages.{stage}.{i}`` (timm), ``blocks.{k}`` (mobilevision), and each run of top-level modules outside
  such a container (timm's ``conv_stem`` + ``bn1`` stem, ``conv_head`` + ``bn2`` head, MobileOne ``stem``).

Blocks pair up 1:1 in order and, inside a block, tensors pair up in definition order; every pair must have
the same kind (``weight``, ``bias``, ``running_mean``, ...) and shape. BatchNorm ``num_batches_tracked``
counters follow their layer's ``running_mean`` (kept as they are when a checkpoint has none). The final
linear layer (``fc`` / ``classifier`` / ``head.fc``) is loaded when its shape fits and otherwise left
freshly initialised, with a warning (fine-tuning on another label set).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
from itertools import groupby
from typing import TYPE_CHECKING, Callable, Mapping

import torch

from ..backbones import get_backbone_cfg, list_backbones
from ..errors import UserError

if TYPE_CHECKING:
    from .classifier import ImageClassifier

__all__ = ["imagenet_weights", "load_pretrained"]

log = logging.getLogger(__name__)

# source -> (regex on the key of its first stem tensor (group 1: any wrapper prefix such as "model."),
#            prefix of its backbone keys, prefixes of its classifier keys)
_SOURCES = {
    "mobilevision": (r"^(|.*?\.)backbone\.blocks\.0\.", "backbone.", ("fc.",)),
    "torchvision": (r"^(|.*?\.)features\.0\.0\.weight$", "", ("classifier.",)),
    "timm": (r"^(|.*?\.)(?:conv_stem\.weight|stem\.conv_kxk\.0\.conv\.weight)$", "", ("classifier.", "head.")),
}

def imagenet_weights(backbone: str, width: float | None = None) -> str | None:
    """What ``weights="imagenet"`` loads for ``backbone`` at ``width`` (``"torchvision MobileNet_V2_Weights..."``,
    ``"timm mobileone_s0.apple_in1k"``: the backbone's :class:`~mobilevision.backbones.BackboneCfg`), or None:
    ImageNet weights exist only for the registered variants at their own width (width None or 1.0)."""
    if backbone not in list_backbones() or (width is not None and float(width) != 1.0):
        return None
    return get_backbone_cfg(backbone).weights


# BatchNorm eps of sources whose layers differ from ours (torchvision builds EfficientNet-B5..B7 with 1e-3,
# timm and mobilevision with 1e-5): folded into running_var, so eval outputs match exactly.
_SOURCE_BN_EPS = {("torchvision", f"efficientnet_b{i}"): 1e-3 for i in (5, 6, 7)}

_WRAPPERS = ("state_dict", "model", "model_state_dict")
_COUNTER = "num_batches_tracked"


def load_pretrained(model: ImageClassifier, name: str, weights: str | os.PathLike) -> ImageClassifier:
    """Load ``weights`` into ``model`` (backbone ``name``) in place and return it.

    ``weights`` is a file holding a state dict of the same architecture saved from torchvision
    (``mobilenet_v2``, ``efficientnet_b0``..``b7``), timm (``mobilenetv1_100``, ``mobilenetv2_100``,
    ``efficientnet_b0``..``b7``, unfused ``mobileone_s0``..``s4``) or mobilevision itself, possibly wrapped
    (Lightning checkpoint ``{"state_dict": ...}``, ``{"model": ...}``, ``module.``/``model.`` key prefixes);
    or ``"imagenet"`` to download ImageNet weights through torchvision / timm.

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` for a file that is not a state dict
    or does not fit the architecture (naming the missing, unexpected and mis-shaped keys).
    """
    if isinstance(weights, str) and weights.lower() == "imagenet":
        state, origin = _fetch_imagenet(name), f"ImageNet weights for {name!r}"
    else:
        state, origin = _read_state_dict(weights), os.fspath(weights)
    return _load_state_dict(model, name, state, origin)


# -- reading ------------------------------------------------------------------------------------------------
def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found (or not a file): {path!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise UserError(
            f"{path}: cannot be read as a state dict with torch.load(weights_only=True) ({err}). Pass a file "
            "written by torch.save(model.state_dict(), path); for a checkpoint that also pickles other "
            "objects, save only its state dict.") from err
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not (isinstance(obj, Mapping) and _is_state_dict(obj)):
        raise UserError(f"{path}: not a state dict (a mapping of names to tensors), got {type(obj).__name__}"
                         + (f" with keys {list(obj)[:8]}" if isinstance(obj, Mapping) else ""))
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _is_state_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(k, str) for k in obj) and \
        any(isinstance(v, torch.Tensor) for v in obj.values())


def _fetch_imagenet(name: str) -> dict[str, torch.Tensor]:
    cfg = get_backbone_cfg(name) if name in list_backbones() else None
    if cfg is None or cfg.weights_source is None:
        known = [b for b in list_backbones() if get_backbone_cfg(b).weights]
        raise UserError(f"no ImageNet weights known for {name!r}; known: {', '.join(known)}")
    library, ref = cfg.weights_source
    try:
        if library == "torchvision":
            from torchvision.models import get_weight

            return get_weight(ref).get_state_dict(progress=True, map_location="cpu", weights_only=True)
        import timm

        return timm.create_model(ref, pretrained=True).state_dict()
    except Exception as err:  # no network, no cache, missing timm: say how to get there offline
        if library == "torchvision":
            how = (f"import torch, torchvision; m = torchvision.models.{ref.split('_Weights')[0].lower()}"
                   f"(weights='{ref.split('.')[1]}')")
        else:
            how = f"import timm, torch; m = timm.create_model('{ref}', pretrained=True)"
        raise RuntimeError(
            f"could not download ImageNet weights for {name!r} via {library} ({type(err).__name__}: {err}). "
            f"On a machine with internet run `{how}; torch.save(m.state_dict(), '{name}.pth')`, copy the file "
            f"here and pass weights='{name}.pth'.") from err


# -- mapping ------------------------------------------------------------------------------------------------
def _block_id(key: str) -> str | None:
    """``features.3.1.block.0.0.weight`` -> ``features.3.1``; ``features.0.1.bias`` -> ``features.0``;
    keys outside a numbered container (``conv_stem.weight``, ``stem.conv_kxk.0.conv.weight``) -> None."""
    parts = key.split(".")
    if len(parts) < 3 or not parts[1].isdigit():
        return None
    end = 2
    while end < len(parts) - 1 and parts[end].isdigit():
        end += 1
    if end == len(parts) - 1:  # only the tensor name left: the last index is a layer inside the block
        end -= 1
    return ".".join(parts[:end])


def _blocks(keys: list[str], block_id: Callable[[str], str | None]) -> list[list[str]]:
    """Consecutive runs of keys with the same block id (runs of ``None`` are blocks too)."""
    return [list(run) for _, run in groupby(keys, key=block_id)]


def _detect(state: Mapping[str, torch.Tensor], origin: str) -> tuple[str, str]:
    for key in state:
        for source, (anchor, *_) in _SOURCES.items():
            if m := re.match(anchor, key):
                return source, m.group(1)
    raise UserError(f"{origin}: unrecognised state dict layout (expected torchvision 'features.*', timm "
                     f"'conv_stem.*'/'stem.conv_kxk.*' or mobilevision 'backbone.blocks.*' keys; MobileOne must be "
                     f"unfused, without 'reparam_conv'), first keys: {list(state)[:5]}")


def _load_state_dict(model: ImageClassifier, name: str, state: Mapping[str, torch.Tensor],
                     origin: str) -> ImageClassifier:
    source, wrapper = _detect(state, origin)
    _, body_prefix, head_prefixes = _SOURCES[source]
    src = {k[len(wrapper):]: v for k, v in state.items() if k.startswith(wrapper)}
    if len(src) < len(state):
        log.info("%s: using the %d keys under %r, ignoring %d others", origin, len(src), wrapper,
                 len(state) - len(src))
    head = {k: v for k, v in src.items() if k.startswith(head_prefixes)}
    body = [k for k in src if k not in head and not k.endswith(_COUNTER)]

    ours = model.state_dict()
    our_body = [k for k in ours if k.startswith("backbone.") and not k.endswith(_COUNTER)]
    our_blocks = _blocks(our_body, lambda k: k.split(".")[2])
    src_blocks = _blocks(body, lambda k: _block_id(k[len(body_prefix):]) if k.startswith(body_prefix) else k)

    mapped: dict[str, str] = {}  # our key -> checkpoint key
    missing, unexpected, mismatched = [], [], []
    for i in range(max(len(our_blocks), len(src_blocks))):
        mine = our_blocks[i] if i < len(our_blocks) else []
        theirs = src_blocks[i] if i < len(src_blocks) else []
        kinds_fit = len(mine) == len(theirs) and all(a.rsplit(".", 1)[-1] == b.rsplit(".", 1)[-1]
                                                     for a, b in zip(mine, theirs))
        if not kinds_fit:
            missing += mine
            unexpected += theirs
            continue
        for a, b in zip(mine, theirs):
            if ours[a].shape != src[b].shape:
                mismatched.append(f"{b} {tuple(src[b].shape)} -> {a} {tuple(ours[a].shape)}")
            mapped[a] = b
    unexpected += [k for k in src if k not in head and k.endswith(_COUNTER)
                   and k.replace(_COUNTER, "running_mean") not in mapped.values()]
    if missing or unexpected or mismatched:
        raise UserError(_mismatch_message(origin, source, name, len(src_blocks), len(our_blocks),
                                           missing, unexpected, mismatched))

    new = dict(ours)
    for a, b in mapped.items():
        new[a] = src[b]
        if a.endswith("running_mean") and b.replace("running_mean", _COUNTER) in src:
            new[a.replace("running_mean", _COUNTER)] = src[b.replace("running_mean", _COUNTER)]
        if a.endswith("running_var") and (source, name) in _SOURCE_BN_EPS:
            # BN(x) uses sqrt(var + eps): var + (their eps - our eps) under our eps gives their output
            new[a] = src[b] + (_SOURCE_BN_EPS[source, name] - model.get_submodule(a.rsplit(".", 1)[0]).eps)

    head_w = [k for k in head if k.endswith("weight")]
    head_b = [k for k in head if k.endswith("bias")]
    if len(head) == 2 and len(head_w) == len(head_b) == 1 and src[head_w[0]].shape == ours["fc.weight"].shape \
            and src[head_b[0]].shape == ours["fc.bias"].shape:
        new["fc.weight"], new["fc.bias"] = src[head_w[0]], src[head_b[0]]
    elif head_w and src[head_w[0]].ndim == 2 and src[head_w[0]].shape[1] == ours["fc.weight"].shape[1]:
        warnings.warn(f"{origin}: classifier has {src[head_w[0]].shape[0]} classes, the model "
                      f"{model.fc.out_features}: loaded the backbone only, fc is re-initialised (left at its "
                      f"random init)", stacklevel=3)
    elif not head:
        warnings.warn(f"{origin}: no classifier in the checkpoint: loaded the backbone only, fc is "
                      f"randomly initialised", stacklevel=3)
    else:
        raise UserError(f"{origin}: classifier keys {[f'{k} {tuple(src[k].shape)}' for k in head]} do not fit "
                         f"fc.weight {tuple(ours['fc.weight'].shape)} of {name!r}")
    model.load_state_dict(new)
    log.info("loaded %s weights from %s into %s", source, origin, name)
    return model


def _mismatch_message(origin: str, source: str, name: str, n_src: int, n_ours: int, missing: list[str],
                      unexpected: list[str], mismatched: list[str]) -> str:
    def first(items: list[str], n: int = 5) -> str:
        return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")

    lines = [f"{origin}: {source} state dict does not fit backbone {name!r} "
             f"(checkpoint has {n_src} blocks, the model {n_ours})."]
    if missing:
        lines.append(f"  missing keys (model keys with no checkpoint match): {first(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys (checkpoint keys with no model match): {first(unexpected)}")
    if mismatched:
        lines.append(f"  shape mismatches: {first(mismatched)}")
    lines.append("  Pass weights saved from the same architecture (and width), e.g. torchvision "
                 "mobilenet_v2 / efficientnet_bN or timm mobilenetv1_100 / mobilenetv2_100 / efficientnet_bN / "
                 "mobileone_sN (unfused).")
    return "\n".join(lines)
