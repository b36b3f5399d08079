"""Quantization-aware fine-tuning for int8 ExecuTorch files (PT2E QAT with the XNNPACK quantizer of the post-training
path), taught by the float network itself.

The float network (normalization inside, MobileOne folded) is captured with ``torch.export`` at a dynamic batch, its
batch norms are folded into the convolutions with their running statistics, and ``prepare_qat_pt2e`` puts fake
quantization on the weights (per-channel symmetric int8) and activations (int8) exactly where the post-training
quantizer puts observers, with the post-training observers (histogram for activations, min-max for weights). A
calibration pass with fake quantization off gives the post-training ranges; the activation ranges are then frozen
(the weights' follow the weights) and the fake-quantized copy learns for ``steps`` optimizer steps to give the float
network's outputs on the user's images (the calibration sample, flipped at random): the KL divergence to the float
class probabilities (classification and geolocalization logits, every pixel of segmentation, every default box of
detection) plus, for detection, a smooth-L1 to the float box offsets. The teacher's outputs are the labels, so QAT
needs no annotations and works the same for every task. ``convert_pt2e`` then gives the int8 graph that the
exporter lowers to XNNPACK, as after calibration.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserError

__all__ = ["distillation_loss", "qat_pt2e"]


def distillation_loss(student, teacher) -> torch.Tensor:
    """How far the fake-quantized network's outputs are from the float network's: for class logits ([B, C] or
    [B, C, H, W]: the classes on dim 1; detection's ``cls_logits`` [B, A, C + 1]: on the last dim) the KL divergence
    of the class probabilities (0 when they agree), averaged over images, pixels and boxes; detection's box offsets
    add their smooth-L1 distance."""
    if isinstance(student, torch.Tensor):
        return _kl(student, teacher, dim=1)
    cls_s, box_s = student
    cls_t, box_t = teacher
    return _kl(cls_s, cls_t, dim=-1) + F.smooth_l1_loss(box_s, box_t)


def _kl(student: torch.Tensor, teacher: torch.Tensor, dim: int) -> torch.Tensor:
    log_p = torch.log_softmax(teacher.float(), dim)
    kl = (log_p.exp() * (log_p - torch.log_softmax(student.float(), dim))).sum(dim)
    return kl.mean()


def _pool(batches: Iterable[np.ndarray | torch.Tensor]) -> torch.Tensor:
    images = [torch.as_tensor(np.asarray(b, np.float32)) for b in batches]
    if not images:
        raise UserError("quantization-aware training got no image")
    shapes = {tuple(x.shape[1:]) for x in images}
    if len(shapes) > 1:
        raise UserError(f"quantization-aware training needs images of one size, got {sorted(shapes)}")
    return torch.cat(images)


def _freeze_activation_ranges(prepared: torch.fx.GraphModule) -> None:
    """Stop the activation observers (per-tensor); the weights' per-channel ranges keep following the weights."""
    from torchao.quantization.pt2e import FakeQuantizeBase

    for module in prepared.modules():
        if isinstance(module, FakeQuantizeBase) and module.qscheme in (torch.per_tensor_affine,
                                                                       torch.per_tensor_symmetric):
            module.disable_observer()


def qat_pt2e(network: nn.Module, example: torch.Tensor, batches: Iterable[np.ndarray | torch.Tensor], steps: int,
             lr: float = 1e-5, batch_size: int = 16, keep_float: bool = True, seed: int = 0,
             progress: bool = True) -> torch.fx.GraphModule:
    """``network`` (eval mode, float32 [B, 3, H, W] in [0, 1] -> logits or ``(cls_logits, bbox_regression)``)
    quantized as post-training quantization does (the calibration pass over ``batches`` gives the same ranges), then
    fine-tuned with fake quantization for ``steps`` AdamW steps of ``batch_size`` of those images (flipped at random)
    towards the float network's outputs (:func:`distillation_loss`), the activation ranges fixed; converted: the
    int8 graph that :func:`~mobilevision.deploy.executorch.export_executorch` lowers (at ``example``'s shape)."""
    from torchao.quantization.pt2e import disable_fake_quant, enable_fake_quant
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    from .executorch import xnnpack_quantizer

    if steps < 1:
        raise UserError(f"quantization-aware training needs at least one step, got {steps}")
    images = _pool(batches)
    if tuple(images.shape[1:]) != tuple(example.shape[1:]):
        raise UserError(f"quantization-aware training images are {tuple(images.shape[1:])}, the model takes "
                        f"{tuple(example.shape[1:])}")
    teacher = network.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    sample = images[:2] if len(images) >= 2 else images.repeat(2, 1, 1, 1)
    graph = torch.export.export(teacher, (sample,), dynamic_shapes=({0: batch},)).module()
    _fuse_conv_bn_(graph)  # batch norms folded with their running statistics: the weights the int8 file gets
    prepared = prepare_qat_pt2e(graph, xnnpack_quantizer(graph, keep_float, qat=True))
    # 1. calibration, as post-training quantization: observers only, float activations
    prepared.apply(disable_fake_quant)
    with torch.no_grad():
        for chunk in images.split(batch_size):
            prepared(chunk)
    prepared.apply(enable_fake_quant)
    _freeze_activation_ranges(prepared)
    # 2. fine-tuning through the fake quantization, the float network as teacher
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in prepared.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    losses: list[float] = []
    for step in range(steps):
        index = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
        x = images[index]
        flip = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        with torch.no_grad():
            target = teacher(x)
        loss = distillation_loss(prepared(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss))
        if progress and (step + 1) % max(1, steps // 10) == 0:
            print(f"  QAT step {step + 1}/{steps}: distillation loss {np.mean(losses[-max(1, steps // 10):]):.4g}",
                  flush=True)
    if progress:
        tenth = max(1, steps // 10)
        print(f"QAT: distillation loss {np.mean(losses[:tenth]):.4g} (first tenth of the steps) -> "
              f"{np.mean(losses[-tenth:]):.4g} (last tenth)", flush=True)
    return convert_pt2e(prepared)
