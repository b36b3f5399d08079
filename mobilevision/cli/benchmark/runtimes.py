"""The runtimes section: torch eager vs ONNX Runtime and ExecuTorch (XNNPACK), float32 and int8, with the
torchvision / timm architecture exported the same way."""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ...evaluation.complexity import cpu_flags, cpu_name, time_interleaved
from .report import Column, Section, fmt_float, fmt_str
from .backbones import reference_model
from .detection import torchvision_ssd


# -- runtimes section ------------------------------------------------------------------------------

#: models of the runtimes section: name -> label; ``ssdlite`` is SSDLite-MobileNetV2, the rest are classifiers
RUNTIME_MODELS = {"mobilenet_v2": "MobileNetV2", "mobileone_s0": "MobileOne-S0 (folded)",
                  "efficientnet_b0": "EfficientNet-B0", "ssdlite": "SSDLite-MobileNetV2"}
#: the runs of a row that take numpy input (ONNX Runtime); eager and ExecuTorch take torch tensors
ONNX_RUNS = ("ort", "int8", "ref_ort")
#: CPU flags of the int8 dot-product instructions ONNX Runtime's int8 kernels use when present
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: targets the report checks: ORT float32 / torch eager, and ours / the reference in the same runtime
#: the ratios the report counts rows against: ORT well under eager, ours within 5% of the reference
ORT_VS_EAGER_GOAL, OURS_VS_REF_GOAL = 0.4, 1.05


def vnni_line() -> str:
    flags = cpu_flags()
    if not flags:
        return "VNNI: unknown (no /proc/cpuinfo flags)"
    have = [f for f in VNNI_FLAGS if f in flags]
    simd = next((f for f in ("avx512f", "avx2", "sse4_1") if f in flags), "none")
    if have:
        return f"VNNI: yes ({', '.join(have)}; widest SIMD {simd})"
    return (f"VNNI: no (neither avx512_vnni nor avx_vnni in the CPU flags; widest SIMD {simd}): ONNX Runtime's "
            "int8 kernels fall back to multiply-add sequences, so int8 gains less than on a VNNI CPU")


def _ort_runner(path: Path, threads: int) -> Callable[[Any], list]:
    """``x -> outputs`` of an ONNX file (ours or a reference's, which carries no mobilevision metadata) on ONNX
    Runtime's CPU provider with ``threads`` intra-op threads."""
    from ...deploy.onnx import ort_session

    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


class _TorchvisionSSDNetwork(nn.Module):
    """torchvision's ``SSD`` backbone + ``SSDLiteHead`` without its transform and post-processing:
    ``{"cls_logits", "bbox_regression"}``, as our SSDLite's network outputs."""

    def __init__(self, ssd: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = ssd.backbone, ssd.head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(list(self.backbone(x).values()))


def runtime_models(name: str, args: argparse.Namespace) -> tuple[nn.Module, int, nn.Module, str | None,
                                                                   nn.Module | None]:
    """(task, input size, eager module, reference label, reference module) of a runtimes row. The eager module is
    what the ONNX export holds (:func:`~mobilevision.deploy.deployable`: normalization + folded network [+ box
    decoder]); the reference is the torchvision / timm architecture behind the same normalization (detection:
    torchvision's SSD head on a copy of our feature extractor, and our decoder)."""
    from ...deploy import deployable
    from ...deploy.graph import DecodedNetwork, NormalizedNetwork
    from ...tasks import ClassificationTask, DetectionTask

    torch.manual_seed(0)
    if name == "ssdlite":
        size = args.det_size
        task = DetectionTask(backbone="mobilenet_v2", num_classes=args.det_classes, image_size=size,
                             width=args.det_width).eval()
        network, decoder = deployable(task)
        tv = NormalizedNetwork(_TorchvisionSSDNetwork(torchvision_ssd(task.model, size)), detection=True)
        return (task, size, DecodedNetwork(network, decoder).eval(), "torchvision SSD + SSDLiteHead",
                DecodedNetwork(tv, decoder).eval())
    size = args.runtime_size
    task = ClassificationTask(backbone=name, num_classes=1000, image_size=size).eval()
    network, _ = deployable(task)
    ref = reference_model(name, folded=True)
    if ref is None:
        return task, size, network, None, None
    return task, size, network, ref[0], NormalizedNetwork(ref[1].eval(), detection=False).eval()


def export_reference(module: nn.Module, size: int, path: Path, opset: int) -> Path:
    """``torch.onnx.export(dynamo=True)`` of ``module`` with a dynamic batch, as :func:`export_onnx` does ours."""
    import logging
    import warnings

    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(module, (torch.rand(2, 3, size, size),), path, dynamo=True, dynamic_shapes=({0: batch},),
                          opset_version=opset, external_data=False, verbose=False)
    return path


def _max_rel_err(got: Sequence[Any], want: Any) -> str:
    """max |got - want| / max |want| over the outputs (ONNX Runtime arrays against torch tensors), as ``1.2e-07``
    (the CSV's 4 decimals would round it to 0)."""
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    err = max(float(abs(g - w.numpy()).max() / max(float(w.abs().max()), 1e-12)) for g, w in zip(got, want))
    return f"{err:.1e}"


def _runtime_columns() -> list[Column]:
    return [
        Column("model", "model"), Column("reference", "reference", fmt_str), Column("batch", "batch"),
        Column("resolution", "res"),
        Column("eager_ms", "eager ms", fmt_float(2)), Column("ort_ms", "ORT ms", fmt_float(2)),
        Column("int8_ms", "ORT int8 ms", fmt_float(2)),
        Column("et_ms", "ET ms", fmt_float(2)), Column("et_int8_ms", "ET int8 ms", fmt_float(2)),
        Column("ref_eager_ms", "ref eager ms", fmt_float(2)), Column("ref_ort_ms", "ref ORT ms", fmt_float(2)),
        Column("ref_et_ms", "ref ET ms", fmt_float(2)), Column("ref_et_int8_ms", "ref ET int8 ms", fmt_float(2)),
        Column("ort_vs_eager", "ORT/eager", fmt_float(2)), Column("int8_vs_ort", "int8/ORT", fmt_float(2)),
        Column("ours_vs_ref_ort", "ORT ours/ref", fmt_float(2)),
        Column("ref_ort_vs_eager", "ref ORT/eager", fmt_float(2)),
        Column("et_vs_ort", "ET/ORT", fmt_float(2)), Column("et_int8_vs_et", "ET int8/ET", fmt_float(2)),
        Column("ours_vs_ref_et", "ET ours/ref", fmt_float(2)),
        Column("ours_vs_ref_et_int8", "ET int8 ours/ref", fmt_float(2)), Column("runs", "runs"),
        Column("threads", "threads", csv_only=True),
        *(Column(f"{k}_rel_err", f"{k} max rel err", fmt_str, csv_only=True)
          for k in ("ort", "int8", "ref_ort", "et", "et_int8", "ref_et")),
        *(Column(f"{k}_min_ms", f"{k} min ms", fmt_float(2), csv_only=True)
          for k in ("eager", "ort", "int8", "ref_eager", "ref_ort", "et", "et_int8", "ref_et", "ref_et_int8")),
    ]


def _pte_runner(path: Path) -> Callable[[Any], list]:
    """``x -> outputs`` of a ``.pte`` file under ``executorch.runtime`` (any file: the references carry no
    mobilevision metadata)."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(path).load_method("forward")
    return lambda x: [o.numpy() for o in method.execute([x])]


def _executorch_files(task, name: str, ref: nn.Module | None, batch: int, size: int, calib, folder: Path) -> dict:
    """The ExecuTorch files of one row, lowered to XNNPACK at static ``batch``: ours through
    :func:`~mobilevision.deploy.export_model` (float32 and PT2E int8, as ``mobilevision export`` writes them) and
    the reference network through the same quantizer and lowering."""
    from ...deploy.executorch import lower_xnnpack, quantize_pt2e
    from ...deploy.formats import export_model
    from ...deploy.graph import DecodedNetwork

    example = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    files = {"et": export_model(task, folder / f"{name}_b{batch}.pte", "executorch", batch=batch),
             "et_int8": export_model(task, folder / f"{name}_b{batch}_int8.pte", "executorch", batch=batch,
                                     calibration=calib)}
    if ref is not None:
        files["ref_et"] = lower_xnnpack(ref, example, folder / f"{name}_ref_b{batch}.pte")
        if isinstance(ref, DecodedNetwork):  # the network int8, the box decoder float, as ours
            int8 = DecodedNetwork(quantize_pt2e(ref.network, example, calib), ref.decoder)
        else:
            int8 = quantize_pt2e(ref, example, calib)
        files["ref_et_int8"] = lower_xnnpack(int8, example, folder / f"{name}_ref_b{batch}_int8.pte")
    return files


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def runtime_section(args: argparse.Namespace, devices: Sequence[str], out_dir: Path,
                    log: Callable[[str], None] = print) -> Section:
    """torch eager vs ONNX Runtime float32 / int8 vs ExecuTorch (XNNPACK) float32 / int8 (CPU), and the torchvision
    / timm architecture exported the same ways, all timed side by side, for each model of ``--runtime-models`` and
    batch size."""
    import tempfile

    import numpy as np

    title = "Runtimes: torch eager vs ONNX Runtime vs ExecuTorch (XNNPACK), float32 / int8 (CPU)"
    columns = _runtime_columns()
    try:
        import onnxruntime as ort
        import onnxscript  # noqa: F401 - torch.onnx.export(dynamo=True) needs it

        from ...deploy import export_onnx, read_metadata
        from ...deploy.quantize import quantize_int8
    except ImportError as e:
        log(f"runtimes: skipped ({e}); install onnx, onnxscript and onnxruntime")
        return Section(title, "runtimes", columns, [], [f"Skipped: {e} (install onnx, onnxscript and onnxruntime)."])
    executorch = "executorch" in args.runtime_backends
    et_version = None
    if executorch:
        try:
            from importlib.metadata import version

            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            et_version = version("executorch")
        except ImportError as e:
            log(f"runtimes: ExecuTorch columns skipped ({e}); pip install 'mobilevision[mobile]'")
            executorch = False
    threads = torch.get_num_threads()
    if executorch:
        _unsafe_reset_threadpool(threads)
    timing = dict(warmup=args.warmup, repeats=args.repeats, time_budget_s=args.time_budget)
    rows: list[dict[str, Any]] = []
    opset = None
    with tempfile.TemporaryDirectory(prefix="mobilevision-runtimes-") as tmp:
        for name in args.runtime_models:
            t0 = time.perf_counter()
            task, size, eager, ref_label, ref = runtime_models(name, args)
            calib = [np.random.default_rng(i).random((2, 3, size, size), dtype=np.float32) for i in range(2)]
            f32 = export_onnx(task, Path(tmp, f"{name}.onnx"))
            int8 = export_onnx(task, Path(tmp, f"{name}_int8.onnx"), quantize=lambda m: quantize_int8(m, calib))
            opset = read_metadata(f32)["opset"]
            runs = {"eager": eager, "ort": _ort_runner(f32, threads), "int8": _ort_runner(int8, threads)}
            if ref is not None:
                runs.update(ref_eager=ref,
                            ref_ort=_ort_runner(export_reference(ref, size, Path(tmp, f"{name}_ref.onnx"), opset),
                                                threads))
            label = RUNTIME_MODELS[name]
            log(f"{label} @ {size}: exported float32, int8{' and reference' if ref is not None else ''} ONNX "
                f"in {time.perf_counter() - t0:.0f} s")
            for i, batch in enumerate(args.runtime_batch):
                t0 = time.perf_counter()
                batch_runs = dict(runs)
                if executorch:  # static shapes: one file per batch size
                    files = _executorch_files(task, name, ref, batch, size, calib, Path(tmp))
                    batch_runs.update({k: _pte_runner(path) for k, path in files.items()})
                    log(f"{label} batch {batch}: lowered {len(files)} ExecuTorch files in "
                        f"{time.perf_counter() - t0:.0f} s")
                x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
                xn = x.numpy()
                fns = {k: functools.partial(fn, xn if k in ONNX_RUNS else x) for k, fn in batch_runs.items()}
                row: dict[str, Any] = {"model": label, "reference": ref_label, "batch": batch, "resolution": size,
                                       "threads": threads}
                if i == 0:  # the runtimes compute the same thing
                    with torch.inference_mode():
                        want = eager(x)
                        for k in ("ort", "int8", "et", "et_int8"):
                            if k in fns:
                                row[f"{k}_rel_err"] = _max_rel_err(fns[k](), want)
                        if ref is not None:
                            ref_want = ref(x)
                            for k in ("ref_ort", "ref_et"):
                                if k in fns:
                                    row[f"{k}_rel_err"] = _max_rel_err(fns[k](), ref_want)
                with torch.inference_mode():
                    stats = time_interleaved(fns, device="cpu", **timing)
                for k in batch_runs:
                    row[f"{k}_ms"], row[f"{k}_min_ms"] = stats[k]["median_ms"], stats[k]["min_ms"]
                row["runs"] = stats["eager"]["repeats"]
                row["ort_vs_eager"] = _ratio(row["ort_ms"], row["eager_ms"])
                row["int8_vs_ort"] = _ratio(row["int8_ms"], row["ort_ms"])
                row["ours_vs_ref_ort"] = _ratio(row["ort_ms"], row.get("ref_ort_ms"))
                row["ref_ort_vs_eager"] = _ratio(row.get("ref_ort_ms"), row.get("ref_eager_ms"))
                row["et_vs_ort"] = _ratio(row.get("et_ms"), row["ort_ms"])
                row["et_int8_vs_et"] = _ratio(row.get("et_int8_ms"), row.get("et_ms"))
                row["ours_vs_ref_et"] = _ratio(row.get("et_ms"), row.get("ref_et_ms"))
                row["ours_vs_ref_et_int8"] = _ratio(row.get("et_int8_ms"), row.get("ref_et_int8_ms"))
                rows.append(row)
                ref_txt = f", ref ORT {row['ref_ort_ms']:.1f} ms" if ref is not None else ""
                et_txt = (f", ET {row['et_ms']:.1f} ms, ET int8 {row['et_int8_ms']:.1f} ms" if executorch else "")
                log(f"{label} batch {batch} @ {size}: eager {row['eager_ms']:.1f} ms, ORT {row['ort_ms']:.1f} ms, "
                    f"int8 {row['int8_ms']:.1f} ms{et_txt}{ref_txt}  [{time.perf_counter() - t0:.0f} s]")
    sizes = sorted({r["resolution"] for r in rows})
    notes = [
        f"CPU: {cpu_name()}. {vnni_line()}. torch {torch.__version__} with torch.get_num_threads() = {threads}; "
        f"onnxruntime {ort.__version__} (CPUExecutionProvider, intra-op threads = {threads}, thread spinning off, "
        f"graph optimizations all); exported with torch.onnx.export(dynamo=True), opset {opset}.",
        "Random weights, float32 input [B, 3, S, S] in [0, 1]; ImageNet normalization is inside every model. "
        "`eager`: what the ONNX file holds (`mobilevision.deploy.deployable`: normalization + network, MobileOne "
        "folded, + box decoding for SSDLite) under `torch.inference_mode`. `ORT`: `mobilevision.deploy.export_onnx` "
        "of the same task (detection: boxes + scores, no NMS); `ORT int8`: the same with `quantize_int8` (static, "
        "QDQ, per-channel int8 weights, uint8 activations; prediction layers and box decoding stay float), "
        "calibrated on random batches (latency does not depend on calibration values). `ref`: the torchvision / timm "
        "implementation of the same "
        "architecture behind the same normalization (MobileOne: timm's `reparameterize_model`; SSDLite: "
        "torchvision's `SSD` backbone + `SSDLiteHead` around a copy of our feature extractor, then our box "
        "decoder), in eager mode and exported with `torch.onnx.export(dynamo=True)`, same opset, dynamic batch.",
        f"Sizes: {', '.join(map(str, sizes))} px (`res`); classifiers at --runtime-size, SSDLite at --det-size "
        f"(width {args.det_width:g}, {args.det_classes} classes). All runtimes of a row alternate run by run "
        f"(`mobilevision.evaluation.complexity.time_interleaved`), so machine noise hits all alike; median of up "
        f"to {args.repeats} timed runs after up to {args.warmup} warm-up runs, {args.time_budget:g} s of timed runs "
        "per row (`runs`). Denormals flushed to zero in both runtimes (`torch.set_flush_denormal`, ORT "
        "`session.set_denormal_as_zero`), as random-weight activations can otherwise hit x86's slow denormal path.",
        "Ratios of medians: `ORT/eager` = ORT float32 / torch eager; `int8/ORT` = "
        "int8 / float32; `ORT ours/ref` = our ORT / the reference's ORT; "
        "`ref ORT/eager` = the same ratio for the reference. The CSV also has each runtime's max relative "
        "output error against eager (first batch) and the minimum times.",
    ]
    if executorch:
        notes.append(
            f"`ET`: executorch {et_version}, `mobilevision export --format executorch` of the same task (torch.export "
            "at a static batch, one file per batch size, `to_edge_transform_and_lower` + `XnnpackPartitioner`, run "
            f"with `executorch.runtime`, XNNPACK thread pool = {threads}); `ET int8`: PT2E static quantization with "
            "the XNNPACK quantizer (per-channel symmetric int8 weights, int8 activations; prediction layers and box "
            "decoding stay float), calibrated on the same random batches. `ref ET` / `ref ET int8`: the reference "
            "network through the same quantizer and lowering. `ET/ORT` = ExecuTorch float32 / ORT float32; "
            f"`ET int8/ET` = int8 / float32; `ET ours/ref`, `ET int8 ours/ref` as for ORT.")
    after = []
    if rows:
        fast = [r for r in rows if r["ort_vs_eager"] <= ORT_VS_EAGER_GOAL]
        refs = [r for r in rows if r["ours_vs_ref_ort"] is not None]
        close = [r for r in refs if r["ours_vs_ref_ort"] <= OURS_VS_REF_GOAL]
        after.append(f"ORT/eager <= {ORT_VS_EAGER_GOAL:g} in {len(fast)} of {len(rows)} rows; ORT ours/ref <= "
                     f"{OURS_VS_REF_GOAL:g} in {len(close)} of {len(refs)} rows.")
        if executorch:
            et_refs = [r for r in rows if r["ours_vs_ref_et"] is not None]
            et_close = [r for r in et_refs if r["ours_vs_ref_et"] <= OURS_VS_REF_GOAL]
            faster = [r for r in rows if r["et_int8_vs_et"] < 1]
            after.append(f"ET ours/ref <= {OURS_VS_REF_GOAL:g} in {len(et_close)} of {len(et_refs)} rows; ET int8 "
                         f"faster than ET float32 in {len(faster)} of {len(rows)} rows.")
    return Section(title, "runtimes", columns, rows, notes, after)


