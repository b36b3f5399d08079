"""ExecuTorch export (``.pte`` with the XNNPACK delegate, the CPU backend of ExecuTorch on Android and iOS), float32
or int8, and running a ``.pte`` file here with ``executorch.runtime``.

The network (normalization inside, MobileOne folded) is captured by ``torch.export`` at a static input shape
[batch, 3, H, W] (phone runtimes plan their memory for it), for detection followed by the box decoder, and lowered
with ``to_edge_transform_and_lower`` + ``XnnpackPartitioner``. int8 is PT2E static quantization with the XNNPACK
quantizer (per-channel symmetric int8 weights, int8 activations) calibrated on the user's images; only the network is
quantized, the box decoder stays float. The metadata (:func:`~mobilevision.deploy.graph.metadata_of`) travels
inside the program as a constant method, ``mobilevision_metadata``, that returns its JSON as a uint8 tensor: an app
that wants it runs that method (:func:`read_pte_metadata` does here).

Outputs, in order (``meta["outputs"]``): ``logits`` [B, C] (classification, geolocalization cells) or [B, C, H, W]
(segmentation, at the input's size); for detection ``boxes`` [B, A, 4] (xyxy input pixels, clipped) and ``scores``
[B, A, C] (softmax without the background). An app selects detections as ``mobilevision predict`` does: per class
the ``topk_candidates`` best anchors above ``score_thresh``, class-wise NMS at ``nms_thresh``, the
``detections_per_img`` best (all four numbers are in the metadata).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ._quiet import quiet

__all__ = ["METADATA_METHOD", "ExecuTorchModel", "export_executorch", "lower_xnnpack", "prediction_layers", "quantize_pt2e",
           "read_pte_metadata", "xnnpack_quantizer"]

METADATA_METHOD = "mobilevision_metadata"


def _quiet():
    return quiet("executorch", "torchao", "torch._dynamo")


def _import_executorch():
    try:
        with _quiet():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
    except ImportError as e:  # the mobile extra is not installed
        raise UserError("ExecuTorch files need the executorch package: pip install 'mobilevision[mobile]' "
                        f"(executorch 1.5.1 with torch 2.14.1; {e})") from e
    return to_edge_transform_and_lower, XnnpackPartitioner


def prediction_layers(graph_module: torch.fx.GraphModule) -> set[str]:
    """Names of the graph nodes that are the convolutions or linear layers producing an output of the graph
    (through reshapes, concatenations and other parameter-free ops): the classifier, the SSD heads' last
    convolutions, the segmentation classifier. They stay float32 in int8 files, so that logits and box offsets keep
    float resolution (the ONNX int8 export keeps the same layers float)."""
    producers = {"conv2d", "linear", "convolution", "addmm"}
    keep: set[str] = set()
    stack = [a for node in graph_module.graph.nodes if node.op == "output" for a in node.all_input_nodes]
    seen = set()
    while stack:
        node = stack.pop()
        if node in seen or node.op != "call_function":
            continue
        seen.add(node)
        if getattr(node.target, "__name__", str(node.target)).split(".")[0] in producers:
            keep.add(node.name)
            continue
        stack.extend(node.all_input_nodes)
    return keep


def xnnpack_quantizer(graph: torch.fx.GraphModule, keep_float: bool = True, qat: bool = False):
    """The quantizer of every int8 ``.pte``: the XNNPACK quantizer's symmetric configuration (per-channel symmetric
    int8 weights with min-max ranges, int8 activations with histogram ranges); with ``keep_float`` the prediction
    layers (:func:`prediction_layers` of ``graph``) stay float. ``qat``: the same quantization as fake-quantize
    modules whose observers are the post-training ones, so that a calibration pass gives exactly the post-training
    ranges (:func:`~mobilevision.deploy.qat.qat_pt2e` starts from them)."""
    import dataclasses

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    config = get_symmetric_quantization_config(is_per_channel=True)
    if qat:
        from torchao.quantization.pt2e import FakeQuantize, HistogramObserver, PerChannelMinMaxObserver
        from torchao.quantization.pt2e.quantizer.utils import QuantizationConfig

        act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=FakeQuantize.with_args(
            observer=HistogramObserver, eps=2 ** -12))
        weight = dataclasses.replace(config.weight, observer_or_fake_quant_ctr=FakeQuantize.with_args(
            observer=PerChannelMinMaxObserver, eps=2 ** -12))
        config = QuantizationConfig(act, act, weight, None, is_qat=True)
    quantizer = XNNPACKQuantizer().set_global(config)
    if keep_float:
        float_nodes = prediction_layers(graph)
        quantizer.set_filter_function(lambda node: node.name not in float_nodes)
    return quantizer


def quantize_pt2e(network: nn.Module, example: torch.Tensor, batches: Iterable[np.ndarray | torch.Tensor],
                  keep_float: bool = True) -> torch.fx.GraphModule:
    """``network`` captured with ``torch.export`` and quantized for XNNPACK (PT2E static: per-channel symmetric
    int8 weights, int8 activations), calibrated on ``batches`` (float32 [B, 3, H, W] in [0, 1], each of
    ``example``'s shape or smaller: smaller batches are padded by repetition). ``keep_float``: the prediction layers
    (:func:`prediction_layers`) stay float32."""
    with _quiet():
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        graph = torch.export.export(network.eval(), (example,)).module()
        quantizer = xnnpack_quantizer(graph, keep_float)
        prepared = prepare_pt2e(graph, quantizer)
        seen = 0
        with torch.no_grad():
            for batch in batches:
                for x in _fixed_batches(torch.as_tensor(np.asarray(batch, np.float32)), example.shape[0]):
                    prepared(x)
                seen += len(batch)
        if not seen:
            raise UserError("int8 calibration got no image")
        return convert_pt2e(prepared)


def _fixed_batches(x: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """``x`` [N, ...] as batches of exactly ``size`` (the last one padded by repeating its images)."""
    for start in range(0, len(x), size):
        part = x[start:start + size]
        if len(part) < size:
            part = torch.cat([part, part[torch.arange(size - len(part)) % len(part)]])
        yield part


def export_executorch(task: nn.Module, output: str | os.PathLike, *, ckpt: dict[str, Any] | None = None,
                      batch: int | str = 1, calibration: Iterable[np.ndarray] | None = None, qat_steps: int = 0,
                      qat_lr: float = 1e-5, qat_batch: int = 16, qat_seed: int = 0) -> Path:
    """Write ``task`` (a loaded mobilevision task) as an ExecuTorch program with the XNNPACK delegate.

    ``batch``: the static batch size (``"dynamic"`` is refused: phone runtimes plan memory for static shapes;
    export one file per batch size). ``calibration``: float32 batches [B, 3, H, W] in [0, 1] at the model's input
    size; given, the network is int8 (:func:`quantize_pt2e`), or with ``qat_steps`` > 0 fine-tuned with fake quantization
    on those images first (:func:`~mobilevision.deploy.qat.qat_pt2e`, ``qat_lr``, ``qat_batch``). Segmentation
    files take the training resolution
    (``preprocess.resize = "longer_side_pad"``: the image fitted and padded to it, as ``predict`` does)."""
    from .graph import DecodedNetwork, deployable, metadata_of, static_metadata

    if str(batch) == "dynamic":
        raise UserError("ExecuTorch files have a static batch size: --batch N (default 1), one file per size")
    if not str(batch).isdigit() or int(batch) < 1:
        raise UserError(f"batch must be a positive integer, got {batch!r}")
    _import_executorch()
    from importlib.metadata import version

    meta = metadata_of(task, ckpt)
    meta = static_metadata(meta)  # segmentation: a static input at the training resolution
    network, decoder = deployable(task, meta["mean"], meta["std"])
    h, w = meta["image_size"]
    example = torch.rand(int(batch), 3, h, w, generator=torch.Generator().manual_seed(0))
    int8 = calibration is not None
    if qat_steps and not int8:
        raise UserError("quantization-aware training needs calibration images")
    if int8 and qat_steps:
        from .qat import qat_pt2e

        with _quiet():
            network = qat_pt2e(network, example, calibration, qat_steps, lr=qat_lr, batch_size=qat_batch,
                               seed=qat_seed)
    elif int8:
        network = quantize_pt2e(network, example, calibration)
    module = DecodedNetwork(network, decoder) if decoder is not None else network
    meta.update(format="executorch", backend="xnnpack", int8=int8, batch=int(batch), nms=False,
                quantization=("qat" if qat_steps else "ptq") if int8 else None,
                exporter=f"executorch {version('executorch')} (XNNPACK), torch {torch.__version__.split('+')[0]}")
    blob = torch.tensor(list(json.dumps(meta).encode()), dtype=torch.uint8)
    return lower_xnnpack(module, example, output, constant_methods={METADATA_METHOD: blob})


def lower_xnnpack(module: nn.Module, example: torch.Tensor, output: str | os.PathLike,
                  constant_methods: dict[str, torch.Tensor] | None = None) -> Path:
    """``module`` (float in eval mode, or a converted int8 graph) captured by ``torch.export`` at ``example``'s shape, lowered with
    ``to_edge_transform_and_lower`` + ``XnnpackPartitioner`` and written to ``output``: the one lowering of every
    ``.pte`` (the benchmark lowers the torchvision / timm references with it too)."""
    to_edge_transform_and_lower, XnnpackPartitioner = _import_executorch()
    with _quiet(), torch.no_grad():
        program = torch.export.export(module, (example,))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                              constant_methods=constant_methods)
        buffer = lowered.to_executorch().buffer
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(buffer)
    return output


def _runtime():
    _import_executorch()
    with _quiet():
        from executorch.runtime import Runtime

        return Runtime.get()


def read_pte_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``mobilevision`` metadata of a ``.pte`` file."""
    program = _load_program(Path(path))
    return _metadata(program, Path(path))


def _load_program(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"ExecuTorch program {path} does not exist")
    try:
        return _runtime().load_program(path)
    except Exception as e:  # noqa: BLE001 - the runtime raises RuntimeError for any malformed file
        raise UserError(f"ExecuTorch cannot load {path}: {e}") from e


def _metadata(program, path: Path) -> dict[str, Any]:
    if METADATA_METHOD not in program.method_names:
        raise UserError(f"{path} has no mobilevision metadata (not written by `mobilevision export`)")
    blob = program.load_method(METADATA_METHOD).execute([])[0]
    return json.loads(bytes(blob.tolist()).decode())


class ExecuTorchModel:
    """A ``.pte`` file under ``executorch.runtime`` (XNNPACK kernels): ``model(images)`` -> ``{output name:
    array}``, ``images`` float32 [batch, 3, H, W] in [0, 1] with the file's static batch (``self.batch``).

    ``threads``: XNNPACK's thread pool size (process-wide in ExecuTorch; default: the runtime's choice)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        self.path = Path(path)
        program = _load_program(self.path)
        self.meta = _metadata(program, self.path)
        if threads:
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            _unsafe_reset_threadpool(int(threads))
        self.method = program.load_method("forward")
        self.output_names: list[str] = list(self.meta["outputs"])
        self.batch = int(self.meta["batch"])

    def __call__(self, images: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        x = torch.as_tensor(np.ascontiguousarray(images, np.float32) if not isinstance(images, torch.Tensor)
                            else images.detach().float().contiguous())
        if tuple(x.shape[:1]) != (self.batch,):
            raise ValueError(f"{self.path} takes batches of {self.batch}, got {tuple(x.shape)}")
        outputs = self.method.execute([x])
        return {name: out.numpy().copy() for name, out in zip(self.output_names, outputs)}
