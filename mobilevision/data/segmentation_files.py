"""Semantic segmentation files: image / mask pairs in the layouts annotation tools and benchmarks publish (CVAT and
PASCAL VOC, Roboflow, images/ + masks/ folders, ADE20K, Cityscapes, SBD), masks decoded to class indices (index
PNGs, colour masks through a label map), and the up-front check of every pair (:func:`check_samples`).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import UserError, first_few
from ..masks import IGNORE_INDEX, MASK_EXTENSIONS, read_index_mask
from .image_io import TRANSPOSING_ORIENTATIONS, is_image_file, missing_files, read_image_header, walk_files

__all__ = ["ADE20K_CLASSES", "CITYSCAPES_CLASSES", "SegmentationSamples", "VOC_CLASSES", "check_samples",
           "image_folder_samples", "pair_by_stem", "read_cvat_labelmap", "read_label_mask", "read_roboflow_classes"]

logger = logging.getLogger(__name__)

SEGMENTATION_DATASETS = ("shapes", "folder", "voc", "ade20k", "cityscapes")

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")

#: ADE20K SceneParsing's 150 classes (objectInfo150 order, first synonym): mask value ``v`` is class ``v - 1``.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet", "sidewalk",
    "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water", "painting", "sofa",
    "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
    "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand",
    "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat",
    "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt",
    "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal",
    "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)

#: Cityscapes' 19 evaluation classes (train ids 0..18, torchvision's ``Cityscapes.classes``).
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")

#: VOC's "void" colour (object borders) in colour masks: ignored unless the label map names it.
_VOC_VOID_COLOR = (224, 224, 192)
_FOLDER_LAYOUTS_HELP = (
    "dataset='folder' reads one of: (a) a CVAT 'Segmentation mask 1.1' / PASCAL VOC export: JPEGImages/, "
    "SegmentationClass/ (colour PNGs), labelmap.txt, ImageSets/Segmentation/train.txt and val.txt; (b) a Roboflow "
    "'Semantic Segmentation Masks' export: train/ and valid/ holding x.jpg, x_mask.png and _classes.csv; (c) "
    "images/train, masks/train, images/val, masks/val (index PNGs matched by file stem; classes.txt, one name per "
    "line, optional) - or pass train_images, train_masks, val_images, val_masks"
)


# --------------------------------------------------------------------------------------------
# samples and mask decoding
# --------------------------------------------------------------------------------------------


@dataclass
class SegmentationSamples:
    """One split: image files, their mask files (``None``: unlabelled) and how mask values become labels.

    ``lut`` maps a stored value ``v`` (index / grayscale masks) to the label ``lut[v]``, ``-1`` (or a value past its
    end) meaning "not a valid value"; ``colors`` maps the RGB colours of colour masks to labels.  ``check_labels``:
    decode every mask when the dataset is built (a user's own data) instead of when it is loaded.
    """

    images: list[str]
    masks: list[str | None]
    names: list[str]
    class_names: list[str]
    name: str
    lut: np.ndarray | None = None
    colors: dict[tuple[int, int, int], int] | None = None
    check_labels: bool = False

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, keep: Sequence[int]) -> SegmentationSamples:
        return replace(self, images=[self.images[i] for i in keep], masks=[self.masks[i] for i in keep],
                       names=[self.names[i] for i in keep])


def _read_index(path: str) -> np.ndarray:
    """:func:`read_index_mask`, also accepting an RGB image whose three channels are equal (a grayscale mask
    saved as RGB)."""
    try:
        return read_index_mask(path)
    except ValueError:
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB")) if img.mode in ("RGB", "RGBA") else None
        except OSError:
            rgb = None
        if rgb is not None and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return rgb[..., 0].astype(np.int64)
        raise


def _color_labels(path: str, colors: dict[tuple[int, int, int], int]) -> np.ndarray:
    """Labels of a colour mask (RGB or palette PNG) through ``colors``; a grayscale one is read as indices."""
    try:
        with Image.open(path) as img:
            if img.mode in ("L", "I", "I;16", "I;16B", "I;16L"):
                return np.asarray(img).astype(np.int64)
            rgb = np.asarray(img.convert("RGB")).astype(np.int32)
    except OSError as e:
        raise UserError(f"cannot read mask {path}: {e}") from e
    codes, inverse = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2], return_inverse=True)
    table = np.array([colors.get((int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255), -1) for c in codes], np.int64)
    unknown = [(int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255) for c in codes[table < 0]]
    if unknown:
        shown = ", ".join(f"({r}, {g}, {b})" for r, g, b in unknown[:4])
        raise UserError(f"{path}: colour(s) {shown} are not in the label map (known: "
                         f"{', '.join(str(c) for c in list(colors)[:8])}{' ...' if len(colors) > 8 else ''})")
    return table[inverse.reshape(rgb.shape[:2])]


def _decode_mask(path: str, lut: np.ndarray | None = None,
                 colors: dict[tuple[int, int, int], int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(stored values, labels)`` int64 [H, W] of a mask file (index / grayscale / colour PNG, SBD ``.mat``)."""
    if path.endswith(".mat"):  # SBD: scipy is a torchvision SBDataset requirement
        from scipy.io import loadmat

        raw = np.asarray(loadmat(path)["GTcls"][0]["Segmentation"][0]).astype(np.int64)
    elif colors is not None:
        labels = _color_labels(path, colors)
        return labels, labels
    else:
        raw = _read_index(path)
    if lut is None:
        return raw, raw
    labels = np.full(raw.shape, -1, dtype=np.int64)
    inside = (raw >= 0) & (raw < len(lut))
    labels[inside] = lut[raw[inside]]
    return raw, labels


def read_label_mask(path: str | os.PathLike, lut: np.ndarray | None = None,
                    colors: dict[tuple[int, int, int], int] | None = None) -> np.ndarray:
    """Labels int64 [H, W] of a mask file: index values (through ``lut`` if given) or colours through ``colors``."""
    return _decode_mask(os.fspath(path), lut, colors)[1]


def _label_problem(path: str, raw: np.ndarray, labels: np.ndarray, num_classes: int) -> str | None:
    bad = (labels < 0) | ((labels >= num_classes) & (labels != IGNORE_INDEX))
    if not bad.any():
        return None
    values = np.unique(raw[bad]).tolist()
    return (f"{path}: mask value(s) {values[:8]}{' ...' if len(values) > 8 else ''} are not classes "
            f"0..{num_classes - 1} nor the ignore index {IGNORE_INDEX}")


def _size_problem(image: str, mask: str, image_wh: tuple[int, int], mask_wh: tuple[int, int],
                  orientation: int = 1) -> str | None:
    if tuple(mask_wh) == tuple(image_wh):
        return None
    msg = (f"{mask}: mask is {mask_wh[0]}x{mask_wh[1]} but its image {image} is {image_wh[0]}x{image_wh[1]} "
           "(width x height)")
    if orientation in TRANSPOSING_ORIENTATIONS and tuple(mask_wh) == (image_wh[1], image_wh[0]):
        msg += (f"; the mask matches the image as stored, before its EXIF orientation ({orientation}: rotated) is "
                "applied - masks must be in the displayed orientation (re-export the mask from the rotated image, "
                "or rotate the image's pixels and drop its EXIF orientation)")
    return msg


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def check_samples(samples: SegmentationSamples, num_classes: int, skip_bad: bool = False) -> SegmentationSamples:
    """Check every sample (see the module docstring); return the usable ones (``skip_bad``) or raise naming the
    files: ``FileNotFoundError`` when only files are missing, else ``ValueError``."""
    problems: dict[int, str] = {}
    missing_images = set(missing_files(samples.images))
    missing_masks = set(missing_files([m for m in samples.masks if m is not None]))
    for i, (image, mask) in enumerate(zip(samples.images, samples.masks)):
        if image in missing_images:
            problems[i] = f"{image}: image file not found"
        elif mask in missing_masks:
            problems[i] = f"{image}: no mask ({mask} not found)"
    only_missing = bool(problems)
    present: set[int] = set()  # labels seen in the decoded masks

    def check(i: int) -> str | None:
        image, mask = samples.images[i], samples.masks[i]
        try:
            (w, h), orientation = read_image_header(image)
        except OSError as e:  # the message names the file
            return str(e)
        if mask is None:
            return None
        shown = (h, w) if orientation in TRANSPOSING_ORIENTATIONS else (w, h)
        if samples.check_labels:  # decode: labels and colours checked too
            try:
                raw, labels = _decode_mask(mask, samples.lut, samples.colors)
            except ValueError as e:
                return str(e)
            present.update(np.unique(labels).tolist())
            return (_size_problem(image, mask, shown, labels.shape[::-1], orientation)
                    or _label_problem(mask, raw, labels, num_classes))
        if mask.endswith(".mat"):
            return None  # sizes checked when loaded
        try:
            mask_wh, _ = read_image_header(mask)
        except OSError as e:
            return f"{e} (the mask of {image})"
        return _size_problem(image, mask, shown, mask_wh, orientation)

    todo = [i for i in range(len(samples)) if i not in problems]
    with ThreadPoolExecutor(max_workers=_threads()) as pool:
        for i, problem in zip(todo, pool.map(check, todo)):
            if problem is not None:
                problems[i], only_missing = problem, False
    if problems:
        messages = [problems[i] for i in sorted(problems)]
        if not skip_bad:
            error = FileNotFoundError if only_missing else ValueError
            raise error(f"{samples.name}: {len(messages)} of {len(samples)} samples are unusable (skip_bad=True "
                        f"skips them): {first_few(messages, sep='; ')}")
        logger.warning("%s: skipped %d of %d samples (skip_bad): %s", samples.name, len(messages), len(samples),
                       first_few(messages, sep="; "))
        samples = samples.subset([i for i in range(len(samples)) if i not in problems])
    if not len(samples):
        raise UserError(f"{samples.name}: no usable samples")
    if samples.check_labels and samples.lut is None and samples.colors is None and present <= {0, IGNORE_INDEX} \
            and IGNORE_INDEX in present:
        raise UserError(f"{samples.name}: the masks hold only the values 0 and {IGNORE_INDEX}, and {IGNORE_INDEX} is "
                         "the ignore index: nothing but class 0 would be learned. Binary masks saved as 0 / 255? Pass "
                         "binary_masks=True (0 -> class 0, 255 -> class 1), or save the masks as 0 / 1")
    return samples


# --------------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------------


def _walk(folder: str, keep: Any) -> dict[str, str]:
    """``relative stem -> path`` of the files under ``folder`` for which ``keep(name)``; hidden entries skipped."""
    found: dict[str, str] = {}
    for path in walk_files(folder, keep):
        stem = Path(os.path.relpath(path, folder)).with_suffix("").as_posix()
        if stem in found:
            raise UserError(f"{folder}: two files named {stem!r} ({found[stem]}, {path}): cannot tell which "
                             "one a mask belongs to")
        found[stem] = path
    return found


def _is_mask_file(name: str) -> bool:
    return name.lower().endswith(MASK_EXTENSIONS)


def pair_by_stem(images_dir: str, masks_dir: str, class_names: Sequence[str], name: str, *,
                 mask_suffix: str = "", **kwargs: Any) -> SegmentationSamples:
    """Images under ``images_dir`` (recursively) with the mask of the same relative stem (+ ``mask_suffix``) under
    ``masks_dir``; a missing mask is recorded as the expected ``.png`` path (reported by :func:`check_samples`)."""
    for folder, what in ((images_dir, "image"), (masks_dir, "mask")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{name}: {what} folder {folder} not found")
    is_mask = (lambda n: _is_mask_file(n) and Path(n).stem.endswith(mask_suffix)) if mask_suffix else _is_mask_file
    images = _walk(images_dir, lambda n: is_image_file(n) and not (mask_suffix and is_mask(n)))
    if not images:
        raise FileNotFoundError(f"{name}: no images in {images_dir}")
    masks = _walk(masks_dir, is_mask)
    if mask_suffix:
        masks = {stem[: -len(mask_suffix)]: path for stem, path in masks.items()}
    unused = sorted(set(masks) - set(images))
    if unused:
        logger.warning("%s: %d mask(s) without an image, left out: %s", name, len(unused),
                       first_few(unused, 3, sep="; "))
    stems = list(images)
    return SegmentationSamples(
        images=[images[s] for s in stems],
        masks=[masks.get(s, os.path.join(masks_dir, s + mask_suffix + ".png")) for s in stems],
        names=[os.path.relpath(images[s], images_dir).replace(os.sep, "/") for s in stems],
        class_names=list(class_names), name=name, **kwargs)


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8-sig") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


def read_cvat_labelmap(path: str) -> tuple[list[str], dict[tuple[int, int, int], int]]:
    """Class names and ``colour -> label`` of a CVAT / Datumaro ``labelmap.txt`` (``name:r,g,b:parts:actions``)."""
    names, colors = [], {}
    for line in _read_lines(path):
        fields = line.split(":")
        try:
            rgb = tuple(int(v) for v in fields[1].split(","))
        except (IndexError, ValueError):
            rgb = ()
        if len(rgb) != 3:
            raise UserError(f"{path}: cannot read the line {line!r} (expected name:r,g,b::)")
        if rgb in colors:
            raise UserError(f"{path}: {fields[0]!r} and {names[colors[rgb]]!r} have the same colour {rgb}")
        colors[rgb] = len(names)
        names.append(fields[0].strip())
    if not names:
        raise UserError(f"{path} lists no labels")
    colors.setdefault(_VOC_VOID_COLOR, IGNORE_INDEX)
    return names, colors


def read_roboflow_classes(path: str) -> tuple[list[str], np.ndarray]:
    """Class names (by pixel value) and the ``value -> label`` table of a Roboflow ``_classes.csv``
    (``Pixel Value, Class``)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [[c.strip() for c in row] for row in csv.reader(f) if any(c.strip() for c in row)]
    try:
        pairs = sorted((int(r[0]), r[1]) for r in rows[1:])
    except (IndexError, ValueError) as e:
        raise UserError(f"{path}: expected the columns 'Pixel Value, Class' ({e})") from e
    if not pairs or len({v for v, _ in pairs}) != len(pairs) or not 0 <= pairs[0][0] <= pairs[-1][0] < 255:
        raise UserError(f"{path}: pixel values must be distinct, in 0..254 (got {[v for v, _ in pairs]})")
    lut = np.full(256, -1, dtype=np.int64)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    for label, (value, _) in enumerate(pairs):
        lut[value] = label
    return [n for _, n in pairs], lut


def _first_dir(*candidates: str) -> str | None:
    return next((c for c in candidates if os.path.isdir(c)), None)


def _voc_root(root: str) -> str:
    """The folder holding ``VOCdevkit`` (``root`` may also be ``VOCdevkit`` or ``VOC2012`` itself)."""
    r = os.path.abspath(root)
    for base in (r, os.path.dirname(r), os.path.dirname(os.path.dirname(r))):
        if os.path.isdir(os.path.join(base, "VOCdevkit", "VOC2012")):
            return base
    return root


def _voc_split(root: str, split: str, sbd: bool, sbd_root: str | None) -> SegmentationSamples:
    from torchvision.datasets import VOCSegmentation

    base = _voc_root(root)
    voc_dir = os.path.join(base, "VOCdevkit", "VOC2012")
    try:
        voc = VOCSegmentation(base, year="2012", image_set=split, download=False)
    except (RuntimeError, OSError) as e:
        raise FileNotFoundError(
            f"voc: PASCAL VOC 2012 not found under {root} ({type(e).__name__}: {e}); expected "
            f"{voc_dir}/JPEGImages, SegmentationClass, ImageSets/Segmentation/{split}.txt (from "
            "VOCtrainval_11-May-2012.tar; mobilevision never downloads)") from e
    images, masks = list(voc.images), list(voc.masks)
    name = f"voc {split}"
    if split == "train" and sbd:
        aug_dir = os.path.join(voc_dir, "SegmentationClassAug")
        aug_list = os.path.join(voc_dir, "ImageSets", "Segmentation", "trainaug.txt")
        if os.path.isdir(aug_dir) and os.path.isfile(aug_list):  # the usual 10582-image "trainaug" layout
            stems = [Path(line.split()[0]).stem for line in _read_lines(aug_list)]
            images = [os.path.join(voc_dir, "JPEGImages", s + ".jpg") for s in stems]
            masks = [os.path.join(aug_dir, s + ".png") for s in stems]
            name = "voc trainaug"
        else:
            images, masks = _add_sbd(root, base, voc_dir, sbd_root, images, masks)
            name = "voc train + sbd"
    return SegmentationSamples(images, masks, [os.path.basename(p) for p in images], list(VOC_CLASSES), name)


def _add_sbd(root: str, base: str, voc_dir: str, sbd_root: str | None, images: list[str],
             masks: list[str]) -> tuple[list[str], list[str]]:
    """VOC train + SBD's images that are neither in it nor in VOC 2012 val (torchvision ``SBDataset``)."""
    from torchvision.datasets import SBDataset

    sbd_dir = sbd_root or _first_dir(os.path.join(base, "SBD"), os.path.join(root, "SBD"),
                                     os.path.join(base, "benchmark_RELEASE", "dataset"))
    if sbd_dir is None:
        raise FileNotFoundError(
            f"voc: voc_sbd=True but neither {voc_dir}/SegmentationClassAug + ImageSets/Segmentation/trainaug.txt "
            f"nor SBD ({os.path.join(base, 'SBD')}: img/, cls/, train.txt, val.txt) was found; pass sbd_root=, or "
            "voc_sbd=False to train on the 1464 VOC train images only")
    sets = ["train_noval"] if os.path.isfile(os.path.join(sbd_dir, "train_noval.txt")) else ["train", "val"]
    val_stems = set(_read_lines(os.path.join(voc_dir, "ImageSets", "Segmentation", "val.txt")))
    seen = {Path(p).stem for p in images}
    images, masks = list(images), list(masks)
    for image_set in sets:
        try:
            sbd = SBDataset(sbd_dir, image_set=image_set, mode="segmentation", download=False)
        except (RuntimeError, OSError) as e:
            raise FileNotFoundError(f"voc: cannot read SBD under {sbd_dir} ({type(e).__name__}: {e}); expected "
                                    "img/, cls/ and train.txt, val.txt (or train_noval.txt)") from e
        for image, mask in zip(sbd.images, sbd.masks):
            stem = Path(image).stem
            if stem not in seen and stem not in val_stems:
                seen.add(stem)
                images.append(image)
                masks.append(mask)
    return images, masks


def _ade20k_split(root: str, split: str) -> SegmentationSamples:
    base = _first_dir(os.path.join(root, "ADEChallengeData2016"), root)
    sub = "training" if split == "train" else "validation"
    images_dir, masks_dir = os.path.join(base, "images", sub), os.path.join(base, "annotations", sub)
    if not os.path.isdir(images_dir) or not os.path.isdir(masks_dir):
        raise FileNotFoundError(f"ade20k: {images_dir} / {masks_dir} not found (ADEChallengeData2016.zip of the "
                                "MIT SceneParsing benchmark; mobilevision never downloads)")
    lut = np.full(256, -1, dtype=np.int64)  # 0 "other" -> ignored, 1..150 -> 0..149
    lut[0] = IGNORE_INDEX
    lut[1:151] = np.arange(150)
    return pair_by_stem(images_dir, masks_dir, ADE20K_CLASSES, f"ade20k {sub}", lut=lut)


def _cityscapes_split(root: str, split: str) -> SegmentationSamples:
    from torchvision.datasets import Cityscapes

    try:
        ds = Cityscapes(root, split=split, mode="fine", target_type="semantic")
    except (RuntimeError, OSError) as e:
        raise FileNotFoundError(f"cityscapes: not found under {root} ({type(e).__name__}: {e}); expected "
                                f"leftImg8bit/{split}/<city>/*_leftImg8bit.png and gtFine/{split}/<city>/"
                                "*_gtFine_labelIds.png (mobilevision never downloads)") from e
    lut = np.full(256, -1, dtype=np.int64)
    for c in Cityscapes.classes:
        if 0 <= c.id < 256:
            lut[c.id] = c.train_id if 0 <= c.train_id < IGNORE_INDEX else IGNORE_INDEX
    order = sorted(range(len(ds.images)), key=lambda i: ds.images[i])
    images = [ds.images[i] for i in order]
    return SegmentationSamples(images, [ds.targets[i][0] for i in order],
                               [os.path.relpath(p, ds.images_dir).replace(os.sep, "/") for p in images],
                               list(_cityscapes_classes()), f"cityscapes {split}", lut=lut)


def _cityscapes_classes() -> tuple[str, ...]:
    from torchvision.datasets import Cityscapes

    by_id = {c.train_id: c.name for c in Cityscapes.classes if 0 <= c.train_id < IGNORE_INDEX}
    return tuple(by_id[i] for i in range(len(by_id)))


def image_folder_samples(folder: str, class_names: Sequence[str] = ()) -> SegmentationSamples:
    """The images under ``folder`` (recursively, sorted), without masks (prediction)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    images = list(_walk(folder, is_image_file).values())
    if not images:
        raise FileNotFoundError(f"no images in {folder}")
    return SegmentationSamples(images, [None] * len(images),
                               [os.path.relpath(p, folder).replace(os.sep, "/") for p in images],
                               list(class_names), folder)


