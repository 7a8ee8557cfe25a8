"""Repository invariants: environment.yml matches pyproject.toml, notebooks match their pairs."""

import ast
import importlib.util
import json
import re
import tomllib
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_pyproject_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {_name(r) for r in project["dependencies"] + extras["dev"] + extras["serve"]}
    wanted = {CONDA_NAMES.get(name, name) for name in wanted}
    listed = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        match = re.match(r"\s+-\s+([A-Za-z0-9_.-]+)\s*([<>=].*)?$", line)
        if match and match.group(1) not in ("python", "pip"):
            listed.add(match.group(1).lower())
    assert listed == wanted


def test_constraints_pin_cpu_torch():
    pins = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", pins, re.MULTILINE)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_paired_stripped_and_parameterized(path):
    script = path.with_suffix(".py")
    assert script.exists(), f"{path.name} has no py:percent pair; run jupytext --sync"
    notebook = jupytext.read(path)
    paired = jupytext.read(script)
    sources = [(c.cell_type, c.source.strip()) for c in notebook.cells]
    assert sources == [(c.cell_type, c.source.strip()) for c in paired.cells], (
        f"{path.name} and {script.name} differ; run jupytext --sync {path}"
    )
    raw = json.loads(path.read_text())
    assert all(not c.get("outputs") for c in raw["cells"] if c["cell_type"] == "code"), (
        f"{path.name} is committed with outputs; clear them"
    )
    assert raw["metadata"].get("kernelspec", {}).get("language") == "python", (
        f"{path.name} has no Python kernelspec: papermill (make run) cannot execute it"
    )
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert "colab" in code[0].metadata.get("tags", []), (
        f"the first code cell of {path.name} must be the Colab cell; run python -m mfutils.colab"
    )
    assert "parameters" in code[1].metadata.get("tags", []), (
        f"the second code cell of {path.name} must be the papermill 'parameters' cell"
    )
    assert re.search(r"^assert ", "\n".join(c.source for c in code), re.MULTILINE), (
        f"{path.name} never asserts its headline metric"
    )


# The package's one import direction, lowest layer first: a module may import its own layer
# and the layers below, never above (function-local imports included).
LAYERS = (
    ("device", "data", "results", "plotting"),
    ("metrics", "sampling", "losses", "embeddings", "features"),
    ("train", "distributed"),
    ("models",),
    ("experiments", "evaluation", "blending", "tuning", "compact", "parallel_fit"),
    ("serving", "cli", "series", "book", "colab"),
)


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts == ["mfutils"]:
        return 0
    for layer, names in enumerate(LAYERS):
        if parts[1] in names:
            return layer
    raise AssertionError(f"{module} is in no layer of LAYERS: add it")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("mfutils")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mfutils"):
            for alias in node.names:
                sub = ROOT / node.module.replace(".", "/") / alias.name
                child = sub.with_suffix(".py").exists() or sub.is_dir()
                found.append(f"{node.module}.{alias.name}" if child else node.module)
    return found


def test_imports_follow_the_one_direction():
    against = []
    for path in sorted((ROOT / "mfutils").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for imported in _imports(path):
            if _layer(imported) > _layer(module):
                against.append(f"{module} imports {imported}")
    assert not against, against


def test_readme_result_tables_match_their_json():
    spec = importlib.util.spec_from_file_location("readme", ROOT / "benchmarks" / "readme.py")
    readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme)
    assert readme.main(["--check"]) == 0, "run python benchmarks/readme.py"
