"""``mobilevision train``: LightningCLI with task shortcuts.

``mobilevision train --task ssdlite --backbone mobilenet_v2`` is short for
``mobilevision train fit --config configs/ssdlite/shapes.yaml --model.init_args.backbone mobilenet_v2``:
``--task`` picks the LightningModule / data module pair and, unless ``--config`` is given, the task's
default config (on the embedded dataset); ``--backbone`` sets the model's backbone; the subcommand
defaults to ``fit``. Everything else is plain LightningCLI (``fit``, ``validate``, ``test``,
``predict``, ``--ckpt_path``, ``--print_config``, ``--trainer.*``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.callbacks import LearningRateMonitor, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from ..data.classification import ClassificationDataModule
from ..data.detection_datamodule import CocoDetectionDataModule
from ..data.geolocalization import GeolocalizationDataModule
from ..data.segmentation import SegmentationDataModule
from ..tasks import ClassificationTask, DetectionTask, GeolocalizationTask, SegmentationTask
from ..tasks._progress import TrainingProgressBar
from ..tasks.checkpoint import TrainingCheckpoint

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


@dataclass(frozen=True)
class TaskSpec:
    model: type[LightningModule]
    data: type[LightningDataModule]
    default_config: str
    monitor: str
    # data attributes linked to the model's init argument of the same name, or "attribute->argument"
    links: tuple[str, ...] = field(default=())


TASKS = {
    "ssdlite": TaskSpec(DetectionTask, CocoDetectionDataModule, "ssdlite/shapes.yaml", "val/map",
                        ("num_classes", "image_size", "label_to_category_id", "category_names")),
    "classification": TaskSpec(ClassificationTask, ClassificationDataModule, "classification/glyphs.yaml", "val/acc1",
                               ("num_classes", "image_size", "class_names")),
    "geolocalization": TaskSpec(GeolocalizationTask, GeolocalizationDataModule, "geolocalization/geoscenes.yaml",
                                "val/acc_750km", ("partition_state->partition", "image_size")),
    "segmentation": TaskSpec(SegmentationTask, SegmentationDataModule, "segmentation/shapes.yaml", "val/miou",
                             ("num_classes", "image_size", "class_names")),
}


class MobileVisionCLI(LightningCLI):
    def __init__(self, task: str, **kwargs) -> None:
        self.task = TASKS[task]
        trainer_defaults = {
            "default_root_dir": f"outputs/{task}",
            "precision": "16-mixed" if torch.cuda.is_available() else "32-true",
            "callbacks": [TrainingProgressBar(), LearningRateMonitor("step")],
        }
        super().__init__(self.task.model, self.task.data, subclass_mode_model=True, subclass_mode_data=True,
                         trainer_defaults=trainer_defaults, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for link in self.task.links:
            source, _, target = link.partition("->")
            parser.link_arguments(f"data.{source}", f"model.init_args.{target or source}", apply_on="instantiate")
        # best-{epoch}.ckpt by the task's metric; last.ckpt = the final weights, also refreshed every 200 optimizer
        # steps so that a killed run resumes (--ckpt_path .../last.ckpt) close to where it stopped
        parser.add_lightning_class_args(TrainingCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": self.task.monitor, "checkpoint.mode": "max",
                             "checkpoint.save_last": True, "checkpoint.filename": "best-{epoch}",
                             "checkpoint.auto_insert_metric_name": False,
                             "checkpoint.save_on_train_epoch_end": True,
                             "checkpoint.save_last_every_n_steps": 200})

    def instantiate_trainer(self, **kwargs):
        trainer_config = self._get(self.config_init, "trainer", default={})
        if trainer_config.get("enable_progress_bar") is False:  # the rich bar is the default, not a must
            self.trainer_defaults["callbacks"] = [
                c for c in self.trainer_defaults["callbacks"] if not isinstance(c, RichProgressBar)]
        return super().instantiate_trainer(**kwargs)

    def _checkpoint_loads_safely(self) -> None:
        """Checkpoints given with ``--ckpt_path`` load with ``weights_only=True`` unless asked otherwise."""
        kwargs = self.config_init[self.subcommand]
        if kwargs.get("weights_only") is None:
            kwargs["weights_only"] = True

    before_fit = before_validate = before_test = before_predict = _checkpoint_loads_safely


def task_of(argv: list[str]) -> str:
    """The task named by ``--task NAME`` / ``--task=NAME``, else by the model ``class_path`` of the last
    ``--config PATH`` / ``--config=PATH`` file that has one (later configs override earlier ones), else
    ``ssdlite``."""
    task, configs = None, []
    for i, arg in enumerate(argv):
        key, eq, value = arg.partition("=")
        if not eq:
            value = argv[i + 1] if i + 1 < len(argv) else ""
        if key == "--task" and task is None:
            task = value
        elif key == "--config":
            configs.append(Path(value))
    if task:
        return task
    for config in reversed(configs):
        model = (yaml.safe_load(config.read_text()) or {}).get("model") if config.is_file() else None
        class_path = model.get("class_path", "") if isinstance(model, dict) else ""
        for name, spec in TASKS.items():
            if class_path and class_path.endswith(spec.model.__name__):
                return name
    return "ssdlite"


def expand_shortcuts(argv: list[str]) -> tuple[str, list[str]]:
    """Rewrite ``--task`` / ``--backbone`` shortcuts into plain LightningCLI arguments."""
    task = task_of(argv)
    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    args, backbone, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        key, _, value = arg.partition("=")
        if key in ("--task", "--backbone"):
            if not value:
                i += 1
                value = argv[i]
            if key == "--backbone":
                backbone = value
        else:
            args.append(arg)
        i += 1
    subcommand = args.pop(0) if args and args[0] in SUBCOMMANDS else "fit"
    user_config = any(a == "--config" or a.startswith("--config=") for a in args)
    default = [] if user_config else ["--config", str(CONFIG_DIR / TASKS[task].default_config)]
    out = [subcommand, *default, *args]
    if backbone:
        out += ["--model.init_args.backbone", backbone]
    return task, out


def main(argv: list[str] | None = None) -> MobileVisionCLI:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("tasks:", ", ".join(TASKS))
        return None  # type: ignore[return-value]
    task, args = expand_shortcuts(argv)
    if from_command_line:  # LightningCLI reads sys.argv itself
        sys.argv = [sys.argv[0], *args]
        return MobileVisionCLI(task)
    return MobileVisionCLI(task, args=args)


if __name__ == "__main__":
    main()
