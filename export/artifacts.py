"""What an export writes and reads beside the model, without TensorFlow: the export metadata inside a .tflite (`add`,
`read`, `check_manifest`), the class labels (`class_labels`) and the images fed to an exported model
(`decode_image`)."""

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from export.errors import ExportError

METADATA_NAME = "keras_coatnet_export"

# Field slots (vtable offsets) of the TFLite schema tables read here (tensorflow/lite/schema/schema.fbs).
_MODEL_BUFFERS, _MODEL_METADATA = 12, 16  # Model.buffers (field 4), Model.metadata (field 6)
_METADATA_NAME, _METADATA_BUFFER = 4, 6  # Metadata.name, Metadata.buffer
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 4, 6, 8  # Buffer.data, Buffer.offset, Buffer.size


def add(tflite_bytes, info):
    """``tflite_bytes`` with ``info`` (a JSON-able dict) stored as metadata ``METADATA_NAME`` (replacing any)."""
    import numpy as np
    from tensorflow.lite.tools import flatbuffer_utils

    from export._compat import tflite_schema

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_bytes))
    schema = tflite_schema()
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(info, sort_keys=True).encode("utf-8"), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name(name):
    return name.decode() if isinstance(name, bytes) else name


def read(tflite_bytes):
    """The dict stored by ``add``, or None if the file has none (e.g. a file from another exporter)."""
    from flatbuffers import encode, number_types, packer, table

    buf = bytearray(tflite_bytes)
    model = table.Table(buf, encode.Get(packer.uoffset, buf, 0))

    def tables(tab, slot):
        o = tab.Offset(slot)
        if not o:
            return []
        start = tab.Vector(o)
        return [table.Table(buf, tab.Indirect(start + 4 * i)) for i in range(tab.VectorLen(o))]

    for entry in tables(model, _MODEL_METADATA):
        o = entry.Offset(_METADATA_NAME)
        if not o or entry.String(o + entry.Pos).decode() != METADATA_NAME:
            continue
        index = entry.Get(number_types.Uint32Flags, entry.Pos + entry.Offset(_METADATA_BUFFER))
        buffer = tables(model, _MODEL_BUFFERS)[index]
        o = buffer.Offset(_BUFFER_DATA)
        if o:
            start = buffer.Vector(o)
            data = bytes(buf[start:start + buffer.VectorLen(o)])
        elif buffer.Offset(_BUFFER_OFFSET) and buffer.Offset(_BUFFER_SIZE):  # data after the flatbuffer (>2 GB)
            offset = buffer.Get(number_types.Uint64Flags, buffer.Pos + buffer.Offset(_BUFFER_OFFSET))
            size = buffer.Get(number_types.Uint64Flags, buffer.Pos + buffer.Offset(_BUFFER_SIZE))
            data = bytes(buf[offset:offset + size])
        else:
            return None
        return json.loads(data.decode("utf-8"))
    return None


def digest(path):
    """(bytes, sha256 hex) of a file, or of a folder's files in sorted order, as report.json's "files" (the
    manifest) lists them: the hash runs over each file's name (relative path in a folder), a NUL, its bytes."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h, total = hashlib.sha256(), 0
    for f in files:
        data = f.read_bytes()
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0" + data)
        total += len(data)
    return total, h.hexdigest()


def check_manifest(path, report_name="report.json"):
    """Raises ValueError '... is truncated or corrupt ...' when the export's report.json beside ``path`` lists
    it with another size or sha256; nothing when there is no such report or entry."""
    path = Path(path)
    report = path.parent / report_name
    try:
        entry = json.loads(report.read_text())["files"][path.name]
        want = (int(entry["bytes"]), str(entry["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return
    got = digest(path)
    if got != want:
        raise ValueError(f"{path} is truncated or corrupt: {got[0]} bytes, not the {want[0]} bytes of sha256 "
                         f"{want[1][:12]}... that {report} lists; export or copy it again")


def class_labels(num_classes, labels=None, calibration=None):
    """Class names: from a labels file / list, ImageNet names for 1000 / 11821 classes, digits names, or class_i."""
    if labels is not None:
        names = Path(labels).read_text().splitlines() if isinstance(labels, (str, Path)) else list(labels)
        names = [n.strip() for n in names if n.strip()]
        if len(names) != num_classes:
            raise ExportError(f"labels has {len(names)} names but the model has {num_classes} classes")
        return names
    if str(calibration) == "digits" and num_classes == 10:
        return [str(i) for i in range(10)]
    try:
        from keras_coatnet.preprocessing import class_names

        return [name for _, name in class_names(num_classes)]
    except (ImportError, ValueError):
        return [f"class_{i}" for i in range(num_classes)]


SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def decode_image(source):
    """A path or encoded bytes -> [H, W, 3] uint8 RGB. Raises ValueError for data Pillow cannot read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as im:
            im.seek(0)
            if im.mode in SIXTEEN_BIT_MODES:
                gray = np.asarray(im, np.float64)
                gray = np.round(np.clip(gray, 0, 65535) / 257.0).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            if im.mode == "F":
                gray = np.clip(np.round(np.asarray(im, np.float64)), 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            return np.asarray(im.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        name = "image bytes" if isinstance(source, (bytes, bytearray)) else str(source)
        raise ValueError(f"cannot read {name}: {e}") from None
