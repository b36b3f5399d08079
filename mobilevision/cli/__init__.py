"""The ``mobilevision`` command (also ``python -m mobilevision``): one subcommand per module of this package.

    mobilevision train      --task ssdlite|classification|geolocalization|segmentation|attributes
                            [--backbone B[@WIDTH]] [LightningCLI arguments]                     (cli/train.py)
    mobilevision eval       coco|classification|geolocalization|segmentation|attributes ...   (cli/eval.py)
    mobilevision predict    --model CKPT|ONNX|PTE --source PATH [PATH ...] --output DIR      (cli/predict.py)
    mobilevision export     --checkpoint CKPT --output model.onnx|.pte|.mlpackage [--nms]
                            [--int8 --calibration DIR [--qat-steps N]]                      (cli/export.py)
    mobilevision benchmark  [--quick] [--sections ...]                                      (cli/benchmark/)
    mobilevision select     --task classification|ssdlite --latency-ms B [--runtime ...]     (cli/select.py)

``mobilevision SUBCOMMAND --help`` describes each. Each module has ``main(argv)``; importing this package loads
none of them (torch is imported only by the subcommand that runs).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Sequence

__all__ = ["SUBCOMMANDS", "main", "report_errors"]

#: subcommand -> (module of this package, one-line help)
SUBCOMMANDS = {
    "train": ("train", "train / validate / test a task: --task ssdlite (detection), classification, "
                       "geolocalization, segmentation or attributes, on any --backbone (LightningCLI); "
                       "distillation from a teacher"),
    "eval": ("eval", "score a checkpoint or a predictions file: COCO mAP, top-1/top-5, km accuracy, mIoU, "
                     "attribute mAP"),
    "predict": ("predict", "run a checkpoint, an ONNX or an ExecuTorch file on images, folders, globs and videos"),
    "export": ("export", "export a checkpoint to ONNX, ExecuTorch or Core ML (int8, QAT), checked against its runtime"),
    "benchmark": ("benchmark", "params, MAdds and latency of the backbones, detectors and runtimes"),
    "select": ("select", "the most accurate network within a latency budget, measured on this machine"),
}


def report_errors(run: Callable[[Any], int | None], args: Any) -> int:
    """``run(args)``'s exit code. Bad input (:class:`~mobilevision.errors.UserError`, ``OSError`` such as a missing
    file or an undecodable image; the messages name the file and the problem) prints ``error: ...`` to stderr and
    gives 2. Any other exception is a bug in mobilevision: its traceback, a line saying so, and 1."""
    from ..errors import UserError

    try:
        return int(run(args) or 0)
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not the user's input
        import traceback

        traceback.print_exc()
        print(f"mobilevision: internal error ({type(e).__name__}: {e}); this is a bug in mobilevision, not in your "
              "input: please report it with the traceback above", file=sys.stderr)
        return 1


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: mobilevision SUBCOMMAND [ARGS ...]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "mobilevision SUBCOMMAND --help: the arguments of one subcommand"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mobilevision ARGV``; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"mobilevision: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{SUBCOMMANDS[name][0]}")
    # sys.argv stays as the user typed it: Lightning's DDP launcher starts the other ranks with it
    result = module.main(rest)
    return result if isinstance(result, int) else 0
