"""The package's floors as the product ships them: what each layer loads, the installed package list, module sizes.
The import contract itself (no upward import, no cycle) is import-linter's, run by scripts/lint.sh in CI."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500
# Where each installed package lives in the checkout (pyproject's package-dir).
PACKAGE_DIRS = {
    "streamrec": ROOT / "streamrec",
    "streamrec.train": ROOT / "train",
    "streamrec.engines": ROOT / "engines",
}


def loaded_after(statement: str) -> set[str]:
    """The streamrec modules a fresh interpreter has loaded after running `statement`."""
    code = f"import sys\n{statement}\nprint('\\n'.join(m for m in sys.modules if m.startswith('streamrec')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return set(out.split())


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        ("from streamrec import Runtime", ("streamrec.train", "streamrec.cli", "streamrec.bench")),
        ("import streamrec.runtime.pipeline", ("streamrec.train", "streamrec.cli", "streamrec.bench")),
        ("import streamrec.engines", ("streamrec.train", "streamrec.runtime", "streamrec.cli", "streamrec.bench")),
        ("import streamrec.core.networks, streamrec.core.graphs", ("streamrec.engines", "streamrec.runtime")),
        ("import streamrec.train.train_fusion", ("streamrec.runtime", "streamrec.cli", "streamrec.bench")),
    ],
)
def test_a_layer_does_not_load_the_layers_above_it(statement: str, forbidden: tuple[str, ...]) -> None:
    loaded = loaded_after(statement)
    above = sorted(m for m in loaded if m.startswith(forbidden))
    assert not above, f"`{statement}` loads {above}"


def test_the_runtime_is_the_documented_python_entry_point() -> None:
    import streamrec
    from streamrec import Runtime, RuntimeOptions
    from streamrec.runtime.pipeline import Runtime as PipelineRuntime

    assert Runtime is PipelineRuntime and RuntimeOptions().backend
    with pytest.raises(AttributeError):
        streamrec.NoSuchThing  # noqa: B018


def test_the_cli_starts_without_the_networks() -> None:
    loaded = loaded_after("import streamrec.cli; streamrec.cli.build_parser()")
    heavy = sorted(m for m in loaded if m.startswith(("streamrec.train", "streamrec.engines", "streamrec.runtime.")))
    assert not heavy, f"`streamrec --help` would load {heavy}"


def test_every_package_directory_is_installed() -> None:
    """pyproject lists the packages by hand (find cannot follow package-dir): a new folder must be added there."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {k: ROOT / v for k, v in config["package-dir"].items()} == {
        k: v for k, v in PACKAGE_DIRS.items() if k != "streamrec"
    }
    found = set()
    for name, folder in PACKAGE_DIRS.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder).parts
            if not any(part.startswith((".", "__pycache__")) for part in relative):
                dotted = ".".join((name, *relative))
                if not any(dotted.startswith(p + ".") for p in PACKAGE_DIRS if p != name and p.startswith(name)):
                    found.add(dotted)
    assert found == set(config["packages"])


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for folder in PACKAGE_DIRS.values()
        for path in folder.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
