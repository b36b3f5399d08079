"""``mobilevision train``: LightningCLI with task shortcuts.

``mobilevision train --task ssdlite --backbone mobilenet_v2`` is short for
``mobilevision train fit --config configs/ssdlite/shapes.yaml --model.init_args.backbone mobilenet_v2
--model.init_args.width null --model.init_args.backbone_kwargs null``: ``--task`` picks the LightningModule /
data module pair and, unless ``--config`` is given, the task's default config (on the embedded dataset);
``--backbone B`` gives the registered backbone ``B`` as registered (its own width, depth and resolution), with
the recipe's other settings kept; ``--backbone B@0.5`` (or ``--model.init_args.width 0.5``) asks for a width
multiplier, an error for a family that has none (MobileOne). Without ``--backbone`` the recipe runs as written.
The subcommand defaults to ``fit``. Everything else is plain LightningCLI (``fit``, ``validate``, ``test``,
``predict``, ``--ckpt_path``, ``--print_config``, ``--trainer.*``, ``--trainer.devices 2 --trainer.strategy
ddp``).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.callbacks import LearningRateMonitor, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from ..backbones import check_backbone_kwargs, get_backbone_cfg, list_backbones
from ..errors import UserError
from ..data.attributes import AttributesDataModule
from ..data.classification import ClassificationDataModule
from ..data.detection_datamodule import CocoDetectionDataModule
from ..data.geolocalization import GeolocalizationDataModule
from ..data.segmentation import SegmentationDataModule
from ..tasks import AttributesTask, ClassificationTask, DetectionTask, GeolocalizationTask, SegmentationTask
from ..tasks._progress import TrainingProgressBar
from ..tasks.checkpoint import TrainingCheckpoint

#: The recipes, shipped inside the package (``mobilevision/configs``): ``--config configs/ssdlite/shapes.yaml``
#: finds them from any folder and from an installed wheel (see :func:`resolve_config`).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
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
    "attributes": TaskSpec(AttributesTask, AttributesDataModule, "attributes/glyph_attributes.yaml", "val/map",
                           ("num_attributes", "image_size", "attribute_names")),
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

    def before_instantiate_classes(self) -> None:
        """The backbone and its knobs are checked before anything is built (a clear error, not jsonargparse's)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        model = config.get("model")
        init = model.get("init_args") if model is not None else None
        if init is None or init.get("backbone") is None:
            return
        name = init.get("backbone")
        if name not in list_backbones():
            raise BackboneChoiceError(f"unknown backbone {name!r}; choose one of: {', '.join(list_backbones())}")
        knobs = dict(init.get("backbone_kwargs") or {})
        if init.get("width") is not None:
            knobs["width"] = init.get("width")
        try:
            check_backbone_kwargs(name, knobs)
        except ValueError as e:
            raise BackboneChoiceError(str(e)) from None
        weights = init.get("backbone_weights")
        if isinstance(weights, str) and weights.lower() == "imagenet":
            self._use_weights_pipeline(name, config.get("data"))

    @staticmethod
    def _use_weights_pipeline(backbone: str, data) -> None:
        """A model that starts from ImageNet weights sees its images as those weights were trained on: the data
        options left unset (None) take the backbone's mean / std / resize_ratio / interpolation
        (:meth:`~mobilevision.backbones.BackboneCfg.data_config`); the ones set on the command line or in the
        recipe stay."""
        init = data.get("init_args") if data is not None else None
        if init is None:
            return
        for key, value in get_backbone_cfg(backbone).data_config().items():
            if key in init and init[key] is None:
                init[key] = value


class BackboneChoiceError(UserError):
    """``--backbone`` / ``--model.init_args.{backbone,width,backbone_kwargs}`` name no registered backbone or a
    knob it does not have."""


def resolve_config(path: str) -> str:
    """``path`` when that file exists; else the shipped recipe it names (``configs/ssdlite/shapes.yaml`` or
    ``ssdlite/shapes.yaml`` -> ``CONFIG_DIR/ssdlite/shapes.yaml``); else ``path`` unchanged (LightningCLI then
    says it is missing)."""
    if not path or Path(path).is_file():
        return path
    rel = Path(path).as_posix()
    for candidate in (rel, rel[len("configs/"):] if rel.startswith("configs/") else None):
        if candidate and not Path(candidate).is_absolute() and (CONFIG_DIR / candidate).is_file():
            return str(CONFIG_DIR / candidate)
    return path


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
            configs.append(Path(resolve_config(value)))
    if task:
        return task
    for config in reversed(configs):
        model = (yaml.safe_load(config.read_text()) or {}).get("model") if config.is_file() else None
        class_path = model.get("class_path", "") if isinstance(model, dict) else ""
        for name, spec in TASKS.items():
            if class_path and class_path.endswith(spec.model.__name__):
                return name
    return "ssdlite"


def parse_backbone(spec: str) -> tuple[str, float | None]:
    """``"mobilenet_v2"`` -> ("mobilenet_v2", None); ``"mobilenet_v2@0.5"`` -> ("mobilenet_v2", 0.5)."""
    name, at, width = spec.partition("@")
    if name not in list_backbones():
        raise BackboneChoiceError(f"unknown backbone {name!r}; choose one of: {', '.join(list_backbones())}")
    if not at:
        return name, None
    try:
        value = float(width)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise BackboneChoiceError(f"--backbone {spec}: the width after '@' must be a positive number, got {width!r}")
    return name, value


def expand_shortcuts(argv: list[str]) -> tuple[str, list[str]]:
    """Rewrite ``--task`` / ``--backbone`` shortcuts into plain LightningCLI arguments.

    ``--backbone B[@W]`` sets the model's backbone and resets the recipe's ``width`` and ``backbone_kwargs`` (to
    ``W`` and nothing), so that ``B`` is the backbone as registered, unless the command line sets them itself."""
    task = task_of(argv)
    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    args, backbone, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        key, eq, value = arg.partition("=")
        if key == "--config":  # a shipped recipe is found from any folder
            if eq:
                args.append(f"--config={resolve_config(value)}")
            else:
                args.append(arg)
                if i + 1 < len(argv):
                    i += 1
                    args.append(resolve_config(argv[i]))
        elif key in ("--task", "--backbone"):
            if not value:
                i += 1
                if i == len(argv):
                    raise SystemExit(f"{key} needs a value")
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
        name, width = parse_backbone(backbone)
        out += ["--model.init_args.backbone", name]
        given = {a.partition("=")[0] for a in args}
        if "--model.init_args.width" not in given:
            out += ["--model.init_args.width", "null" if width is None else repr(width)]
        elif width is not None:
            raise BackboneChoiceError(f"--backbone {backbone} and --model.init_args.width both set the width")
        if not any(a.startswith("--model.init_args.backbone_kwargs") for a in given):
            out += ["--model.init_args.backbone_kwargs", "null"]
    return task, out


def main(argv: list[str] | None = None) -> MobileVisionCLI | int:
    """Run ``mobilevision train ARGV``. ``sys.argv`` is never rewritten: under DDP, Lightning starts the other
    ranks with the command line as typed, and each parses it again."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("tasks:", ", ".join(TASKS))
        print("backbones:", ", ".join(list_backbones()))
        return 0
    try:
        task, args = expand_shortcuts(argv)
        with warnings.catch_warnings():  # args= is how this command passes its rewritten command line
            warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended", UserWarning)
            return MobileVisionCLI(task, args=args, parser_kwargs={"prog": "mobilevision train"})
    except (UserError, OSError) as e:  # bad input: one line naming the file or option (a bug keeps its traceback)
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    result = main()
    raise SystemExit(result if isinstance(result, int) else 0)
