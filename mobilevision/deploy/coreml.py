"""Core ML export: an ML Program ``.mlpackage`` (iOS 16 / macOS 13 and later), converted with coremltools from the
``torch.export`` program of the deployable network. Core ML executes only on Apple devices; here every file is
checked against its spec after writing (:func:`check_coreml`).

* Input ``image``: an RGB image of the training resolution (``ImageType``, scaled by 1/255 into the network's
  [0, 1]; normalization is inside), so that Vision / ``MLModel`` feed a ``CVPixelBuffer`` directly. Segmentation
  files take the training resolution (fit the image and pad, ``preprocess.resize = "longer_side_pad"``).
* Classification: a Core ML classifier, ``classLabel`` (the class name) and ``classLabel_probs`` (name ->
  probability); geolocalization: ``probs`` [B, cells] (softmax; cell tokens and centres are in the metadata);
  attributes: ``probs`` [B, attributes] (one sigmoid each; the names are in the metadata);
  segmentation: ``logits`` [B, C, H, W]; detection: ``boxes`` [B, A, 4] (xyxy input pixels) and ``scores``
  [B, A, C], selected by the app as the metadata says (``score_thresh``, ``nms_thresh``, ...).
* Detection with ``nms=True``: the pipeline Apple's Vision framework runs as an object detector
  (``VNRecognizedObjectObservation``): the ML Program gives ``raw_confidence`` [A, C] and ``raw_coordinates`` [A, 4]
  (centre x, centre y, width, height as fractions of the image), and a Core ML ``NonMaximumSuppression`` model
  (class-wise, the class names as its labels, the checkpoint's IoU and score thresholds as defaults, overridable
  through the optional ``iouThreshold`` / ``confidenceThreshold`` inputs) gives ``confidence`` [N, C] and
  ``coordinates`` [N, 4]. Batch 1 (Vision runs one image at a time).
* The metadata (:func:`~mobilevision.deploy.graph.metadata_of`) is the JSON value of the user-defined field
  ``mobilevision``; the class names are also the classifier's labels.
* Precision: float16 compute (coremltools' default for ML Programs, what the Neural Engine and GPU run).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ._quiet import quiet

__all__ = ["check_coreml", "export_coreml", "read_coreml_metadata"]

METADATA_KEY = "mobilevision"
MINIMUM_TARGET = "iOS16"


def _quiet():
    """coremltools' import notices (no libcoremlpython off macOS, untested torch / scikit-learn versions) and its
    conversion progress bars off."""
    return quiet("coremltools", progress_bars=False)


def _coremltools():
    try:
        with _quiet():
            import coremltools as ct
    except ImportError as e:  # the mobile extra is not installed
        raise UserError(f"Core ML files need coremltools: pip install 'mobilevision[mobile]' ({e})") from e
    return ct


class _CoreMLHead(nn.Module):
    """The deployable network with what a Core ML app wants at its outputs: probabilities for classifiers,
    decoded boxes for detection (``vision``: the scores [A, C] and centre-size boxes [A, 4] as fractions of the
    image of the one image in the batch, what Core ML's NMS model takes)."""

    def __init__(self, network: nn.Module, decoder: nn.Module | None, activation: str | None,
                 vision: bool = False) -> None:
        super().__init__()
        self.network, self.decoder, self.activation, self.vision = network, decoder, activation, vision

    def forward(self, image: torch.Tensor):
        out = self.network(image)
        if self.decoder is None:
            if self.activation == "softmax":
                return out.softmax(dim=1)
            return out.sigmoid() if self.activation == "sigmoid" else out
        boxes, scores = self.decoder(*out)
        if not self.vision:
            return boxes, scores
        h, w = image.shape[-2:]
        x1, y1, x2, y2 = boxes[0].unbind(-1)
        coordinates = torch.stack([(x1 + x2) / (2 * w), (y1 + y2) / (2 * h), (x2 - x1) / w, (y2 - y1) / h], dim=-1)
        return scores[0], coordinates


def _vision_pipeline(ct, detector, meta: dict[str, Any]):
    """``detector`` (image -> ``raw_confidence``, ``raw_coordinates``) followed by Core ML's NonMaximumSuppression
    model: the pipeline Vision runs as an object detector."""
    from coremltools.models.pipeline import Pipeline

    spec = detector.get_spec()
    num_classes = len(meta["class_names"])
    nms_spec = ct.proto.Model_pb2.Model()
    nms_spec.specificationVersion = 5  # iOS 13: NonMaximumSuppression with threshold inputs
    for i, (name, size) in enumerate((("confidence", num_classes), ("coordinates", 4))):
        raw = spec.description.output[i].SerializeToString()
        nms_spec.description.input.add().ParseFromString(raw)
        out = nms_spec.description.output.add()
        out.ParseFromString(raw)
        out.name = name
        array = out.type.multiArrayType
        del array.shape[:]
        array.shapeRange.sizeRanges.add(lowerBound=0, upperBound=-1)  # as many boxes as are kept
        array.shapeRange.sizeRanges.add(lowerBound=size, upperBound=size)
    for name, doc in (("iouThreshold", "boxes of a class overlapping more than this are suppressed"),
                      ("confidenceThreshold", "boxes scoring less than this are dropped")):
        feature = nms_spec.description.input.add()
        feature.name, feature.shortDescription = name, doc
        feature.type.doubleType.SetInParent()
        feature.type.isOptional = True
    nms = nms_spec.nonMaximumSuppression
    nms.confidenceInputFeatureName, nms.coordinatesInputFeatureName = "raw_confidence", "raw_coordinates"
    nms.confidenceOutputFeatureName, nms.coordinatesOutputFeatureName = "confidence", "coordinates"
    nms.iouThresholdInputFeatureName, nms.confidenceThresholdInputFeatureName = "iouThreshold", "confidenceThreshold"
    nms.iouThreshold, nms.confidenceThreshold = float(meta["nms_thresh"]), float(meta["score_thresh"])
    nms.pickTop.perClass = True
    nms.stringClassLabels.vector.extend(meta["class_names"])
    nms_model = ct.models.MLModel(nms_spec, skip_model_load=True)
    pipeline = Pipeline(input_features=[("image", ct.models.datatypes.Array(3, *meta["image_size"])),
                                        ("iouThreshold", ct.models.datatypes.Double()),
                                        ("confidenceThreshold", ct.models.datatypes.Double())],
                        output_features=["confidence", "coordinates"])
    pipeline.add_model(detector)
    pipeline.add_model(nms_model)
    description = pipeline.spec.description
    description.input[0].ParseFromString(spec.description.input[0].SerializeToString())  # the image input
    for i in (1, 2):
        description.input[i].ParseFromString(nms_spec.description.input[i + 1].SerializeToString())
    for i in (0, 1):
        description.output[i].ParseFromString(nms_spec.description.output[i].SerializeToString())
    pipeline.spec.specificationVersion = max(spec.specificationVersion, nms_spec.specificationVersion)
    return ct.models.MLModel(pipeline.spec, weights_dir=detector.weights_dir, skip_model_load=True)


def export_coreml(task: nn.Module, output: str | os.PathLike, *, ckpt: dict[str, Any] | None = None,
                  batch: int | str = 1, nms: bool = False) -> Path:
    """Write ``task`` as a Core ML ML Program (``.mlpackage``) with a static batch (default 1), then check it
    (:func:`check_coreml`). ``nms`` (detection): the Vision object-detector pipeline (ML Program + Core ML NMS)."""
    from .graph import deployable, metadata_of, static_metadata

    if str(batch) == "dynamic" or not str(batch).isdigit() or int(batch) < 1:
        raise UserError(f"Core ML files have a static batch size: --batch N (default 1), got {batch!r}")
    output = Path(output)
    if output.suffix.lower() != ".mlpackage":
        raise UserError(f"a Core ML ML Program is a .mlpackage, got {output}")
    ct = _coremltools()
    batch = int(batch)
    meta = metadata_of(task, ckpt)
    kind = meta["task"]
    meta = static_metadata(meta)  # segmentation: a static input at the training resolution
    if nms and kind != "detection":
        raise UserError(f"nms is for detection models; this checkpoint is {kind}")
    if nms and batch != 1:
        raise UserError("the Vision pipeline (--nms) takes one image: --batch 1")
    network, decoder = deployable(task, meta["mean"], meta["std"])
    activation = {"classification": "softmax", "geolocalization": "softmax", "attributes": "sigmoid"}.get(kind)
    module = _CoreMLHead(network, decoder, activation, vision=nms).eval()
    h, w = meta["image_size"]
    example = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0))
    outputs = {"detection": ["boxes", "scores"], "classification": ["classLabel", "classLabel_probs"],
               "geolocalization": ["probs"], "segmentation": ["logits"], "attributes": ["probs"]}[kind]
    if nms:
        outputs = ["confidence", "coordinates"]
    meta.update(format="coreml", int8=False, batch=batch, nms=nms, outputs=outputs, precision="float16",
                input="RGB image (ImageType, pixel values scaled by 1/255); normalization is inside the model",
                exporter=f"coremltools {ct.__version__}, torch {torch.__version__.split('+')[0]}")
    with _quiet(), torch.no_grad():
        program = torch.export.export(module, (example,)).run_decompositions({})
        kwargs: dict[str, Any] = {}
        if kind == "classification":
            kwargs["classifier_config"] = ct.ClassifierConfig(list(meta["class_names"]))
        else:
            if nms:  # Core ML's NMS model takes float32 (or double) arrays
                kwargs["outputs"] = [ct.TensorType(name=n, dtype=np.float32)
                                     for n in ("raw_confidence", "raw_coordinates")]
            else:
                kwargs["outputs"] = [ct.TensorType(name=n) for n in outputs]
        model = ct.convert(program, inputs=[ct.ImageType(name="image", shape=tuple(example.shape), scale=1 / 255.0,
                                                         color_layout=ct.colorlayout.RGB)],
                           convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, MINIMUM_TARGET),
                           skip_model_load=True, **kwargs)
        if nms:
            model = _vision_pipeline(ct, model, meta)
    model.user_defined_metadata[METADATA_KEY] = json.dumps(meta)
    model.author = "mobilevision"
    model.short_description = f"mobilevision {kind} model ({meta['backbone']}, {h}x{w} RGB input)"
    output.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        model.save(os.fspath(output))
    check_coreml(output)
    return output


def _spec(path: Path):
    ct = _coremltools()
    if not (path / "Manifest.json").is_file():
        raise UserError(f"{path} is not a Core ML package (no Manifest.json)")
    with _quiet():
        return ct.models.MLModel(os.fspath(path), skip_model_load=True).get_spec()


def read_coreml_metadata(path: str | os.PathLike, spec=None) -> dict[str, Any]:
    """The mobilevision metadata of an ``.mlpackage`` (from its ``spec`` when already read)."""
    spec = _spec(Path(path)) if spec is None else spec
    fields = dict(spec.description.metadata.userDefined)
    if METADATA_KEY not in fields:
        raise UserError(f"{path} has no mobilevision metadata (not written by `mobilevision export`)")
    return json.loads(fields[METADATA_KEY])


def _shape(feature) -> list[int]:
    kind = feature.type.WhichOneof("Type")
    if kind == "multiArrayType":
        array = feature.type.multiArrayType
        if array.shape:
            return list(array.shape)
        return [r.upperBound if r.upperBound == r.lowerBound else -1 for r in array.shapeRange.sizeRanges]
    if kind == "imageType":
        return [int(feature.type.imageType.height), int(feature.type.imageType.width)]
    return []


def check_coreml(path: str | os.PathLike) -> dict[str, Any]:
    """Check a written ``.mlpackage`` against its metadata, without executing it (Core ML runs on Apple devices
    only): an ML Program, one RGB image input of the metadata's size, the outputs the metadata names, the
    classifier's labels equal to the class names. Returns a summary (input, outputs with their shapes, labels);
    raises ``UserError`` naming the first mismatch."""
    path = Path(path)
    spec = _spec(path)
    meta = read_coreml_metadata(path, spec)
    problems = []
    kind = spec.WhichOneof("Type")
    inputs = list(spec.description.input)
    labels: list[str] = []
    if meta.get("nms"):  # the Vision pipeline: ML Program -> NMS, the thresholds as optional inputs
        models = [m.WhichOneof("Type") for m in spec.pipeline.models] if kind == "pipeline" else [kind]
        if models != ["mlProgram", "nonMaximumSuppression"]:
            problems.append(f"models {models}, not an mlProgram followed by nonMaximumSuppression")
        else:
            nms = spec.pipeline.models[1].nonMaximumSuppression
            labels = list(nms.stringClassLabels.vector)
            if labels != list(meta["class_names"]):
                problems.append(f"NMS labels {labels[:5]}..., class names {meta['class_names'][:5]}...")
            if (round(nms.iouThreshold, 6), round(nms.confidenceThreshold, 6)) != (
                    round(meta["nms_thresh"], 6), round(meta["score_thresh"], 6)):
                problems.append(f"NMS thresholds {nms.iouThreshold:g} / {nms.confidenceThreshold:g}, metadata "
                                f"{meta['nms_thresh']:g} / {meta['score_thresh']:g}")
        extra = [(i.name, i.type.WhichOneof("Type"), i.type.isOptional) for i in inputs[1:]]
        if extra != [("iouThreshold", "doubleType", True), ("confidenceThreshold", "doubleType", True)]:
            problems.append(f"threshold inputs {extra}")
        inputs = inputs[:1]
    elif kind != "mlProgram":
        problems.append(f"model type {kind}, not mlProgram")
    if len(inputs) != 1 or inputs[0].type.WhichOneof("Type") != "imageType":
        problems.append(f"inputs {[i.name for i in inputs]}: expected one image input")
    else:
        image = inputs[0].type.imageType
        if [image.height, image.width] != list(meta["image_size"]):
            problems.append(f"input {image.height}x{image.width}, metadata {meta['image_size']}")
        if image.colorSpace != 20:  # ImageFeatureType.RGB
            problems.append("input colour space is not RGB")
    names = [o.name for o in spec.description.output]
    if names != list(meta["outputs"]):
        problems.append(f"outputs {names}, metadata {meta['outputs']}")
    if meta["task"] == "classification":
        labels = _classifier_labels(spec)
        if labels != list(meta["class_names"]):
            problems.append(f"classifier labels {labels[:5]}..., class names {meta['class_names'][:5]}...")
    if problems:
        raise UserError(f"Core ML file {path} does not match its metadata: " + "; ".join(problems))
    return {"input": (inputs[0].name, [meta["batch"], 3, *meta["image_size"]]),
            "outputs": {o.name: _shape(o) for o in spec.description.output}, "labels": labels,
            "spec_version": int(spec.specificationVersion)}


def _classifier_labels(spec) -> list[str]:
    """The class labels of a classifier ML Program: the ``classes`` list of the ``classify`` op of its main
    function."""
    main = spec.mlProgram.functions["main"]
    for op in main.block_specializations[main.opset].operations:
        if op.type == "classify":
            values = op.inputs["classes"].arguments[0].value.immediateValue.list.values
            return [v.immediateValue.tensor.strings.values[0] for v in values]
    return []
