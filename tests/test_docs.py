"""The plugin guide's examples work as printed: a stranger copies them verbatim."""

import re
import sys
from pathlib import Path

import pytest

from dnn import testing

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def blocks(language: str) -> list[str]:
    """The fenced code blocks of ``language`` in the plugin guide, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", GUIDE.read_text(), re.S | re.M)


def test_the_optimizer_example_passes_the_conformance_kit():
    namespace = {}
    exec(compile(blocks("python")[0], str(GUIDE), "exec"), namespace)
    testing.check_optimizer(namespace["Lion"])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in Python 3.11")
def test_the_pyproject_example_has_what_pip_needs():
    import tomllib

    config = tomllib.loads(blocks("toml")[0])
    assert config["build-system"]["build-backend"] == "setuptools.build_meta"
    assert {"name", "version"} <= set(config["project"])
    assert config["project"]["entry-points"]["dnn.optimizers"] == {"lion": "dnn_lion:Lion"}
