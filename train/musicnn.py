"""musicnn (Pons & Serra, 2019): music-tagging CNNs trained on real recordings (MagnaTagATune, the Million Song
Dataset), whose TF1 checkpoints ship inside the PyPI wheel `musicnn` (ISC licence). This module reads those
checkpoints without TensorFlow into the torch network of streamrec.core.models.tagger, which the bundle's tagger
is built on (train/train_tagger.py) and the probes measure (scripts/musicnn_probe.py).
"""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from streamrec.core.errors import UserError
from streamrec.core.models.tagger import Musicnn

MODELS = ("MTT_musicnn", "MSD_musicnn")  # the wheel's musicnn checkpoints (MagnaTagATune, Million Song Dataset)
# tensorflow/core/framework/types.proto: the dtypes a checkpoint of this kind holds
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}
_TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB table footer


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _block(table: bytes, handle: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Key/value pairs of one LevelDB table block (prefix-compressed keys, then the restart array)."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if table[offset + size] != 0:  # the block trailer's compression byte: TF writes its index uncompressed
        raise ValueError("compressed checkpoint index blocks are not supported")
    block = table[offset : offset + size]
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end, pos, key = len(block) - 4 * (restarts + 1), 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + length]
        pos += length


def _proto_fields(message: bytes) -> dict[int, list[int | bytes]]:
    """Protocol-buffer fields by number: varints as int, everything else as bytes."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        wire = tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos : pos + length], pos + length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = message[pos : pos + width], pos + width
        else:
            raise ValueError(f"unsupported protocol-buffer wire type {wire}")
        fields.setdefault(tag >> 3, []).append(value)
    return fields


def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a single-shard TensorFlow checkpoint (PREFIX.index, PREFIX.data-00000-of-00001) by name.

    The index is a LevelDB table from tensor name to a BundleEntryProto (dtype 1, shape 2, offset 4, size 5);
    the data file holds the raw little-endian tensors."""
    index = Path(f"{prefix}.index").read_bytes()
    data = Path(f"{prefix}.data-00000-of-00001").read_bytes()
    footer = index[-48:]
    if len(index) < 48 or struct.unpack_from("<Q", footer, 40)[0] != _TABLE_MAGIC:
        raise ValueError(f"{prefix}.index is not a TensorFlow checkpoint index")
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)  # skip the metaindex handle
    tensors: dict[str, np.ndarray] = {}
    for _, handle in _block(index, footer[pos:]):
        for name, entry in _block(index, handle):
            if not name:  # the bundle's header
                continue
            fields = _proto_fields(entry)
            dtype = np.dtype(_DTYPES[int(fields.get(1, [0])[0])])
            dims = _proto_fields(bytes(fields[2][0])).get(2, []) if 2 in fields else []
            shape = [int(_proto_fields(bytes(d)).get(1, [0])[0]) for d in dims]
            offset, size = int(fields.get(4, [0])[0]), int(fields.get(5, [0])[0])
            tensors[name.decode()] = np.frombuffer(data, dtype, size // dtype.itemsize, offset).reshape(shape).copy()
    return tensors


def checkpoint_prefix(model: str = "MTT_musicnn") -> str:
    """The prefix of `model`'s checkpoint in the installed `musicnn` wheel, found without importing the package
    (which would import TensorFlow). Its files are named ".index" and ".data-..." inside the model's folder, so
    the prefix ends with the folder's separator."""
    if model not in MODELS:
        raise UserError(f"unknown musicnn model {model!r}; choose from {', '.join(MODELS)}")
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the musicnn package is not installed (scripts/install.sh installs it)")
    return f"{Path(next(iter(spec.submodule_search_locations))) / model}/"


def load_musicnn(model: str = "MTT_musicnn") -> Musicnn:
    """The installed wheel's musicnn checkpoint `model` as a torch network, in eval mode."""
    return Musicnn.from_tf(read_tf_checkpoint(checkpoint_prefix(model)))
