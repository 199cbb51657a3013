"""Files appear whole or not at all: keras_coatnet.convert on a full disk (an RLIMIT_FSIZE-limited process)
leaves no partial file and keeps the earlier good one."""

import os
import resource
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(__file__)
FIXTURE = os.path.join(HERE, "fixtures", "timm", "tiny_coatnet_rmlp_nano_rw")
CONFIG, CHECKPOINT = os.path.join(FIXTURE, "config.json"), os.path.join(FIXTURE, "model.safetensors")


def _convert(output, max_file_bytes=None):
    def limit():
        if max_file_bytes:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([sys.executable, "-m", "keras_coatnet.convert", CONFIG, CHECKPOINT, str(output), "--quiet"],
                          capture_output=True, text=True, timeout=300, preexec_fn=limit,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.parametrize("name", ["model.keras", "model.weights.h5"])
def test_full_disk_keeps_the_earlier_file_and_leaves_no_partial_one(tmp_path, name):
    out = tmp_path / name
    good = _convert(out)
    assert good.returncode == 0, good.stderr
    before = out.read_bytes()
    full = _convert(out, max_file_bytes=len(before) // 2)
    assert full.returncode == 2, (full.returncode, full.stderr[-2000:])
    assert full.stderr.strip().splitlines()[-1].startswith("convert: error: ") and "Traceback" not in full.stderr
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_full_disk_inside_an_atomic_write_names_the_final_file(tmp_path):
    """A write that fails for want of space (here TensorFlow-style text, no errno) becomes an OSError naming the
    file the user asked for, which the CLI prints as one line; nothing appears under the final name."""
    import errno

    from keras_coatnet.atomic import atomic_path
    from keras_coatnet.cli import message

    final = tmp_path / "best.keras"
    with pytest.raises(OSError) as e:
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("{{function_node __wrapped__SaveV2}} /x/variables_temp/part-0; File too large [Op:SaveV2]")
    assert e.value.errno == errno.EFBIG and e.value.filename == str(final)
    assert message(e.value) == f"cannot write {final}: File too large"
    assert not final.exists() and list(tmp_path.iterdir()) == []


def test_sigterm_exits_143_even_when_a_library_wraps_the_exit():
    """TensorFlow turns an exception raised in a Python callback into its own error: SIGTERM still exits 143."""
    import signal

    from keras_coatnet.atomic import exit_on_sigterm

    with pytest.raises(SystemExit) as done:
        with exit_on_sigterm():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except SystemExit as e:
                raise RuntimeError("UnknownError: SystemExit raised in a callback") from e
    assert done.value.code == 128 + signal.SIGTERM
