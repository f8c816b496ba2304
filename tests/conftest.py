import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One process per core (`-n auto`): torch's own thread pool per worker would only oversubscribe the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Tests that build real models need torch, transformers and peft; skip them cleanly if absent."""
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        skip = pytest.mark.skip(reason="needs torch, transformers and peft (pip install -e '.[verify]')")
        for item in items:
            if "needs_torch" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Profiles saved by `costplan calibrate` go to a throw-away folder, never the user's cache."""
    monkeypatch.setenv("COSTPLAN_CACHE", str(tmp_path_factory.mktemp("costplan-cache")))


@pytest.fixture(autouse=True)
def _no_hub(tmp_path_factory, monkeypatch):
    """No test reaches the Hugging Face Hub or reads the user's cache: an empty cache, offline."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
