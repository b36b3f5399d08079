"""ONNX export of a trained task, and running an exported file with ONNX Runtime.

The graph is exported by ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript, the maintained
exporter; the TorchScript-based one is deprecated). It is built in parts: the network behind normalization
(the part that int8 quantization touches), then for detection the box decoder (kept in float) joined to it with
``onnx.compose``, then optionally class-wise NMS written directly as ONNX ops (``NonMaxSuppression``), with a
fixed-size output. The metadata (:func:`~mobilevision.deploy.graph.metadata_of`) travels as the JSON value of
the ``mobilevision`` metadata property.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..errors import UserError

__all__ = ["METADATA_KEY", "OnnxModel", "append_nms", "export_onnx", "ort_session", "read_metadata"]

METADATA_KEY = "mobilevision"
DEFAULT_OPSET = 18


def _export_module(module: nn.Module, args: tuple[torch.Tensor, ...], input_names: list[str],
                   output_names: list[str], dynamic_batch: bool, opset: int, dynamic_hw: bool = False):
    import onnx

    dims: dict[int, Any] = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1, max=4096)
    if dynamic_hw:  # segmentation: any image size, as validation scores (not a multiple of the stride either)
        dims[2], dims[3] = torch.export.Dim("height", min=33, max=8192), torch.export.Dim("width", min=33, max=8192)
    dynamic_shapes = tuple(dict(dims) for _ in args) if dims else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(module, args, None, dynamo=True, input_names=input_names,
                                    output_names=output_names, dynamic_shapes=dynamic_shapes, opset_version=opset,
                                    verbose=False, optimize=True)
    proto = program.model_proto
    names = {0: "batch"} if dynamic_batch else {}
    if dynamic_hw:
        names.update({2: "height", 3: "width"})
    for value in [*proto.graph.input, *proto.graph.output]:  # one name per dynamic dimension, inputs and outputs
        shape = value.type.tensor_type.shape.dim
        for axis, name in names.items():
            if axis < len(shape):
                shape[axis].ClearField("dim_value")
                shape[axis].dim_param = name
    return onnx.shape_inference.infer_shapes(proto)


def _merge(first, second, io_map: list[tuple[str, str]], prefix: str):
    """``second`` fed by outputs of ``first`` (``io_map``), as one model."""
    import onnx
    from onnx import compose

    second = compose.add_prefix(second, prefix, rename_outputs=False)
    io_map = [(a, prefix + b) for a, b in io_map]
    ir = max(first.ir_version, second.ir_version)
    first.ir_version = second.ir_version = ir
    opsets = {o.domain: o.version for o in first.opset_import}
    for o in second.opset_import:  # the same version for every shared domain
        opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    for m in (first, second):
        del m.opset_import[:]
        m.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets.items())
    outputs = [o.name for o in second.graph.output]
    return compose.merge_models(first, second, io_map=io_map, outputs=outputs)


def append_nms(model, score_thresh: float, nms_thresh: float, topk_candidates: int, detections_per_img: int,
               boxes: str = "boxes", scores: str = "scores"):
    """Class-wise NMS on a graph that outputs ``boxes`` [B, A, 4] and ``scores`` [B, A, C]: the same selection as
    :func:`~mobilevision.detection.postprocess.select_detections` (per class the ``topk_candidates`` best anchors
    scoring above ``score_thresh``, NMS at ``nms_thresh`` per class, the ``detections_per_img`` best overall), as
    ONNX ops. New outputs: ``detections`` [B, D, 6] float32 (x1, y1, x2, y2, score, label; rows past
    ``num_detections`` are zero) and ``num_detections`` [B] int64, D = ``detections_per_img``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    shape = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in graph.output}
    num_anchors, num_classes = shape[scores][1], shape[scores][2]
    if not (isinstance(num_anchors, int) and isinstance(num_classes, int) and num_anchors and num_classes):
        raise ValueError(f"append_nms needs static anchor and class counts, got scores shape {shape[scores]}")
    k = min(topk_candidates, num_anchors)
    d = min(detections_per_img, num_anchors * num_classes)
    consts = {
        "nms_k": np.array([k], np.int64), "nms_d": np.array([d], np.int64),
"nms_iou": np.array([nms_thresh], np.float32),
        "nms_score": np.array([score_thresh], np.float32), "nms_zero": np.array(0.0, np.float32),
        "nms_one": np.array(1.0, np.float32), "nms_minus_one": np.array(-1.0, np.float32),
        "nms_half": np.array(0.5, np.float32), "nms_flat": np.array([0, -1], np.int64),
        "nms_anchors": np.array(num_anchors, np.int64), "nms_axis2": np.array([2], np.int64),
        "nms_axis1": np.array([1], np.int64), "nms_box_shape": np.array([1, 1, 4], np.int64),
        "nms_zero_i": np.array([0], np.int64), "nms_minus_half": np.array(-0.5, np.float32),
    }
    graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in consts.items())
    n = helper.make_node
    nodes = [
        n("Transpose", [scores], ["nms_scores_t"], perm=[0, 2, 1]),                    # [B, C, A]
        n("TopK", ["nms_scores_t", "nms_k"], ["nms_top_v", "nms_top_i"], axis=2),        # per-class candidates
        n("Mul", ["nms_scores_t", "nms_zero"], ["nms_zeros"]),
        n("Mul", ["nms_top_v", "nms_zero"], ["nms_top_zeros"]),
        n("Add", ["nms_top_zeros", "nms_one"], ["nms_top_ones"]),
        n("ScatterElements", ["nms_zeros", "nms_top_i", "nms_top_ones"], ["nms_cand"], axis=2),
        n("Greater", ["nms_cand", "nms_half"], ["nms_is_cand"]),
        n("Where", ["nms_is_cand", "nms_scores_t", "nms_minus_one"], ["nms_cand_scores"]),
        n("NonMaxSuppression", [boxes, "nms_cand_scores", "nms_d", "nms_iou", "nms_score"],
          ["nms_selected"]),                                                            # [K, 3] (b, c, a)
        n("Shape", ["nms_selected"], ["nms_sel_shape"]),
        n("Slice", ["nms_sel_shape", "nms_zero_i", "nms_axis1"], ["nms_sel_count"]),    # [K]
        n("ConstantOfShape", ["nms_sel_count"], ["nms_sel_ones"],
          value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
        n("ScatterND", ["nms_zeros", "nms_selected", "nms_sel_ones"], ["nms_kept"]),
        n("Greater", ["nms_kept", "nms_half"], ["nms_is_kept"]),
        n("Where", ["nms_is_kept", "nms_scores_t", "nms_minus_one"], ["nms_kept_scores"]),
        n("Reshape", ["nms_kept_scores", "nms_flat"], ["nms_kept_flat"]),               # [B, C * A]
        n("TopK", ["nms_kept_flat", "nms_d"], ["nms_det_v", "nms_det_i"], axis=1),      # [B, D]
        n("Div", ["nms_det_i", "nms_anchors"], ["nms_det_label"]),
        n("Mod", ["nms_det_i", "nms_anchors"], ["nms_det_anchor"]),
        n("Unsqueeze", ["nms_det_anchor", "nms_axis2"], ["nms_det_anchor3"]),           # [B, D, 1]
        n("Shape", ["nms_det_anchor3"], ["nms_det_shape3"]),
        n("Mul", ["nms_det_shape3", "nms_box_shape"], ["nms_gather_shape"]),            # [B, D, 4]
        n("Expand", ["nms_det_anchor3", "nms_gather_shape"], ["nms_det_anchor4"]),
        n("GatherElements", [boxes, "nms_det_anchor4"], ["nms_det_boxes"], axis=1),
        n("Greater", ["nms_det_v", "nms_minus_half"], ["nms_valid"]),
        n("Cast", ["nms_valid"], ["nms_valid_f"], to=TensorProto.FLOAT),
        n("Cast", ["nms_valid"], ["nms_valid_i"], to=TensorProto.INT64),
        n("ReduceSum", ["nms_valid_i", "nms_axis1"], ["num_detections"], keepdims=0),
        n("Cast", ["nms_det_label"], ["nms_det_label_f"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["nms_det_v", "nms_axis2"], ["nms_det_v3"]),
        n("Unsqueeze", ["nms_det_label_f", "nms_axis2"], ["nms_det_label3"]),
        n("Concat", ["nms_det_boxes", "nms_det_v3", "nms_det_label3"], ["nms_rows"], axis=2),
        n("Unsqueeze", ["nms_valid_f", "nms_axis2"], ["nms_valid3"]),
        n("Mul", ["nms_rows", "nms_valid3"], ["detections"]),
    ]
    graph.node.extend(nodes)
    batch = shape[scores][0]
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("detections", TensorProto.FLOAT, [batch, d, 6]),
                         helper.make_tensor_value_info("num_detections", TensorProto.INT64, [batch])])
    onnx.checker.check_model(model)
    return model


def export_onnx(task: nn.Module, output: str | os.PathLike, *, ckpt: dict[str, Any] | None = None,
                opset: int | None = None, batch: int | str = "dynamic", nms: bool = False,
                quantize: Callable[[Any], Any] | None = None) -> Path:
    """Write ``task`` (a loaded mobilevision task) as ONNX to ``output``.

    Input ``images`` float32 [B, 3, H, W] RGB in [0, 1] at the training resolution (segmentation: any H, W, as it
    validates; the logits come at the input's size). Outputs: ``logits``
    (classification, geolocalization cells), or for detection ``boxes`` [B, A, 4] (input pixels) and ``scores``
    [B, A, C]; with ``nms`` instead ``detections`` [B, D, 6] and ``num_detections`` [B] (:func:`append_nms`).
    ``batch``: ``"dynamic"`` or a fixed batch size. ``quantize``: a function ``ModelProto -> ModelProto`` applied
    to the network part only (int8, see :func:`~mobilevision.deploy.quantize.quantize_int8`); box decoding and NMS
    stay float. ``ckpt`` (the checkpoint dict) supplies the data settings of the metadata.
    """
    import onnx

    opset = opset or DEFAULT_OPSET
    dynamic = batch == "dynamic"
    if not dynamic and (not str(batch).isdigit() or int(batch) < 1):
        raise UserError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    from .graph import deployable, metadata_of

    meta = metadata_of(task, ckpt)
    if nms and meta["task"] != "detection":
        raise UserError(f"nms is for detection models; this checkpoint is {meta['task']}")
    network, decoder = deployable(task, meta["mean"], meta["std"])
    h, w = meta["image_size"]
    example = torch.rand(2 if dynamic else int(batch), 3, h, w)
    outputs = ["cls_logits", "bbox_regression"] if decoder is not None else ["logits"]
    model = _export_module(network, (example,), ["images"], outputs, dynamic, opset,
                           dynamic_hw=meta.get("input_size") == "dynamic")
    if quantize is not None:
        model = quantize(model)
    if decoder is not None:
        with torch.no_grad():
            raw = network(example)
        post = _export_module(decoder, tuple(raw), outputs, ["boxes", "scores"], dynamic, opset)
        model = _merge(model, post, [(o, o) for o in outputs], prefix="decode/")
        model = onnx.shape_inference.infer_shapes(model)
        if nms:
            model = append_nms(model, meta["score_thresh"], meta["nms_thresh"], meta["topk_candidates"],
                               meta["detections_per_img"])
            meta["outputs"] = ["detections", "num_detections"]
    meta.update(nms=bool(nms), int8=quantize is not None, opset=opset,
                batch="dynamic" if dynamic else int(batch), exporter=f"torch.onnx.export(dynamo=True), torch "
                                                                     f"{torch.__version__.split('+')[0]}")
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    model.producer_name, model.doc_string = "mobilevision", f"mobilevision {meta['task']} model ({meta['backbone']})"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, output)
    return output


def read_metadata(model) -> dict[str, Any]:
    """The ``mobilevision`` metadata of an ONNX model (path, ``onnx.ModelProto`` or ORT session)."""
    if isinstance(model, (str, os.PathLike)):
        import onnx

        model = onnx.load(os.fspath(model), load_external_data=False)
    props = (model.get_modelmeta().custom_metadata_map if hasattr(model, "get_modelmeta")
             else {p.key: p.value for p in model.metadata_props})
    if METADATA_KEY not in props:
        raise UserError("the ONNX model has no mobilevision metadata (not written by `mobilevision export`)")
    return json.loads(props[METADATA_KEY])


def ort_session(path: str | os.PathLike, threads: int | None = None, providers: Iterable[str] | None = None):
    """The project's one way to open an ONNX file with ONNX Runtime: ``threads`` intra-op threads (default: ORT's
    choice), no thread spinning (so ORT does not slow down other work, torch, in the same process between runs),
    denormals as zero (as torch here: random-weight activations can otherwise hit x86's slow denormal path), quiet
    logs, the CPU provider unless ``providers`` says otherwise. Any ONNX file, with or without mobilevision metadata."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(os.fspath(path), options, providers=list(providers or ["CPUExecutionProvider"]))


class OnnxModel:
    """An exported model under ONNX Runtime: ``model(images)`` -> ``{output name: array}``.

    ``threads``: intra-op threads (default: ORT's choice). Thread spinning is off, so that ORT does not slow down
    other work (torch) in the same process between runs.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, providers: Iterable[str] | None = None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} does not exist")
        try:
            self.session = ort_session(path, threads, providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            raise UserError(f"ONNX Runtime cannot load {path}: {e}") from e
        self.path = path
        self.meta = read_metadata(self.session)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        fixed = self.meta.get("batch", "dynamic")
        self.batch: int | None = None if fixed == "dynamic" else int(fixed)

    def __call__(self, images: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        values = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(images, np.float32)})
        return dict(zip(self.output_names, values))

