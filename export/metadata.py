"""The export's own metadata inside a ``.tflite``: a JSON object stored in the flatbuffer's ``metadata`` list.

Under the name ``METADATA_NAME`` it records what the input tensor expects (dtype, layout, raw 0-255 pixels
or (x / 255 - mean) / std), the labels (line i = class i) and the format, so an app or
``examples/tflite_predict.py`` feeds the file correctly without guessing. ``read`` needs only the
``flatbuffers`` package (a dependency of ai-edge-litert); ``add`` uses TensorFlow's flatbuffer utilities.
"""

import json

METADATA_NAME = "keras_coatnet_export"

# Field slots (vtable offsets) of the TFLite schema tables read here (tensorflow/lite/schema/schema.fbs).
_MODEL_BUFFERS, _MODEL_METADATA = 12, 16  # Model.buffers (field 4), Model.metadata (field 6)
_METADATA_NAME, _METADATA_BUFFER = 4, 6  # Metadata.name, Metadata.buffer
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 4, 6, 8  # Buffer.data, Buffer.offset, Buffer.size


def add(tflite_bytes, info):
    """``tflite_bytes`` with ``info`` (a JSON-able dict) stored as metadata ``METADATA_NAME`` (replacing any)."""
    import numpy as np
    from export._compat import tflite_schema
    from tensorflow.lite.tools import flatbuffer_utils

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
