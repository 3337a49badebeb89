"""The README shows what the tests run: its optimizer table is the one the declarations
generate, and its C++ and Keras examples are the files other tests compile and run."""

from __future__ import annotations

from pathlib import Path

from fastoptim import spec

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_optimizer_table_is_generated_from_the_declarations():
    table = spec.markdown_table().strip()
    assert table.splitlines()[0].startswith("| optimizer |")
    assert table in README, "paste the output of `python -m fastoptim.spec` into the README"


def test_cpp_example_is_the_compiled_file():
    code = (ROOT / "tests" / "cpp" / "readme_adam.cpp").read_text(encoding="utf-8").strip()
    assert f"```cpp\n{code}\n```" in README


def test_keras_example_is_the_tested_file():
    code = (ROOT / "docs" / "keras_schedule.py").read_text(encoding="utf-8").strip()
    assert f"```python\n{code}\n```" in README
