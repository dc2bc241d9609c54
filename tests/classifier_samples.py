"""Held-out phantom samples for the classifier and explanation tests (built once per session).

Eight small phantom cases (192 px in-plane at most, 48 slices, 3-4 nodules of 10-20 mm) from a seed
no training used, cut into samples as the training data is (``core.training.classifier_data``): about
46 positives, so one hard nodule (two crops) moves a hit rate by 4%, not by 17% as with two cases;
about 25 s on an idle machine.
"""

from __future__ import annotations

from functools import lru_cache

import pytest

#: never used by training (20241105), validation (20241106) or the benchmark (7777)
TEST_SEED = 31337
TEST_CASES = 8


@lru_cache(maxsize=1)
def heldout_samples():
    from napari_medcad.core.training.classifier_data import DATA_RECIPE, build_samples

    recipe = {**DATA_RECIPE, "max_in_plane": 192, "max_slices": 48, "crops_per_nodule": 2, "n_nodules": [3, 4],
              "nodule_diameter_mm": [10.0, 20.0]}
    return build_samples(TEST_SEED, TEST_CASES, recipe)


@pytest.fixture(autouse=False)
def one_thread():
    """torch on one thread for the test (the suite shares two cores with training jobs)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
