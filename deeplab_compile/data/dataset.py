"""ImageSegData as a PyTorch dataset, sampler and loader.

Randomness is a function of ``(seed, epoch, index)``: the crop, mirror and scale of an
image are drawn from ``numpy.random.default_rng((seed, epoch, index))``, and the order of
an epoch from ``DistributedSampler(seed, epoch)``.  So the batches do not depend on the
number of DataLoader workers, and a run resumed at iteration k sees exactly the batches
the uninterrupted run would have seen.

Like Caffe's data layer the stream is endless: the list is walked in order (or shuffled
each epoch with ``shuffle: true``) and a batch may span two epochs.  With several
processes (``torchrun``) each takes its own share of every epoch, through a
``DistributedSampler``.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..errors import Loc
from .errors import DataError
from .labels import map_labels
from .listfile import Entry, read_list
from .spec import DataSpec
from .transforms import data_dim, range_size, resize_aligned, resize_to, transform


def read_image(path: str, *, color: bool = True, rgb: bool = False, where: Loc | None = None) -> np.ndarray:
    """Read an image as uint8 H x W x 3 (B G R unless ``rgb``) or H x W (gray)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("RGB" if color else "L")
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image '{path}' does not exist", loc=where)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image '{path}': {e}", loc=where,
                        hint="the file is corrupt or not an image; fix or remove the list line")
    if color and not rgb:
        arr = arr[:, :, ::-1]
    return arr


def read_label(path: str, *, where: Loc | None = None) -> np.ndarray:
    """Read a label map: a palette or grayscale PNG whose values are class ids."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
                arr = np.asarray(im)
            else:
                raise DataError(f"label '{path}' is a {mode} image, not a map of class ids", loc=where,
                                hint="save labels as palette or 8-bit grayscale PNGs whose values are the ids")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"label '{path}' does not exist", loc=where)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read label '{path}': {e}", loc=where,
                        hint="the file is corrupt or not an image; fix or remove the list line")
    return arr.astype(np.int32)


def check_labels(seg: np.ndarray, num_classes: int | None, ignore_label: int, path: str, where: Loc | None):
    bad = (seg < 0) | ((seg >= num_classes) if num_classes else False)
    bad &= seg != ignore_label
    if bad.any():
        vals = np.unique(seg[bad])
        shown = ", ".join(str(int(v)) for v in vals[:8]) + (", ..." if len(vals) > 8 else "")
        raise DataError(f"label '{path}' has value(s) {shown} outside [0, {num_classes}) "
                        f"that are not ignore_label {ignore_label}", loc=where,
                        hint="check num_classes and label_map (Cityscapes labelIds need "
                             "'label_map: cityscapes', ADE20K 'label_map: ade20k')")


class ImageSegDataset(Dataset):
    """Items are ``(index, epoch)`` pairs (see :class:`StreamSampler`) or plain indices
    (epoch 0).  Each item is a dict of numpy arrays named by the layer's tops, plus
    ``id`` and ``index``; a :class:`DataError` is returned (not raised) so that the
    loader can report it as one line from the main process."""

    def __init__(self, spec: DataSpec, *, train: bool, seed: int = 0, check_files: bool = True):
        self.spec, self.train, self.seed = spec, train, seed
        self.entries: list[Entry] = read_list(spec.source, spec.root_folder, spec.label_type,
                                              check_files=check_files)
        self.params = spec.transform_params(train)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, Entry]:
        """The image and label of entry ``i`` as read (resized to new_height/new_width or
        by resize_to_range, label map applied, labels checked)."""
        img, seg, e, _ = self.read(i)
        return img, seg, e

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray, Entry, tuple[int, int]]:
        """:meth:`load`, plus the image's height and width before ``resize_to_range``."""
        img, seg, e = self._load(i)
        size = (int(img.shape[0]), int(img.shape[1]))
        r = self.spec.resize_to_range
        if r:
            h, w = range_size(*size, r["min"], r["max"], r["factor"])
            img = resize_aligned(img, h, w, nearest=False)      # float32, as TF keeps it
            seg = resize_aligned(seg, h, w, nearest=True)
        return img, seg, e, size

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, Entry]:
        s, e = self.spec, self.entries[i]
        where = Loc(s.source, e.line, 1)
        img = read_image(e.image, color=s.is_color, rgb=s.rgb, where=where)
        if s.new_height and s.new_width:
            img = resize_to(img, s.new_height, s.new_width, nearest=False)
        h, w = img.shape[:2]
        if s.label_type == "pixel":
            seg = map_labels(read_label(e.label, where=where), s.label_map)
            if seg.shape != (h, w) and not (s.new_height and s.new_width):
                raise DataError(f"label '{e.label}' is {seg.shape[1]}x{seg.shape[0]} but image '{e.image}' is "
                                f"{w}x{h} (W x H)", loc=where, hint="the label map must match its image")
            if s.new_height and s.new_width:
                seg = resize_to(seg, s.new_height, s.new_width, nearest=True)
            check_labels(seg, s.num_classes, s.ignore_label, e.label, where)
        elif s.label_type == "image":
            seg = np.full((h, w), int(e.label), np.int32)
            check_labels(seg[:1, :1], s.num_classes, s.ignore_label, f"class {e.label}", where)
        else:
            seg = np.full((h, w), s.ignore_label, np.int32)
        return img, seg, e

    def __getitem__(self, item: Any) -> dict[str, Any]:
        i, epoch = item if isinstance(item, tuple) else (int(item), 0)
        try:
            img, seg, e, orig = self.read(i)
        except DataError as err:
            return {"error": err}
        rng = np.random.default_rng((self.seed, epoch, i))
        data, label, _ = transform(self.params, img, seg, rng)
        # size: the image as the net sees it (before the crop); orig_size: before resize_to_range
        out: dict[str, Any] = {"id": e.id, "index": i, "size": np.array(img.shape[:2]), "orig_size": np.array(orig)}
        made = {"data": data, "label": label}      # label: the map, the class id or ignore_label
        for top, role in zip(self.spec.tops, self.spec.roles):
            out[top] = made[role] if role != "data_dim" else data_dim(self.params, *img.shape[:2])
        return out


class BatchError:
    """A batch in which some item failed; the loop raises ``error``."""

    def __init__(self, error: DataError):
        self.error = error


def collate(items: list[dict[str, Any]]):
    for it in items:
        if "error" in it:
            return BatchError(it["error"])
    out: dict[str, Any] = {}
    for k in items[0]:
        if k in ("id",):
            out[k] = [it[k] for it in items]
        else:
            out[k] = torch.from_numpy(np.stack([it[k] for it in items]))
    return out


class StreamSampler(Sampler):
    """An endless stream of ``(index, epoch)`` items: epoch after epoch of a
    :class:`DistributedSampler` (this process's share; one process is the share of all),
    starting ``start`` items into the stream."""

    def __init__(self, n: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0, rand_skip: int = 0):
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size, self.start, self.rand_skip = rank, world_size, start, rand_skip

    def _epoch(self, epoch: int) -> list[int]:
        ds = DistributedSampler(range(self.n), num_replicas=self.world_size, rank=self.rank,
                                shuffle=self.shuffle, seed=self.seed, drop_last=False)
        ds.set_epoch(epoch)
        return list(ds)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        per_epoch = -(-self.n // self.world_size)
        pos = self.start + self.rand_skip
        epoch, skip = divmod(pos, per_epoch)
        for e in itertools.count(epoch):
            order = self._epoch(e)
            for i in order[skip:]:
                yield (i, e)
            skip = 0

    def __len__(self) -> int:       # endless; DataLoader only needs it for len()
        return 2 ** 62


@dataclass
class DataPipeline:
    """The loader of a net's data layer, and how its batches feed the net."""

    spec: DataSpec
    dataset: ImageSegDataset
    loader: DataLoader
    input_names: list[str]

    def __iter__(self):
        for batch in self.loader:
            if isinstance(batch, BatchError):
                raise batch.error
            yield batch

    def feeds(self, batch: dict[str, Any], device: torch.device | str | None = None) -> list[torch.Tensor]:
        """The forward arguments, in the order of the net's placeholders."""
        missing = [n for n in self.input_names if n not in batch]
        if missing:
            raise DataError(f"the net needs input '{missing[0]}' but the data layer makes "
                            f"{', '.join(self.spec.tops)}",
                            hint="name the data layer's tops after the net's inputs")
        return [batch[n].to(device, non_blocking=True) if device is not None else batch[n]
                for n in self.input_names]


def _worker_init(_):
    torch.set_num_threads(1)


def pipeline_for(net, phase: str, data: Any = None, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start: int = 0, num_workers: int | None = None, batch_size: int | None = None,
                 check_files: bool = True) -> DataPipeline:
    """The data pipeline of a compiled net (a :class:`CompiledNet` or its IR :class:`Net`).

    ``data`` is a solver ``data:`` section (a mapping) or a resolved :class:`DataSpec`.
    In ``train`` the loader is endless and random (per the spec), starting ``start``
    images into this process's stream; in ``test`` it walks the list once, in order,
    crops at the top-left corner and never shuffles.
    """
    from .spec import resolve_spec
    ir = getattr(net, "net", net)
    input_names = list(getattr(net, "input_names", ir.inputs))
    spec = data if isinstance(data, DataSpec) else resolve_spec(ir, phase, data)
    if batch_size:
        spec.batch_size = batch_size
    train = phase == "train"
    dataset = ImageSegDataset(spec, train=train, seed=seed, check_files=check_files)
    workers = spec.num_workers if num_workers is None else num_workers
    workers = min(workers, os.cpu_count() or 1)
    if train:
        sampler = StreamSampler(len(dataset), shuffle=spec.shuffle, seed=seed, rank=rank,
                                world_size=world_size, start=start, rand_skip=spec.rand_skip)
    else:
        sampler = range(rank, len(dataset), world_size)
    loader = DataLoader(dataset, batch_size=spec.batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate, worker_init_fn=_worker_init if workers else None,
                        persistent_workers=False, prefetch_factor=4 if workers else None,
                        drop_last=False,
                        # its own generator: creating an iterator must not draw from the global
                        # RNG, which drives dropout and is restored on resume
                        generator=torch.Generator().manual_seed(seed))
    return DataPipeline(spec=spec, dataset=dataset, loader=loader, input_names=input_names)
