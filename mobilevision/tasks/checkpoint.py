"""Load a training checkpoint of a task safely (``weights_only=True``), with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True``; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or objects that weights_only refuses to unpickle
        raise ValueError(f"cannot load checkpoint {path} with weights_only=True: {e}") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a mobilevision training checkpoint (expected 'state_dict' and "
                         f"'hyper_parameters', found {keys})")
    return ckpt


def load_task(path: str | os.PathLike, task_cls: type[pl.LightningModule]) -> tuple[pl.LightningModule, dict]:
    """Rebuild ``task_cls`` from a checkpoint's hyper-parameters and load its weights (eval mode).

    Returns the task and the checkpoint dict (its ``datamodule_hyper_parameters`` say what data it
    was trained on). Backbone ImageNet weights are not reloaded: the checkpoint holds every weight.
    """
    ckpt = load_checkpoint(path)
    hparams = dict(ckpt["hyper_parameters"])
    class_path = hparams.pop("_class_path", None)
    hparams.pop("_instantiator", None)
    if class_path and class_path.rsplit(".", 1)[-1] != task_cls.__name__:
        raise ValueError(f"{path} is a checkpoint of {class_path}, not of {task_cls.__name__}")
    if "backbone_weights" in hparams:
        hparams["backbone_weights"] = None
    try:
        task = task_cls(**hparams)
    except TypeError as e:
        raise ValueError(f"{path} does not hold {task_cls.__name__} hyper-parameters: {e}") from e
    task.on_load_checkpoint(ckpt)  # as Lightning's load_from_checkpoint does, before the weights
    try:
        result = task.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path} does not match {task_cls.__name__}({hparams.get('backbone', '')}): {e}") from e
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path} does not match {task_cls.__name__}({hparams.get('backbone', '')}): "
                         f"missing keys {result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]}")
    return task.eval(), ckpt
