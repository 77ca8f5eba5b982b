"""Real-photo data for the reference trainer: scikit-image's bundled photos, or any folder of images.

Two datasets, both returning ``(3, S, S)`` float32 tensors in ``[-1, 1]``:

- :class:`PhotoCrops`: random crops of the real photos that scikit-image ships inside its wheel (no download).
  The train / held-out split is **by source photo**: :data:`HELDOUT_PHOTOS` never appear in training, so a
  held-out score measures generalisation to unseen photos, not to unseen crops of seen photos.
- :class:`ImageFolder`: a folder of your own images (recursive; corrupt files are skipped with a warning, or
  refused with ``on_error="raise"``; ``check="decode"`` decodes every file up front).

Both are deterministic: the crop of item ``i`` is a pure function of ``(seed, epoch, i)``, so a ``DataLoader``
with ``shuffle=True`` and a seeded ``generator`` replays the same batches, and a resumed run that skips the
batches already seen continues exactly. Call :meth:`PhotoCrops.set_epoch` / :meth:`ImageFolder.set_epoch` at
the start of each epoch to get fresh training crops (as with ``DistributedSampler``); held-out items ignore
the epoch and are the same every time.

Example:
    >>> from examples.aotgan.data import make_dataset
    >>> train = make_dataset("skimage", split="train", size=64)
    >>> train[0].shape, float(train[0].min()) >= -1.0, float(train[0].max()) <= 1.0
    (torch.Size([3, 64, 64]), True, True)
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

__all__ = [
    "HELDOUT_PHOTOS",
    "IMAGE_EXTENSIONS",
    "ColourAugment",
    "PHOTO_SOURCES",
    "ImageFolder",
    "PhotoCrops",
    "available_photos",
    "make_dataset",
]

Split = Literal["train", "heldout"]

PHOTO_SOURCES: dict[str, str] = {
    "astronaut": "astronaut",
    "chelsea": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "motorcycle_left": "stereo_motorcycle[0]",
    "motorcycle_right": "stereo_motorcycle[1]",
    "hubble_deep_field": "hubble_deep_field",
    "ihc": "immunohistochemistry",
    "retina": "retina",
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
}
"""Real photos bundled with scikit-image (name -> ``skimage.data`` loader). brick, grass and gravel are grayscale
texture photos (replicated to 3 channels). ``skimage.data.colorwheel`` ("color.png") is left out: it is a
synthetic colour wheel, not a photo. ``cat`` is the same picture as ``chelsea`` and is left out too."""

HELDOUT_PHOTOS: tuple[str, ...] = ("chelsea", "rocket")
"""Photos reserved for the held-out split; every other available photo is training data. The stereo pair
``motorcycle_left`` / ``motorcycle_right`` shows one scene, so both stay on the same (train) side."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""File extensions :class:`ImageFolder` picks up (case-insensitive)."""

_FLAT_TRIES = 8  # crops drawn before a flat one (std below min_std) is accepted anyway
_LANCZOS = getattr(Image, "Resampling", Image).LANCZOS  # Pillow < 9.1 has no Image.Resampling


# ----------------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------------


def _rng(*words: int) -> np.random.Generator:
    """A numpy generator seeded by a tuple of non-negative ints (stable across platforms and versions)."""
    return np.random.default_rng(np.random.SeedSequence([int(w) for w in words]))


def _check_size(size: Any) -> int:
    if not isinstance(size, int) or isinstance(size, bool):
        raise TypeError(f"size: expected a positive int (crop side in pixels), got {type(size).__name__} {size!r}")
    if size < 1:
        raise ValueError(f"size: expected a positive int (crop side in pixels), got {size}")
    return size


def _check_seed(name: str, seed: Any) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"{name}: expected a non-negative int, got {type(seed).__name__} {seed!r}")
    return seed


def _to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1|3|4)`` uint8/uint16/bool/float image -> ``(H, W, 3)`` uint8."""
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = (array.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(np.asarray(array, dtype=np.float64) * 255.0, 0, 255).round().astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image with Pillow (Lanczos: antialiased when shrinking)."""
    if array.shape[:2] == (height, width):
        return array
    image = Image.fromarray(array).resize((width, height), _LANCZOS)
    return np.asarray(image)


def _ensure_min_side(array: np.ndarray, size: int) -> np.ndarray:
    """Scale an image up (keeping its aspect ratio) so that its short side is at least ``size``."""
    h, w = array.shape[:2]
    if min(h, w) >= size:
        return array
    factor = size / min(h, w)
    return _resize(array, max(size, math.ceil(h * factor)), max(size, math.ceil(w * factor)))


def _crop_position(array: np.ndarray, size: int, rng: np.random.Generator | None, min_std: float) -> tuple[int, int]:
    """Top-left corner of a ``size x size`` crop: random (from ``rng``, redrawing flat crops) or central."""
    h, w = array.shape[:2]
    if rng is None:
        return (h - size) // 2, (w - size) // 2
    y = x = 0
    for _ in range(_FLAT_TRIES):
        y = int(rng.integers(0, h - size + 1))
        x = int(rng.integers(0, w - size + 1))
        if min_std <= 0 or float(array[y : y + size, x : x + size].std()) / 255.0 >= min_std:
            break
    return y, x


def _crop(array: np.ndarray, size: int, rng: np.random.Generator | None) -> np.ndarray:
    y, x = _crop_position(array, size, rng, 0.0)
    return array[y : y + size, x : x + size]


def _to_tensor(crop: np.ndarray, flip: bool) -> torch.Tensor:
    """``(S, S, 3)`` uint8 -> ``(3, S, S)`` float32 in ``[-1, 1]``, optionally mirrored left-right."""
    if flip:
        crop = crop[:, ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float()
    return tensor / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------------------------------
# scikit-image photos
# ----------------------------------------------------------------------------------------------------------------------


def _skimage_loader(name: str) -> Callable[[], np.ndarray]:
    import skimage.data

    spec = PHOTO_SOURCES[name]
    if spec.startswith("stereo_motorcycle"):
        index = int(spec[-2])
        return lambda: skimage.data.stereo_motorcycle()[index]
    return getattr(skimage.data, spec)


@functools.cache
def _load_photo(name: str) -> np.ndarray | str:
    """The photo as ``(H, W, 3)`` uint8, or a string saying why it could not be loaded offline."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = _skimage_loader(name)()
    except Exception as error:  # missing pooch download, no network, absent skimage: report and move on
        return f"{type(error).__name__}: {error}"
    array = _to_rgb_uint8(np.asarray(array))
    array.setflags(write=False)
    return array


def available_photos() -> dict[str, str | None]:
    """Which :data:`PHOTO_SOURCES` load offline here: name -> None (loaded) or the reason it did not.

    Nothing is downloaded; a photo that scikit-image would fetch with pooch is reported as unavailable.
    """
    loaded = {name: _load_photo(name) for name in PHOTO_SOURCES}
    return {name: (None if isinstance(value, np.ndarray) else value) for name, value in loaded.items()}


@functools.lru_cache(maxsize=32)
def _prepared_photo(name: str, downscale: float, size: int) -> np.ndarray:
    array = _load_photo(name)
    if isinstance(array, str):  # pragma: no cover - filtered out before
        raise RuntimeError(f"photo {name!r} is not available: {array}")
    h, w = array.shape[:2]
    if downscale != 1.0:
        array = _resize(array, max(1, round(h / downscale)), max(1, round(w / downscale)))
    array = _ensure_min_side(array, size)
    array.setflags(write=False)
    return array


class PhotoCrops(Dataset[torch.Tensor]):
    """Random square crops of scikit-image's bundled photos, split into train and held-out by source photo.

    Each photo is first shrunk by ``downscale`` (Lanczos, antialiased; default 2, so e.g. astronaut 512x512
    becomes 256x256 and retina 1411x1411 becomes 706x706) so that a small crop shows objects and edges rather
    than sensor noise and fine grain; a photo whose short side would then fall below ``size`` is scaled up to
    ``size`` instead. Item ``i``:

    - ``split="train"``: a photo drawn uniformly among the training photos, a random crop position and a
      random horizontal flip, all from ``(seed, epoch, i)``. Crops whose standard deviation is below
      ``min_std`` (flat black borders of retina or hubble_deep_field) are redrawn, up to 8 times.
    - ``split="heldout"``: photo ``i mod n`` of :data:`HELDOUT_PHOTOS`, a crop position from ``(seed, i)``,
      no flip. Identical in every epoch.

    Args:
        split: ``"train"`` or ``"heldout"``.
        size: crop side ``S`` in pixels.
        length: number of items (``len(dataset)``); default 1024 for train, 32 for held-out.
        seed: base seed (non-negative int).
        downscale: factor every photo is shrunk by before cropping (``>= 1``; 1 keeps full resolution).
        min_std: flat-crop threshold on ``[0, 1]`` intensities for training crops (0 disables rejection).
        heldout: the held-out photo names; default :data:`HELDOUT_PHOTOS`.

    Attributes:
        photos: names of the photos this split draws from.
        unavailable: photos of :data:`PHOTO_SOURCES` that could not be loaded offline, with the reason.

    Items are ``(3, S, S)`` float32 tensors in ``[-1, 1]``.

    Raises:
        ValueError: bad ``split``/``downscale``/``length``, unknown held-out names, or a split with no photo.
    """

    def __init__(
        self,
        split: Split = "train",
        size: int = 64,
        length: int | None = None,
        seed: int = 0,
        *,
        downscale: float = 2.0,
        min_std: float = 0.02,
        heldout: tuple[str, ...] = HELDOUT_PHOTOS,
    ) -> None:
        if split not in ("train", "heldout"):
            raise ValueError(f"split: expected 'train' or 'heldout', got {split!r}")
        self.split = split
        self.size = _check_size(size)
        self.seed = _check_seed("seed", seed)
        if length is None:
            length = 1024 if split == "train" else 32
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"length: expected a positive int, got {length!r}")
        self.length = length
        if isinstance(downscale, bool) or not isinstance(downscale, (int, float)) or not downscale >= 1.0:
            raise ValueError(f"downscale: expected a number >= 1 (1 keeps full resolution), got {downscale!r}")
        self.downscale = float(downscale)
        if isinstance(min_std, bool) or not isinstance(min_std, (int, float)) or not 0.0 <= min_std < 1.0:
            raise ValueError(f"min_std: expected a number in [0, 1), got {min_std!r}")
        self.min_std = float(min_std)
        unknown = [name for name in heldout if name not in PHOTO_SOURCES]
        if unknown:
            raise ValueError(f"heldout: expected names from {sorted(PHOTO_SOURCES)}, got unknown {unknown}")
        self.heldout_names = tuple(heldout)
        status = available_photos()
        self.unavailable: dict[str, str] = {name: why for name, why in status.items() if why is not None}
        wanted = [n for n in PHOTO_SOURCES if (n in self.heldout_names) == (split == "heldout")]
        self.photos: tuple[str, ...] = tuple(n for n in wanted if n not in self.unavailable)
        if not self.photos:
            raise ValueError(
                f"split: no {split} photo could be loaded offline (wanted {wanted}); reasons: {self.unavailable}"
            )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the training crops of ``epoch`` (held-out crops do not depend on it).

        With ``DataLoader(persistent_workers=True)`` the workers keep their own copy of the dataset; call this
        before the loader is created, or use non-persistent workers.
        """
        self.epoch = _check_seed("epoch", epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index: expected 0 <= index < {self.length}, got {index}")
        name, y, x, flip = self.crop_plan(index)
        crop = self.photo(name)[y : y + self.size, x : x + self.size]
        return _to_tensor(crop, flip=flip)

    def crop_plan(self, index: int) -> tuple[str, int, int, bool]:
        """Where item ``index`` comes from: ``(photo name, top, left, flipped)`` in the prepared photo.

        ``self[index]`` is exactly ``self.photo(name)[top:top+S, left:left+S]`` (mirrored when flipped), in
        ``[-1, 1]``. A pure function of ``(seed, epoch, index)`` (held-out: of ``(seed, index)``).
        """
        if not 0 <= index < self.length:
            raise IndexError(f"index: expected 0 <= index < {self.length}, got {index}")
        if self.split == "heldout":
            rng = _rng(self.seed, 1, index)
            name = self.photos[index % len(self.photos)]
            min_std, flip = 0.0, False
        else:
            rng = _rng(self.seed, 0, self.epoch, index)
            name = self.photos[int(rng.integers(0, len(self.photos)))]
            min_std, flip = self.min_std, None
        y, x = _crop_position(self.photo(name), self.size, rng, min_std)
        if flip is None:
            flip = bool(rng.random() < 0.5)
        return name, y, x, flip

    def photo(self, name: str) -> np.ndarray:
        """The prepared (downscaled, read-only) ``(H, W, 3)`` uint8 photo ``name``."""
        if name not in PHOTO_SOURCES or name in self.unavailable:
            raise ValueError(f"name: expected an available photo, got {name!r}")
        return _prepared_photo(name, self.downscale, self.size)

    def __repr__(self) -> str:
        return (
            f"PhotoCrops(split={self.split!r}, size={self.size}, length={self.length}, seed={self.seed}, "
            f"downscale={self.downscale:g}, photos={list(self.photos)})"
        )


# ----------------------------------------------------------------------------------------------------------------------
# Folder of images
# ----------------------------------------------------------------------------------------------------------------------


def _open_rgb(path: Path) -> np.ndarray:
    """Decode ``path`` to ``(H, W, 3)`` uint8, honouring EXIF orientation; raises on unreadable files."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        image.load()
        if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit integer or float grayscale
            array = np.asarray(image, dtype=np.float64)
            peak = float(array.max()) if array.size else 0.0
            if image.mode == "F" and peak <= 1.0:
                array = array * 255.0
            elif peak > 255.0:
                array = array / 257.0  # 16-bit range to 8-bit
            return _to_rgb_uint8(np.clip(array, 0.0, 255.0).round().astype(np.uint8))
        return _to_rgb_uint8(np.asarray(image.convert("RGB")))


def _verify(path: Path) -> str | None:
    """None if Pillow can parse ``path`` (header and, for PNG, chunk checksums), else the reason."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # UnidentifiedImageError, OSError, SyntaxError, DecompressionBombError, ...
        return f"{type(error).__name__}: {error}"
    return None


def _decodes(path: Path) -> str | None:
    """None if ``path`` decodes completely (as :class:`ImageFolder` will read it), else the reason.

    Catches what ``verify()`` cannot: a truncated JPEG or a corrupt compressed stream behind a valid header.
    """
    try:
        _open_rgb(path)
    except Exception as error:  # OSError ("image file is truncated"), SyntaxError, ValueError, ...
        return f"{type(error).__name__}: {error}"
    return None


class ImageFolder(Dataset[torch.Tensor]):
    """Square crops of the images in a folder (searched recursively), one item per image file.

    Files with an extension in :data:`IMAGE_EXTENSIONS` (any case) are used; hidden files and folders (name
    starting with ".") are ignored. Every image is converted to RGB (grayscale replicated, alpha dropped,
    16-bit scaled to 8-bit, EXIF rotation applied), optionally resized so its short side is ``resize``, and,
    when its short side is still below ``size``, **scaled up** (Lanczos, aspect ratio kept) so a full crop
    fits. Then a ``size x size`` crop is taken: random with a random horizontal flip when augmenting (position
    and flip from ``(seed, epoch, index)``), central otherwise.

    Unreadable files: at construction every file of the split is checked, with Pillow's ``verify()`` (header,
    PNG checksums; ``check="verify"``, the default, fast) or by decoding it completely (``check="decode"``,
    one full read of every file; what the reference trainer uses). With ``on_error="skip"`` (default) a
    failing file is reported with one ``warnings.warn`` naming it and recorded in :attr:`skipped`; with
    ``on_error="raise"`` construction raises a ``ValueError`` naming every failing file. A file that passes
    the check but fails to decode later (``check="verify"`` and a truncated JPEG, or a file changed on disk)
    is warned about once, added to :attr:`skipped` and replaced by the next readable file, so the dataset
    length stays fixed (in ``DataLoader`` worker processes that record stays in the worker); with
    ``on_error="raise"`` it raises a ``RuntimeError`` naming the file instead.

    Split by file: ``split="heldout"`` takes the ``max(1, round(heldout_fraction * n))`` files that rank first
    under a seeded hash of their relative path, ``"train"`` the rest, ``None`` all files. A file's side does
    not change when other files are added or removed, except at the rank boundary.

    Args:
        root: folder to search.
        size: crop side ``S`` in pixels.
        split: ``None`` (all images), ``"train"`` or ``"heldout"``.
        seed: base seed for the split and the crops.
        heldout_fraction: share of files held out, in ``(0, 1)``.
        augment: random crop and flip (True) or central crop (False); default: True for ``split="train"`` and
            ``None``, False for ``"heldout"``.
        resize: resize every image so its short side equals this first (None keeps the original size).
        check: ``"verify"`` (Pillow's ``verify()``) or ``"decode"`` (decode every file) at construction.
        on_error: ``"skip"`` unreadable files with a warning, or ``"raise"``.

    Attributes:
        files: the readable image paths of this split, sorted by relative path.
        skipped: paths of skipped (unreadable) files; ``skip_reasons[path]`` says why.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is a file.
        ValueError: no image file under ``root``, none readable in the split, a split needing two images with
            only one, an unreadable file with ``on_error="raise"``, or bad option values.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        size: int = 64,
        split: Split | None = None,
        seed: int = 0,
        *,
        heldout_fraction: float = 0.1,
        augment: bool | None = None,
        resize: int | None = None,
        check: Literal["verify", "decode"] = "verify",
        on_error: Literal["skip", "raise"] = "skip",
    ) -> None:
        self.root = Path(root)
        self.size = _check_size(size)
        self.seed = _check_seed("seed", seed)
        if split not in (None, "train", "heldout"):
            raise ValueError(f"split: expected None, 'train' or 'heldout', got {split!r}")
        self.split = split
        if isinstance(heldout_fraction, bool) or not isinstance(heldout_fraction, (int, float)):
            raise TypeError(f"heldout_fraction: expected a float in (0, 1), got {heldout_fraction!r}")
        if not 0.0 < heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction: expected a float in (0, 1), got {heldout_fraction!r}")
        self.augment = (split != "heldout") if augment is None else bool(augment)
        if resize is not None and (not isinstance(resize, int) or isinstance(resize, bool) or resize < 1):
            raise ValueError(f"resize: expected None or a positive int (short side in pixels), got {resize!r}")
        self.resize = resize
        if check not in ("verify", "decode"):
            raise ValueError(f"check: expected 'verify' or 'decode', got {check!r}")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error: expected 'skip' or 'raise', got {on_error!r}")
        self.check, self.on_error = check, on_error
        self.epoch = 0

        if not self.root.exists():
            raise FileNotFoundError(f"root: image folder {str(self.root)!r} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"root: expected a folder of images, got the file {str(self.root)!r}")
        candidates = self._find_images()
        if not candidates:
            raise ValueError(
                f"root: expected image files ({', '.join(IMAGE_EXTENSIONS)}) under {str(self.root)!r} "
                "(searched recursively), found none"
            )
        chosen = self._split(candidates, split, heldout_fraction)
        self.skipped: list[Path] = []
        self.skip_reasons: dict[Path, str] = {}
        self.files: list[Path] = []
        failed: list[tuple[Path, str]] = []
        for path in chosen:
            reason = _verify(path) if check == "verify" else _decodes(path)
            if reason is None:
                self.files.append(path)
            elif on_error == "raise":
                failed.append((path, reason))
            else:
                self._skip(path, reason)
        if failed:
            listed = "; ".join(f"{str(p)!r} ({why})" for p, why in failed[:5])
            more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
            raise ValueError(
                f"root: {len(failed)} image file(s) under {str(self.root)!r} cannot be "
                f"{'decoded' if check == 'decode' else 'read'}: {listed}{more}; remove or replace them, or skip "
                "unreadable files (on_error='skip')"
            )
        if not self.files:
            raise ValueError(
                f"root: expected at least one readable image in the {split or 'whole'} split of "
                f"{str(self.root)!r}, got {len(chosen)} file(s), all unreadable"
            )

    def _find_images(self) -> list[Path]:
        found = []
        for path in self.root.rglob("*"):
            parts = path.relative_to(self.root).parts
            if any(part.startswith(".") for part in parts):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                found.append(path)
        return sorted(found, key=lambda p: p.relative_to(self.root).as_posix())

    def _split(self, files: list[Path], split: Split | None, fraction: float) -> list[Path]:
        if split is None:
            return files
        if len(files) < 2:
            raise ValueError(
                f"split: expected at least 2 images under {str(self.root)!r} to split into train and heldout, "
                f"got {len(files)}; use split=None"
            )

        def rank(path: Path) -> str:
            key = f"{self.seed}/{path.relative_to(self.root).as_posix()}"
            return hashlib.sha256(key.encode("utf-8")).hexdigest()

        n_heldout = min(len(files) - 1, max(1, round(fraction * len(files))))
        heldout = set(sorted(files, key=rank)[:n_heldout])
        return [p for p in files if (p in heldout) == (split == "heldout")]

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append(path)
        self.skip_reasons[path] = reason
        warnings.warn(f"ImageFolder: skipping unreadable image {str(path)!r} ({reason})", stacklevel=3)

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of ``epoch`` (no effect without augmentation)."""
        self.epoch = _check_seed("epoch", epoch)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        n = len(self.files)
        index = int(index) + (n if index < 0 else 0)
        if not 0 <= index < n:
            raise IndexError(f"index: expected 0 <= index < {n}, got {index}")
        array = self._load(index)
        if self.resize is not None:
            h, w = array.shape[:2]
            factor = self.resize / min(h, w)
            array = _resize(array, max(1, round(h * factor)), max(1, round(w * factor)))
        array = _ensure_min_side(array, self.size)
        if not self.augment:
            return _to_tensor(_crop(array, self.size, None), flip=False)
        rng = _rng(self.seed, 2, self.epoch, index)
        crop = _crop(array, self.size, rng)
        return _to_tensor(crop, flip=bool(rng.random() < 0.5))

    def _load(self, index: int) -> np.ndarray:
        n = len(self.files)
        for offset in range(n):
            path = self.files[(index + offset) % n]
            if path in self.skip_reasons:
                continue
            try:
                return _open_rgb(path)
            except Exception as error:  # decodes badly although verify() passed (e.g. truncated JPEG)
                if self.on_error == "raise":
                    raise RuntimeError(
                        f"image {str(path)!r} cannot be decoded: {type(error).__name__}: {error}"
                    ) from None
                self._skip(path, f"{type(error).__name__}: {error}")
        raise RuntimeError(f"root: every image under {str(self.root)!r} failed to decode; see the warnings")

    def __repr__(self) -> str:
        return (
            f"ImageFolder(root={str(self.root)!r}, size={self.size}, split={self.split!r}, files={len(self.files)}, "
            f"skipped={len(self.skipped)})"
        )


class ColourAugment(Dataset[torch.Tensor]):
    """Training items with their colours re-mapped: a random permutation of the RGB channels and, with
    probability 1/2, the negative (``-x`` in ``[-1, 1]``), drawn from ``(seed, epoch, index)``.

    Why: a small generator trained on a few dozen photos learns their palette, not how to continue a colour. On
    a colour it has rarely seen (the dark blue sky of the held-out ``rocket`` photo) it then fills thin holes
    with near-black. Filling a hole by continuing its surroundings commutes with permuting the channels and
    with negation, and the L1 term is invariant to both, so these remappings multiply the palette by 12
    without changing what is learnt. Geometry (crop, flip) is left to the wrapped dataset; the wrapper draws
    from its own random stream, so the crops are the same with and without it.

    Args:
        base: a dataset of ``(3, H, W)`` tensors in ``[-1, 1]`` (``PhotoCrops``, ``ImageFolder``); its
            ``set_epoch`` is called through.
        seed: base seed (non-negative int).

    Raises:
        TypeError: ``seed`` not a non-negative int.
        ValueError: an item that is not ``(3, H, W)`` (when it is read).
    """

    def __init__(self, base: Any, seed: int = 0) -> None:
        self.base = base
        self.seed = _check_seed("seed", seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = _check_seed("epoch", epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def remap(self, index: int) -> tuple[tuple[int, int, int], bool]:
        """``(channel order, negated)`` of item ``index`` in the current epoch."""
        rng = _rng(self.seed, 2, self.epoch, int(index))
        order = rng.permutation(3)
        return (int(order[0]), int(order[1]), int(order[2])), bool(rng.random() < 0.5)

    def __getitem__(self, index: int) -> torch.Tensor:
        item = self.base[index]
        if item.dim() != 3 or item.shape[0] != 3:
            raise ValueError(f"base[{index}]: expected a (3, H, W) tensor, got shape {tuple(item.shape)}")
        order, negated = self.remap(index)
        item = item[list(order)]
        return -item if negated else item

    def __repr__(self) -> str:
        return f"ColourAugment({self.base!r}, seed={self.seed})"


# ----------------------------------------------------------------------------------------------------------------------
# Convenience
# ----------------------------------------------------------------------------------------------------------------------


def make_dataset(
    source: str | os.PathLike[str] = "skimage",
    split: Split | None = "train",
    size: int = 64,
    *,
    seed: int = 0,
    **kwargs: Any,
) -> PhotoCrops | ImageFolder:
    """``PhotoCrops`` for ``source="skimage"``, else ``ImageFolder(source, ...)``.

    Args:
        source: ``"skimage"`` (the bundled photos) or a folder path.
        split: ``"train"`` or ``"heldout"``; ``None`` (a folder's images unsplit) only for folders.
        size: crop side in pixels.
        seed: base seed.
        **kwargs: passed on (``length``, ``downscale``, ``min_std`` for photos; ``augment``, ``resize``,
            ``heldout_fraction``, ``check``, ``on_error`` for folders).

    Raises:
        ValueError: ``split=None`` with ``"skimage"``; the datasets' own errors otherwise.
    """
    if isinstance(source, str) and source == "skimage":
        if split is None:
            raise ValueError("split: expected 'train' or 'heldout' for source='skimage', got None")
        return PhotoCrops(split=split, size=size, seed=seed, **kwargs)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source: expected 'skimage' or a folder path, got {type(source).__name__}")
    return ImageFolder(source, size=size, split=split, seed=seed, **kwargs)
