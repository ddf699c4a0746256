"""The docstring examples of pipeline.detect run as written (from the repository root)."""

from __future__ import annotations

import doctest
import os
from pathlib import Path
from types import ModuleType

import pytest

from pipeline.detect import letterbox, nms, yolo

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", [letterbox, nms, yolo], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType, shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if module is yolo and not (REPO.parent / "shared").is_dir():
        pytest.skip("the YoloDetector example reads ../shared relative to the repository")
    monkeypatch.chdir(REPO)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
    assert os.getcwd() == str(REPO)
