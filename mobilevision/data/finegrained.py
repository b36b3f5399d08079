"""Fine-grained / classic classification benchmarks in their published on-disk layouts.

Nothing is ever downloaded (torchvision datasets are built with ``download=False``); missing data
raises ``FileNotFoundError`` saying where the files must go and how to fetch them.

``load_benchmark_split(name, root, split)`` returns a :class:`SplitSamples` (image files or, for
CIFAR, an in-memory uint8 array, plus int64 labels and the class names) that
:class:`mobilevision.data.classification.ClassificationDataset` turns into a dataset; the images
then go through the albumentations pipelines like any other.  ``split`` is ``"train"`` or
``"val"``; "val" is the benchmark's published test split (the fine-grained papers report test
accuracy), "train" its train (+ val, where published separately) split:

* ``stanford_dogs`` (120 classes): ``Images/<wnid-breed>/*.jpg`` and ``lists/train_list.mat`` /
  ``lists/test_list.mat`` (or ``train_list.txt`` / ``test_list.txt``; the lists may also sit in
  ``root``), from images.tar + lists.tar; train_list / test_list;
* ``cub200`` (200): ``CUB_200_2011/`` or its content: ``images.txt``, ``image_class_labels.txt``,
  ``train_test_split.txt``, ``classes.txt``, ``images/``; split by ``train_test_split.txt``;
* torchvision layouts under ``root`` (``download=False``): ``flowers102`` (102; ``flowers-102/``,
  train+val / test), ``fgvc_aircraft`` (100 variants; ``fgvc-aircraft-2013b/``, trainval / test),
  ``stanford_cars`` (196; ``stanford_cars/``, train / test), ``oxford_pets`` (37;
  ``oxford-iiit-pet/``, trainval / test), ``food101`` (101; ``food-101/``, train / test),
  ``cifar10`` / ``cifar100`` (``cifar-10-batches-py/`` / ``cifar-100-python/``, train / test).

Stanford Dogs' ``.mat`` lists are read with ``scipy.io.loadmat`` (scipy is imported lazily: it is
not a dependency of mobilevision); without scipy, give ``train_list.txt`` / ``test_list.txt``
with one ``Images``-relative path per line (``n02085620-Chihuahua/n02085620_5927.jpg``; anything
after the path on a line is ignored).  Labels always come from the breed folder of each path
(sorted folder names = label order, as in the official 1-based ``labels``; those, when present,
must match the folders one-to-one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UserError, first_few
from .image_io import check_files_exist

__all__ = [
    "BENCHMARK_DATASETS",
    "BENCHMARK_NUM_CLASSES",
    "SplitSamples",
    "benchmark_class_names",
    "check_files_exist",
    "load_benchmark_split",
]

#: Number of classes of each benchmark (known before the data is read).
BENCHMARK_NUM_CLASSES: dict[str, int] = {
    "stanford_dogs": 120,
    "cub200": 200,
    "flowers102": 102,
    "fgvc_aircraft": 100,
    "stanford_cars": 196,
    "oxford_pets": 37,
    "food101": 101,
    "cifar10": 10,
    "cifar100": 100,
}
BENCHMARK_DATASETS = tuple(BENCHMARK_NUM_CLASSES)


@dataclass
class SplitSamples:
    """One split of a dataset: ``files`` (image paths) or ``images`` (N x H x W x 3 uint8 array)."""

    class_names: list[str]
    labels: np.ndarray  # int64 (N,)
    files: list[str] | None = None
    images: np.ndarray | None = None
    name: str = ""
    skipped: list[str] = field(default_factory=list)  # non-image files passed over (image folders)

    def __len__(self) -> int:
        return len(self.labels)


def _require_root(name: str, root: str | os.PathLike | None) -> str:
    if root is None:
        raise UserError(f"dataset {name!r} needs root= (the folder holding the data)")
    return os.fspath(root)


# --------------------------------------------------------------------------------------------
# Stanford Dogs
# --------------------------------------------------------------------------------------------


def _dogs_list_file(root: str, split: str) -> str:
    base = "train_list" if split == "train" else "test_list"
    candidates = [os.path.join(d, base + ext) for d in (os.path.join(root, "lists"), root) for ext in (".mat", ".txt")]
    found = [c for c in candidates if os.path.isfile(c)]
    if not found:
        raise FileNotFoundError(
            f"Stanford Dogs: no {base}.mat / {base}.txt under {root} or {os.path.join(root, 'lists')}. Expected the "
            "published layout: <root>/Images/<wnid-breed>/*.jpg (images.tar) and <root>/lists/{train,test}_list.mat "
            "(lists.tar) from http://vision.stanford.edu/aditya86/ImageNetDogs/"
        )
    mats = [f for f in found if f.endswith(".mat")]
    txts = [f for f in found if f.endswith(".txt")]
    if mats:
        try:
            import scipy.io  # noqa: F401
        except ImportError:
            if not txts:
                raise ImportError(
                    f"reading {mats[0]} needs scipy (pip install scipy), which mobilevision does not depend on; "
                    f"alternatively put a {base}.txt next to it with one Images-relative path per line"
                ) from None
            return txts[0]
        return mats[0]
    return txts[0]


def _read_dogs_list(path: str) -> tuple[list[str], np.ndarray | None]:
    """(Images-relative paths, official 1-based labels or None)."""
    if path.endswith(".mat"):
        import scipy.io

        try:
            mat = scipy.io.loadmat(path, squeeze_me=True)
        except Exception as e:  # scipy raises various errors for malformed files
            raise UserError(f"cannot read Stanford Dogs list {path}: {type(e).__name__}: {e}") from e
        if "file_list" not in mat:
            keys = sorted(k for k in mat if not k.startswith("__"))
            raise UserError(f"{path}: no 'file_list' variable (keys: {keys})")
        files = [str(f).strip() for f in np.atleast_1d(mat["file_list"]).ravel()]
        labels = np.atleast_1d(mat["labels"]).ravel().astype(np.int64) if "labels" in mat else None
        if labels is not None and len(labels) != len(files):
            raise UserError(f"{path}: {len(files)} files but {len(labels)} labels")
        return files, labels
    files = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                files.append(line.split()[0])
    return files, None


def _dogs_split(root: str, split: str, class_folders: list[str] | None) -> tuple[list[str], np.ndarray, list[str]]:
    list_file = _dogs_list_file(root, split)
    rel, official = _read_dogs_list(list_file)
    if not rel:
        raise UserError(f"Stanford Dogs list {list_file} is empty")
    rel = [r.replace("\\", "/").removeprefix("Images/") for r in rel]
    bad = [r for r in rel if "/" not in r]
    if bad:
        raise UserError(f"{list_file}: entries must be '<breed folder>/<file>', got e.g. {bad[0]!r}")
    folders = [r.split("/", 1)[0] for r in rel]
    if class_folders is None:
        class_folders = sorted(set(folders))
    index = {c: i for i, c in enumerate(class_folders)}
    unknown = sorted(set(folders) - set(index))
    if unknown:
        raise UserError(
            f"Stanford Dogs: {list_file} has classes that are not in the training list: "
            f"{first_few(unknown, show=repr)}"
        )
    labels = np.array([index[c] for c in folders], dtype=np.int64)
    if official is not None:  # the official labels must map one-to-one onto the breed folders
        first: dict[str, int] = {}
        owner: dict[int, int] = {}
        for i, (folder, lab) in enumerate(zip(folders, official.tolist())):
            j = first.setdefault(folder, i)
            k = owner.setdefault(lab, i)
            if official[j] != lab or folders[k] != folder:
                other = j if official[j] != lab else k
                raise UserError(
                    f"Stanford Dogs: {list_file} is inconsistent: {rel[other]} has label {int(official[other])} "
                    f"but {rel[i]} has label {lab} (labels must match the breed folders one-to-one)"
                )
    files = [os.path.join(root, "Images", *r.split("/")) for r in rel]
    return files, labels, class_folders


def _dogs_name(folder: str) -> str:
    return folder.split("-", 1)[1] if "-" in folder else folder


# --------------------------------------------------------------------------------------------
# CUB-200-2011
# --------------------------------------------------------------------------------------------


def _cub_root(root: str) -> str:
    for r in (root, os.path.join(root, "CUB_200_2011")):
        if os.path.isfile(os.path.join(r, "images.txt")):
            return r
    raise FileNotFoundError(
        f"CUB-200-2011: no images.txt under {root} or {os.path.join(root, 'CUB_200_2011')}. Expected the published "
        "layout of CUB_200_2011.tgz: images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, images/ "
        "(https://www.vision.caltech.edu/datasets/cub_200_2011/)"
    )


def _read_id_table(path: str) -> dict[int, str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CUB-200-2011: {path} not found")
    table: dict[int, str] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            key, _, value = line.partition(" ")
            try:
                table[int(key)] = value.strip()
            except ValueError:
                raise UserError(f"{path}:{n}: expected '<id> <value>', got {line!r}") from None
    return table


def _cub_classes(root: str) -> tuple[list[int], list[str]]:
    classes = _read_id_table(os.path.join(root, "classes.txt"))
    ids = sorted(classes)
    names = [classes[i].split(".", 1)[1] if "." in classes[i] else classes[i] for i in ids]
    return ids, names


def _cub_split(root: str, split: str) -> tuple[list[str], np.ndarray, list[str]]:
    root = _cub_root(root)
    class_ids, names = _cub_classes(root)
    class_index = {c: i for i, c in enumerate(class_ids)}
    images = _read_id_table(os.path.join(root, "images.txt"))
    labels = _read_id_table(os.path.join(root, "image_class_labels.txt"))
    is_train = _read_id_table(os.path.join(root, "train_test_split.txt"))
    want = "1" if split == "train" else "0"
    files, out = [], []
    for image_id in sorted(images):
        if image_id not in labels or image_id not in is_train:
            raise UserError(
                f"CUB-200-2011: image id {image_id} ({images[image_id]}) is missing from "
                + ("image_class_labels.txt" if image_id not in labels else "train_test_split.txt")
            )
        if is_train[image_id] != want:
            continue
        cls = int(labels[image_id])
        if cls not in class_index:
            raise UserError(f"CUB-200-2011: image id {image_id} has class id {cls}, which is not in classes.txt")
        files.append(os.path.join(root, "images", *images[image_id].split("/")))
        out.append(class_index[cls])
    if not files:
        raise UserError(f"CUB-200-2011: no {split} images in {os.path.join(root, 'train_test_split.txt')}")
    return files, np.array(out, dtype=np.int64), names


# --------------------------------------------------------------------------------------------
# torchvision datasets
# --------------------------------------------------------------------------------------------

# name -> (torchvision class, folder under root, [(kwargs, ...) for train], [(kwargs, ...) for val])
_TORCHVISION: dict[str, tuple[str, str, tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]] = {
    "flowers102": ("Flowers102", "flowers-102", ({"split": "train"}, {"split": "val"}), ({"split": "test"},)),
    "fgvc_aircraft": (
        "FGVCAircraft",
        "fgvc-aircraft-2013b",
        ({"split": "trainval", "annotation_level": "variant"},),
        ({"split": "test", "annotation_level": "variant"},),
    ),
    "stanford_cars": ("StanfordCars", "stanford_cars", ({"split": "train"},), ({"split": "test"},)),
    "oxford_pets": ("OxfordIIITPet", "oxford-iiit-pet", ({"split": "trainval"},), ({"split": "test"},)),
    "food101": ("Food101", "food-101", ({"split": "train"},), ({"split": "test"},)),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", ({"train": True},), ({"train": False},)),
    "cifar100": ("CIFAR100", "cifar-100-python", ({"train": True},), ({"train": False},)),
}


def _torchvision_missing(name: str, root: str, error: BaseException) -> FileNotFoundError:
    cls, folder, train_kwargs, _ = _TORCHVISION[name]
    where = os.path.join(root, folder)
    if name == "stanford_cars":
        how = (
            "torchvision cannot download it (the original URL is gone): get the Stanford Cars archives (e.g. the "
            f"Kaggle mirror) and arrange them as {where}/devkit/cars_meta.mat, devkit/cars_train_annos.mat, "
            "cars_train/, cars_test/, cars_test_annos_withlabels.mat"
        )
    else:
        kwargs = ", ".join(f"{k}={v!r}" for k, v in train_kwargs[0].items())
        how = (
            "mobilevision never downloads; fetch it once with "
            f"python -c \"import torchvision; torchvision.datasets.{cls}({root!r}, {kwargs}, download=True)\" "
            "(one download holds all splits)"
        )
    return FileNotFoundError(
        f"{name}: dataset not found under {where} (torchvision {cls} layout, root={root!r}): "
        f"{type(error).__name__}: {error}. {how}"
    )


def _torchvision_dataset(name: str, root: str, kwargs: dict[str, Any]):
    import torchvision.datasets as tvd

    cls_name, folder, _, _ = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    try:
        return cls(root, download=False, **kwargs)
    except ImportError as e:
        raise ImportError(f"{name}: torchvision's {cls_name} needs {e.name or 'a missing module'}: {e}") from e
    except (RuntimeError, OSError, ValueError) as e:
        raise _torchvision_missing(name, root, e) from e


def _torchvision_samples(ds: Any) -> tuple[list[str] | None, np.ndarray | None, list[int]]:
    """(files, images, labels) of a torchvision dataset, reading its file / array lists."""
    if hasattr(ds, "data") and hasattr(ds, "targets"):  # CIFAR
        return None, np.ascontiguousarray(ds.data, dtype=np.uint8), list(ds.targets)
    if hasattr(ds, "_samples"):  # StanfordCars
        return [str(p) for p, _ in ds._samples], None, [int(t) for _, t in ds._samples]
    for files_attr in ("_image_files", "_images"):
        if hasattr(ds, files_attr) and hasattr(ds, "_labels"):
            return [str(p) for p in getattr(ds, files_attr)], None, [int(t) for t in ds._labels]
    raise RuntimeError(  # pragma: no cover - a torchvision version with other internals
        f"cannot read the sample list of torchvision {type(ds).__name__} (unexpected torchvision internals)"
    )


def _torchvision_split(name: str, root: str, split: str) -> SplitSamples:
    _, _, train_kwargs, val_kwargs = _TORCHVISION[name]
    files: list[str] = []
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    classes: list[str] | None = None
    for kwargs in train_kwargs if split == "train" else val_kwargs:
        ds = _torchvision_dataset(name, root, kwargs)
        f, a, t = _torchvision_samples(ds)
        if f is not None:
            files += f
        if a is not None:
            arrays.append(a)
        labels += t
        if classes is None:
            classes = [str(c) for c in getattr(ds, "classes", [])]
    n = BENCHMARK_NUM_CLASSES[name]
    if not classes or len(classes) != n:
        classes = [str(i) for i in range(n)]
    labels_arr = np.asarray(labels, dtype=np.int64)
    if len(labels_arr) and (labels_arr.min() < 0 or labels_arr.max() >= n):
        raise UserError(f"{name}: labels outside 0..{n - 1} in {root}")
    if arrays:
        return SplitSamples(classes, labels_arr, images=np.concatenate(arrays), name=f"{name}/{split}")
    return SplitSamples(classes, labels_arr, files=files, name=f"{name}/{split}")


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------


def load_benchmark_split(name: str, root: str | os.PathLike | None, split: str) -> SplitSamples:
    """Files / arrays, labels and class names of ``split`` ("train" or "val") of benchmark ``name``."""
    if name not in BENCHMARK_NUM_CLASSES:
        raise UserError(f"unknown benchmark {name!r}; choose one of {BENCHMARK_DATASETS}")
    if split not in ("train", "val"):
        raise UserError(f"split must be 'train' or 'val', got {split!r}")
    root = _require_root(name, root)
    if name == "stanford_dogs":
        train_folders = _dogs_split(root, "train", None)[2] if split == "val" else None
        files, labels, folders = _dogs_split(root, split, train_folders)
        samples = SplitSamples([_dogs_name(c) for c in folders], labels, files=files, name=f"{name}/{split}")
    elif name == "cub200":
        files, labels, names = _cub_split(root, split)
        samples = SplitSamples(names, labels, files=files, name=f"{name}/{split}")
    else:
        samples = _torchvision_split(name, root, split)
    if samples.files is not None:
        check_files_exist(samples.files, f"{name} ({split}) under {root}")
    return samples


def benchmark_class_names(name: str, root: str | os.PathLike | None) -> list[str]:
    """Class names (label order) read from the dataset's metadata (raises if the data is missing)."""
    if name not in BENCHMARK_NUM_CLASSES:
        raise UserError(f"unknown benchmark {name!r}; choose one of {BENCHMARK_DATASETS}")
    root = _require_root(name, root)
    if name == "stanford_dogs":
        return [_dogs_name(c) for c in _dogs_split(root, "train", None)[2]]
    if name == "cub200":
        return _cub_classes(_cub_root(root))[1]
    return load_benchmark_split(name, root, "train").class_names
