"""Which CPU and LiteRT a measurement came from: model name, int8 dot-product support, LiteRT version."""

import platform
from importlib import metadata
from pathlib import Path

# CPU flags of int8 dot-product instructions (what makes int8 GEMMs fast): x86 and ARM (/proc/cpuinfo names)
DOT_PRODUCT_FLAGS = {"avx_vnni": "AVX-VNNI", "avx512_vnni": "AVX512-VNNI", "amx_int8": "AMX-INT8",
                     "asimddp": "ARM dotprod", "i8mm": "ARM i8mm"}


def _cpuinfo(text):
    """(model name, set of flags) from /proc/cpuinfo text."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "processor") and not model and not value.strip().isdigit():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, flags


def litert_version():
    """The installed ai-edge-litert version (else TensorFlow's, whose tf.lite then runs the models)."""
    for dist in ("ai-edge-litert", "tensorflow"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def describe(cpuinfo_path="/proc/cpuinfo"):
    """{"cpu": model name, "int8_dot_product": [e.g. "AVX512-VNNI"] or [], "litert": version, "cores": n}."""
    path = Path(cpuinfo_path)
    model, flags = _cpuinfo(path.read_text()) if path.exists() else ("", set())
    import os

    return {"cpu": model or platform.processor() or platform.machine(),
            "int8_dot_product": [name for flag, name in DOT_PRODUCT_FLAGS.items() if flag in flags],
            "litert": litert_version(), "cores": os.cpu_count()}


def line(info=None):
    """One line for a table header: 'CPU ... (2 cores), int8 dot products: ..., LiteRT ...'."""
    info = info or describe()
    dots = ", ".join(info["int8_dot_product"]) or "none"
    return f"CPU {info['cpu']} ({info['cores']} cores), int8 dot products: {dots}; {info['litert']}"
