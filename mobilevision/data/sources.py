"""What ``mobilevision predict`` runs on: images, folders, glob patterns and videos, streamed one image or frame at a
time so that memory stays bounded on any number of files and on long videos.

    files = resolve_sources(["photos/", "shots/**/*.png", "clip.mp4"])  # checked before any work starts
    for item in iter_sources(files, vid_stride=2):                      # SourceItem: image or error
        ...

A folder is walked recursively in sorted order; hidden files and folders (``.git``, macOS ``._x.jpg``) and files
that are neither images (:data:`~mobilevision.data.image_io.IMAGE_EXTENSIONS`) nor videos
(:data:`VIDEO_EXTENSIONS`) are left out. A glob pattern (``*``, ``?``, ``[...]``, ``**`` across folders) is
expanded here, so it works quoted. A file named explicitly is taken whatever its extension (decoded as an image
unless it is a video). Every file gets a ``name``: its path relative to the folder, or to the fixed part of the
glob pattern, that it was found under (the file name for a file given as such); a name found under two sources
becomes ``<source folder>/<name>`` (or gets a ``-2`` suffix).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .image_io import IMAGE_EXTENSIONS, ImageDecodeError, is_hidden, is_image_file, load_rgb_image, walk_files

__all__ = ["VIDEO_EXTENSIONS", "SourceFile", "SourceItem", "VideoInfo", "is_video_file", "iter_frames",
           "iter_sources", "probe_video", "resolve_sources", "sample_images"]

#: File extensions treated as videos (lower case), decoded with OpenCV.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")


def is_video_file(name: str) -> bool:
    """True for a file name with a video extension (:data:`VIDEO_EXTENSIONS`)."""
    return name.lower().endswith(VIDEO_EXTENSIONS)


@dataclass(frozen=True)
class SourceFile:
    """One file to predict on: its ``path``, its output ``name`` (relative, ``/``-separated), whether it is a video,
    and ``stem``, the name that outputs of another extension are written under (``masks/<stem>.png``,
    ``<stem>_pred.mp4``): the name without its extension, or the whole name where two sources would share it
    (``x.jpg`` and ``x.png`` -> ``x.jpg``, ``x.png``), unique among the sources."""

    path: Path
    name: str
    video: bool
    stem: str = ""


@dataclass
class SourceItem:
    """One decoded image or video frame (``image`` RGB uint8 HxWx3), or a file that could not be read (``error``)."""

    file: SourceFile
    frame: int | None = None
    image: np.ndarray | None = None
    error: str | None = None


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int  # as the container says (0 when unknown)
    width: int
    height: int


def _walk(folder: Path) -> Iterator[Path]:
    """Image and video files under ``folder``, recursively, sorted, hidden files and folders left out."""
    for path in walk_files(folder, lambda name: is_image_file(name) or is_video_file(name)):
        yield Path(path)


def _glob_base(pattern: str) -> Path:
    """The leading folders of ``pattern`` without wildcards (``data/*/x*.jpg`` -> ``data``)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _found(path: Path, base: Path) -> tuple[Path, str, str]:
    """(path, name relative to ``base``, the name of ``base``: a prefix that tells sources apart)."""
    name = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.name
    return path, name, base.resolve().name


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def resolve_sources(sources: Sequence[str | os.PathLike],
                    exclude: Sequence[str | os.PathLike] = ()) -> list[SourceFile]:
    """The files of ``sources`` (images, folders, glob patterns, videos) in order, each once; files under the
    ``exclude`` folders (e.g. the output folder, inside a source folder) are left out.

    A name found under two sources becomes ``<source folder>/<name>``, or else gets a ``-2``, ``-3``, ... suffix.
    Raises ``FileNotFoundError`` for a path that does not exist or a pattern that matches nothing, and
    ``ValueError`` when there is no image or video to predict on at all.
    """
    found: list[tuple[Path, str, str]] = []
    for source in sources:
        text = os.path.expanduser(os.fspath(source))
        if not text.strip():  # Path("") is the current folder: an unset shell variable must not predict on it all
            raise FileNotFoundError("--source '': an empty path (an unset variable?); give files, folders or patterns")
        path = Path(text)
        if path.is_dir():
            found += [_found(p, path) for p in _walk(path)]
        elif path.is_file():
            found.append(_found(path, path.parent))
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise FileNotFoundError(f"--source {text!r}: no file matches the pattern")
            base = _glob_base(text)
            for m in map(Path, matches):
                if m.is_dir():
                    found += [_found(p, base) for p in _walk(m)]
                elif is_image_file(m.name) or (is_video_file(m.name) and not is_hidden(m.name)):
                    found.append(_found(m, base))
        else:
            raise FileNotFoundError(f"--source {text!r} does not exist")
    skip = [Path(e).resolve() for e in exclude]
    files: list[SourceFile] = []
    seen: set[Path] = set()
    names: set[str] = set()
    for path, name, prefix in found:
        key = path.resolve()
        if key in seen or _inside(key, skip):
            continue
        seen.add(key)
        if name in names and prefix:
            name = f"{prefix}/{name}"
        stem, suffix, k = name[: len(name) - len(Path(name).suffix)], Path(name).suffix, 1
        while name in names:
            k += 1
            name = f"{stem}-{k}{suffix}"
        names.add(name)
        files.append(SourceFile(path, name, is_video_file(path.name)))
    if not files:
        shown = ", ".join(map(os.fspath, sources))
        raise UserError(f"no image or video to predict on in {shown} (images: {', '.join(IMAGE_EXTENSIONS)}; "
                         f"videos: {', '.join(VIDEO_EXTENSIONS)})")
    return _with_unique_stems(files)


def _with_unique_stems(files: list[SourceFile]) -> list[SourceFile]:
    """Give each file a ``stem`` no other file has (see :class:`SourceFile`)."""
    def plain(name: str) -> str:
        return name[: len(name) - len(Path(name).suffix)]

    counts: dict[str, int] = {}
    for f in files:
        counts[plain(f.name)] = counts.get(plain(f.name), 0) + 1
    taken: set[str] = set()
    out = []
    for f in files:
        stem = plain(f.name) if counts[plain(f.name)] == 1 else f.name
        base, k = stem, 1
        while stem in taken:
            k += 1
            stem = f"{base}-{k}"
        taken.add(stem)
        out.append(SourceFile(f.path, f.name, f.video, stem))
    return out


def probe_video(path: str | os.PathLike) -> VideoInfo | None:
    """Frame rate, frame count and size of a video, or None when OpenCV cannot open it."""
    import cv2

    cap = cv2.VideoCapture(os.fspath(path))
    try:
        if not cap.isOpened():
            return None
        return VideoInfo(float(cap.get(cv2.CAP_PROP_FPS) or 0.0), max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
                         int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()


def iter_frames(path: str | os.PathLike, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame index, RGB uint8 frame)`` of every ``stride``-th frame (0, stride, 2 stride, ...), streamed: skipped
    frames are only grabbed, not decoded into arrays. Raises ``ImageDecodeError`` naming the file when the video
    cannot be opened or OpenCV fails on a frame (the frames before it have been given)."""
    import cv2

    if stride < 1:
        raise UserError(f"stride must be >= 1, got {stride}")
    index, cap = 0, None
    try:
        cap = cv2.VideoCapture(os.fspath(path))
        if not cap.isOpened():
            raise ImageDecodeError(f"cannot open video {path} with OpenCV")
        while cap.grab():
            if index % stride == 0:
                ok, frame = cap.retrieve()
                if not ok:
                    break
                yield index, _frame_to_rgb(frame)
            index += 1
    except cv2.error as e:  # a damaged stream: named, with the frame, never a crash of the whole run
        raise ImageDecodeError(f"cannot decode video {path} at frame {index}: OpenCV: {str(e).strip()}") from e
    finally:
        if cap is not None:
            cap.release()


def _frame_to_rgb(frame: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR, BGRA or one channel) as RGB uint8."""
    import cv2

    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def iter_sources(files: Sequence[SourceFile], vid_stride: int = 1) -> Iterator[SourceItem]:
    """One :class:`SourceItem` per image and per kept video frame, in order; a file that cannot be read (or a video
    without a single decodable frame) gives one item with ``error`` set instead, and the iteration goes on."""
    for file in files:
        try:
            if not file.video:
                yield SourceItem(file, image=load_rgb_image(file.path))
                continue
            count = 0
            for index, frame in iter_frames(file.path, vid_stride):
                count += 1
                yield SourceItem(file, frame=index, image=frame)
            if not count:
                yield SourceItem(file, error=f"no frame could be decoded from video {file.path}")
        except (OSError, ValueError) as e:  # ImageDecodeError, FileNotFoundError (deleted meanwhile), permissions
            yield SourceItem(file, error=str(e) or type(e).__name__)


def sample_images(folder: str | os.PathLike, count: int, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """Up to ``count`` ``(name, RGB image)`` drawn from ``folder`` for int8 calibration: the files in a seeded random
    order that takes the sub-folders in turn (``train/<class>/...``: every class early, not the first class
    first), each video giving frames spread evenly over its length (about ``count / files`` of them, at least
    one). Unreadable files are skipped."""
    import random
    from collections import defaultdict

    files = resolve_sources([folder])
    rng = random.Random(seed)
    groups: dict[str, list[SourceFile]] = defaultdict(list)
    for f in files:
        groups[f.name.rsplit("/", 1)[0] if "/" in f.name else ""].append(f)
    for members in groups.values():
        rng.shuffle(members)
    order = list(groups.values())
    rng.shuffle(order)
    interleaved = [g[i] for i in range(max((len(g) for g in order), default=0)) for g in order if i < len(g)]
    per_video = max(1, -(-count // max(1, len(files))))
    given = 0
    for f in interleaved:
        if given >= count:
            return
        if not f.video:
            try:
                image = load_rgb_image(f.path)
            except (OSError, ValueError):
                continue
            given += 1
            yield f.name, image
            continue
        info = probe_video(f.path)
        stride = max(1, (info.frames if info and info.frames else per_video) // per_video)
        try:
            for index, frame in iter_frames(f.path, stride):
                if given >= count or index // stride >= per_video:
                    break
                given += 1
                yield f"{f.name}#{index}", frame
        except (OSError, ValueError):
            continue
