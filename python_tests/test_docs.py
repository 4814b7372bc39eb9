"""The docs live in the repository: no file cites a path outside it (the project's
former spec lived in a folder beside the checkout, which users never have), and every docs/ page a
file cites exists."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = (".py", ".md", ".h", ".cpp", ".cu", ".txt", ".toml", ".yaml", ".yml", ".cfg")


def _tracked_text_files():
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): every file
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and "build" not in p.parts]
    paths = [ROOT / n for n in names if n.endswith(TEXT) or n in (".ci/run", ".gitignore", "CMakeLists.txt")]
    return [p for p in paths if p.is_file()]


def test_no_file_cites_a_path_outside_the_repository():
    outside = []
    for path in _tracked_text_files():
        text = path.read_text(errors="replace")
        for match in re.finditer(r"(?:\.\./)+[\w.\-/]*", text):
            target = (path.parent / match.group(0)).resolve()
            if ROOT != target and ROOT not in target.parents:
                outside.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
        if "shared/spec" in text and path.name != Path(__file__).name:
            outside.append(f"{path.relative_to(ROOT)}: shared/spec")
    assert not outside, "\n".join(outside)


def test_every_cited_docs_page_exists():
    missing = set()
    for path in _tracked_text_files():
        for name in re.findall(r"docs/([\w\-]+\.md)", path.read_text(errors="replace")):
            if not (ROOT / "docs" / name).is_file():
                missing.add(f"{path.relative_to(ROOT)}: docs/{name}")
    assert not missing, sorted(missing)


def test_the_three_design_pages_exist_and_are_cited_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in ("ops.md", "methods.md", "engineering.md", "data.md", "trainer.md"):
        assert (ROOT / "docs" / name).is_file(), name
        assert f"docs/{name}" in readme, name
