import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """(folder, torch CLIPModel) of a tiny random CLIP saved with save_pretrained."""
    from checkpoints import make_clip_checkpoint

    path = tmp_path_factory.mktemp("tiny_clip")
    model = make_clip_checkpoint(path)
    return path, model
