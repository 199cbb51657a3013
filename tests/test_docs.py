"""The docs (README.md and docs/*.md): every relative link resolves, and every shell command that can run offline
runs as written (plus fast-mode flags) and exits 0; the others are skipped for a stated reason. Catches commands
naming files nothing writes."""

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The docs in the order their commands build on each other (train, then export, then run the files).
DOCS = ["README.md", "docs/training.md", "docs/export.md", "docs/examples.md", "docs/weights.md",
        "docs/backends.md", "docs/benchmarks.md", "docs/layout.md"]
# Commands that cannot run here, by a piece of their text -> why.
SKIP = {
    "make ": "runs the demo / the whole suite (make test runs both)",
    "pip install": "network",
    "gs://": "cloud data", "/data/": "a data set that is not here", "data/flowers": "a data set that is not here",
    "TF_CONFIG": "needs two hosts", "--weights imagenet": "published weights cannot be downloaded",
    "model.safetensors": "a downloaded timm checkpoint",
    "photos/": "the user's photos", "python -m export model.keras": "the user's model",
    "export.benchmark": "minutes", "benchmarks.": "minutes",
}
# Fast mode: flags appended to commands of a module (argparse keeps the last value).
FAST = {
    "training.train --preset digits --output-dir": "--epochs 1",
    "python -m export runs/digits/best.keras": "--formats fp32,int8 --no-strict --num-heldout 16",
}


def readme_commands():
    """Every command of the docs' ```bash blocks, in DOCS order (continuation lines joined, comments dropped)."""
    text = "\n".join((ROOT / doc).read_text() for doc in DOCS)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for cmd in re.sub(r"\\\n", " ", block).splitlines():
            cmd = cmd.strip()
            if cmd and not cmd.startswith("#"):
                if " #" in cmd and not cmd.startswith("python -c"):
                    cmd = cmd.split(" #")[0].rstrip()
                commands.append(cmd)
    return commands


def skip_reason(cmd):
    return next((why for piece, why in SKIP.items() if piece in cmd), None)


def test_docs_are_listed_and_their_relative_links_resolve():
    assert sorted(DOCS) == sorted(["README.md"] + [f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")])
    broken = []
    for doc in DOCS:
        path = ROOT / doc
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                broken.append(f"{doc}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
                broken.append(f"{doc}: {target} (no such heading)")
    assert broken == []


def _anchors(markdown):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as dashes."""
    heads = re.findall(r"(?m)^#+ (.*)$", markdown)
    return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_readme_is_short():
    assert len((ROOT / "README.md").read_bytes()) < 12_000


def test_every_readme_command_is_run_or_skipped_for_a_reason():
    commands = readme_commands()
    runnable = [c for c in commands if skip_reason(c) is None]
    assert len(runnable) >= 6, runnable
    assert any("python -m export runs/digits/best.keras" in c for c in runnable)


@pytest.mark.slow
def test_offline_readme_commands_run_in_order(tmp_path):
    """Runs the offline commands in README order in an empty folder; each must exit 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for cmd in readme_commands():
        if skip_reason(cmd):
            continue
        cmd = cmd.replace("/tmp/shapes", str(tmp_path / "shapes"))
        cmd = cmd.replace("runs/<run>/", "out/")  # the export command above writes out/
        if "<time>" in cmd:
            (run_dir,) = glob.glob(str(tmp_path / "runs" / "finetune-*"))
            cmd = cmd.replace("runs/finetune-<time>", run_dir)
        for piece, flags in FAST.items():
            if piece in cmd:
                cmd = f"{cmd} {flags}"
        proc = subprocess.run(["bash", "-c", cmd.replace("python ", f"{sys.executable} ", 1)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (cmd, proc.stdout[-1500:], proc.stderr[-3000:])
