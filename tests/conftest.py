import os

import pytest

# The suite checks the exact float32 path against PyTorch: a load without a dtype gets
# float32 here whatever the machine would choose (convis_jax.models.precision). The
# bfloat16 path and the device's choice are tested with the dtype named
# (tests/models/test_precision.py).
os.environ["CONVIS_JAX_DTYPE"] = "float32"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """(folder, torch CLIPModel) of a tiny random CLIP saved with save_pretrained."""
    from convis_jax.testing import make_clip_checkpoint

    path = tmp_path_factory.mktemp("tiny_clip")
    model = make_clip_checkpoint(path)
    return path, model


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Every cache of the test session lives in a temporary folder, never in HOME."""
    import os

    previous = os.environ.get("CONVIS_JAX_CACHE")
    os.environ["CONVIS_JAX_CACHE"] = str(tmp_path_factory.mktemp("convis_cache"))
    yield
    if previous is None:
        os.environ.pop("CONVIS_JAX_CACHE", None)
    else:
        os.environ["CONVIS_JAX_CACHE"] = previous
