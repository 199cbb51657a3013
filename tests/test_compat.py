"""keras_coatnet/_compat.py (each private Keras API shim, the tested Keras range) and the package boundaries:
private calls only in the compat module, no dead public names, one definition per concept, installed packages
importing only what the install declares, console scripts naming the extra they need."""

import ast
import importlib.metadata
import logging
import re
import sys
from pathlib import Path

import keras
import pytest
import tomllib

from keras_coatnet import _compat

REPO = Path(__file__).resolve().parents[1]
INSTALLED_PACKAGES = ("keras_coatnet", "training", "export")


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _sources(*packages):
    return sorted(p for pkg in packages for p in (REPO / pkg).rglob("*.py"))


# --- the shims -------------------------------------------------------------------------------------------------

def test_compute_output_spec_traces_and_builds_the_layers_a_function_calls():
    dense = keras.layers.Dense(3)
    spec = _compat.compute_output_spec(lambda x: dense(x) * 2.0, keras.KerasTensor((4, 5)))
    assert tuple(spec.shape) == (4, 3)
    assert dense.built and tuple(dense.kernel.shape) == (5, 3)


class _Pair(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(2, name="first")
        self.second = keras.Sequential([keras.layers.Dense(2, name="inner")], name="second")


def test_sublayers_lists_direct_children_in_order_and_all_descendants_when_recursive():
    pair = _Pair()
    assert [s.name for s in _compat.sublayers(pair)] == ["first", "second"]
    assert [s.name for s in _compat.sublayers(pair, recursive=True)] == ["first", "second", "inner"]
    assert pair not in _compat.sublayers(pair, recursive=True)


@pytest.mark.parametrize("version,tested", [("3.15.0", True), ("3.15.1", True), ("3.14.9", False),
                                            ("3.16.0", False), ("3.16.0.dev2026", False), ("4.0.0", False)])
def test_keras_version_check_warns_once_in_one_line_outside_the_tested_range(version, tested, monkeypatch, caplog):
    monkeypatch.setattr(_compat, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="keras_coatnet"):
        assert _compat.check_keras_version(version) is tested
        assert _compat.check_keras_version(version) is tested
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == (0 if tested else 1)
    if not tested:
        assert "\n" not in messages[0] and version in messages[0] and "keras>=3.15,<3.16" in messages[0]


def test_installed_keras_is_in_the_tested_range():
    assert _compat.check_keras_version(keras.version()), f"Keras {keras.version()} is not the tested one"


def test_pyproject_pins_keras_to_the_tested_range():
    low, high = _compat.TESTED_KERAS
    assert f"keras>={low[0]}.{low[1]},<{high[0]}.{high[1]}" in _pyproject()["project"]["dependencies"]


def test_private_keras_api_only_in_the_compat_module():
    """The issue's grep (`keras.src`, `._name(`), less dunder calls such as `super().__init__(`."""
    private = re.compile(r"keras\.src|\._[a-z][a-z_]*\(")
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in _sources("keras_coatnet")
            if p.name != "_compat.py" for i, line in enumerate(p.read_text().splitlines(), 1)
            if private.search(line) and not line.lstrip().startswith("#")]
    assert not hits, "private Keras API outside keras_coatnet/_compat.py:\n" + "\n".join(hits)


def test_shims_on_the_torch_backend():
    """The shims are backend code: on PyTorch, a CompositeLayer (the Stem) builds by tracing `call` and lists its
    sub-layers. (A whole model is issue 14's: torch rejects today's dotted layer names.)"""
    pytest.importorskip("torch")
    import subprocess

    code = ("import keras\n"
            "from keras_coatnet import _compat\n"
            "from keras_coatnet.layers import Stem\n"
            "stem = Stem((8, 16), name='stem')\n"
            "stem.build((2, 32, 32, 3))\n"
            "names = [s.name for s in _compat.sublayers(stem)]\n"
            "assert names == ['conv1_pad', 'conv1', 'norm1', 'conv2'], names\n"
            "assert tuple(stem.conv2[-1].kernel.shape) == (3, 3, 8, 16)\n"
            "y = stem(keras.ops.ones((2, 32, 32, 3)))\n"
            "assert tuple(y.shape) == (2, 16, 16, 16), y.shape\n"
            "print('ok', keras.backend.backend())\n")
    env = {"KERAS_BACKEND": "torch", "PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
           "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok torch"), out.stderr[-3000:]


# --- one idea, one place -----------------------------------------------------------------------------------------

def test_every_public_name_of_keras_coatnet_is_used_somewhere():
    """Dead code: a public module-level name no other file (code, tests, docs) and not its own module uses."""
    files = [p for p in REPO.rglob("*") if (p.suffix in (".py", ".md", ".toml") or p.name == "Makefile")
             and not {".venv", ".git", "runs"} & set(p.relative_to(REPO).parts)]
    texts = {p: p.read_text(errors="ignore") for p in files}
    unused = []
    for module in _sources("keras_coatnet"):
        for node in ast.parse(texts[module]).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            else:
                continue
            for name in (n for n in names if not n.startswith("_")):
                word = re.compile(rf"\b{re.escape(name)}\b")
                if len(word.findall(texts[module])) < 2 and not any(
                        word.search(t) for p, t in texts.items() if p != module):
                    unused.append(f"{module.relative_to(REPO)}: {name}")
    assert not unused, f"unused public names: {unused}"


def test_one_definition_of_the_network_stride_and_of_the_norm_layers():
    strides = [f"{p.relative_to(REPO)}" for p in _sources(*INSTALLED_PACKAGES)
               for node in ast.parse(p.read_text()).body if isinstance(node, ast.Assign)
               for t in node.targets if isinstance(t, ast.Name) and t.id in ("STRIDE", "MIN_SIZE")]
    assert strides == ["keras_coatnet/builder.py"]
    norms = [f"{p.relative_to(REPO)}" for p in _sources("keras_coatnet") for line in p.read_text().splitlines()
             if re.search(r"(?<!class )\b(BatchNorm|BatchNormalization|LayerNormalization)\(", line)]
    assert norms == ["keras_coatnet/layers/common.py"] * 2, norms


# --- packaging ---------------------------------------------------------------------------------------------------

# Imported only behind a clear "pip install ..." message, and not part of any extra.
OPTIONAL_UNDECLARED = {"tensorflow_datasets"}  # training/data.py, only for --dataset tfds:NAME


def _declared_distributions():
    project = _pyproject()["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_installed_packages_import_only_what_the_install_declares():
    """Every absolute import in keras_coatnet/, training/, export/ is the standard library, one of these
    packages, or a module of a distribution pyproject.toml declares (a dependency or an extra)."""
    declared, ours = _declared_distributions(), set(INSTALLED_PACKAGES)
    provided_by = importlib.metadata.packages_distributions()
    bad = []
    for path in _sources(*INSTALLED_PACKAGES):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = {node.module.split(".")[0]}
            else:
                continue
            for top in tops - ours - set(sys.stdlib_module_names) - OPTIONAL_UNDECLARED:
                dists = {d.lower().replace("_", "-") for d in provided_by.get(top, ())}
                if not dists & declared:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} imports {top}")
    assert not bad, bad
    assert set(_pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]) == {f"{p}*" for p in ours}


def test_train_script_names_its_extra_in_one_line_when_pyyaml_is_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` now raises ModuleNotFoundError
    for name in [n for n in sys.modules if n == "training" or n.startswith("training.")]:
        monkeypatch.delitem(sys.modules, name)
    from training.train import main  # what the keras-coatnet-train console script runs

    assert main(["--preset", "digits", "--output-dir", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pyyaml" in err and "pip install 'keras-coatnet[train]'" in err, err
    scripts = _pyproject()["project"]["scripts"]
    assert scripts["keras-coatnet-train"] == "training.train:main"


def test_installed_export_package_runs_no_benchmarks_module_it_finds_on_the_path(tmp_path):
    """An installed export/ (no repository around it) compares with no peer, and does not import a `benchmarks`
    package that happens to be on sys.path (here: a decoy in the working directory)."""
    import shutil
    import subprocess

    shutil.copytree(REPO / "export", tmp_path / "site" / "export")
    (tmp_path / "work" / "benchmarks").mkdir(parents=True)
    (tmp_path / "work" / "benchmarks" / "__init__.py").write_text("")
    (tmp_path / "work" / "benchmarks" / "peer.py").write_text("def run_peer(*a, **k):\n    print('DECOY RAN')\n")
    code = ("import sys; sys.path[:0] = [sys.argv[1], '']\n"
            "from export.benchmark import peer_fp32\n"
            "print('result', peer_fp32('.', (32, 32), 10))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], cwd=tmp_path / "work",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "DECOY RAN" not in out.stdout and "result None" in out.stdout, out.stdout
