"""The image build prunes the Swagger UI files /docs never serves; what it serves stays."""

from __future__ import annotations

import shutil
from pathlib import Path

from swagger_ui_bundle import swagger_ui_path

from service.http.handlers.docs import prune_unserved_assets

SERVED = {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"}


def test_pruning_keeps_exactly_the_served_files(tmp_path: Path) -> None:
    copy = tmp_path / "swagger-ui"
    shutil.copytree(str(swagger_ui_path), copy)
    before = {path.name for path in copy.iterdir()}
    assert before > SERVED  # the pinned wheel ships them, and more
    removed = prune_unserved_assets(copy)
    assert {path.name for path in copy.iterdir()} == SERVED
    assert set(removed) == before - SERVED
    assert any(name.endswith(".map") for name in removed)
