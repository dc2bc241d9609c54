"""Tiled inference, mask skipping, device selection (mocked GPUs), out-of-memory fallbacks."""

import numpy as np
import pytest
import torch

from napari_medcad.core.errors import Cancelled, MedcadError
from napari_medcad.core.inference import devices, engine
from napari_medcad.core.inference.engine import TileSettings, count_windows, infer_probabilities


class Pointwise(torch.nn.Module):
    """A 1x1 convolution: tiling must not change its output at all."""

    def __init__(self, dims=3, channels=1):
        super().__init__()
        conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
        self.conv = conv(1, channels, 1)
        torch.nn.init.constant_(self.conv.weight, 2.0)
        torch.nn.init.constant_(self.conv.bias, -1.0)
        self.calls = 0

    def forward(self, x):
        self.calls += x.shape[0]
        return self.conv(x)


def reference(network, volume):
    with torch.no_grad():
        return torch.sigmoid(network(torch.from_numpy(volume)[None, None]))[0].numpy()


@pytest.mark.parametrize("shape, roi", [((37, 50, 61), (16, 24, 24)), ((70, 90), (32, 32)), ((5, 20, 20), (16, 32, 32))])
def test_tiling_matches_whole_image(shape, roi):
    volume = np.random.default_rng(0).random(shape, dtype=np.float32)
    network = Pointwise(dims=len(shape))
    seen = []
    probabilities, summary = infer_probabilities(network, volume, TileSettings(roi, 0.5, 3), progress=seen.append)
    np.testing.assert_allclose(probabilities, reference(network, volume), atol=1e-5)
    assert probabilities.shape == (1,) + shape
    padded = [max(s, r) for s, r in zip(shape, roi)]
    assert summary.windows_total == count_windows(padded, roi, 0.5) == summary.windows_run
    assert seen[-1].done == seen[-1].total == summary.windows_total
    assert summary.device == "cpu" and summary.precision == "fp32"


def test_windows_outside_mask_are_skipped():
    volume = np.random.default_rng(1).random((48, 96, 96), dtype=np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[20:28, 10:30, 60:80] = True
    network = Pointwise()
    probabilities, summary = infer_probabilities(network, volume, TileSettings((16, 32, 32), 0.25, 2), mask=mask)
    whole = count_windows(volume.shape, (16, 32, 32), 0.25)
    assert summary.windows_total < whole  # cropped to the mask's box
    assert summary.windows_run + summary.windows_skipped == summary.windows_total
    assert network.calls == summary.windows_run
    np.testing.assert_allclose(probabilities[0][mask], reference(network, volume)[0][mask], atol=1e-5)
    far = probabilities[0][:, :, :20]
    assert np.all(far == 0)  # never looked at


def test_empty_mask_means_nothing_to_search():
    volume = np.zeros((20, 40, 40), np.float32)
    probabilities, summary = infer_probabilities(Pointwise(), volume, TileSettings((16, 16, 16)),
                                                 mask=np.zeros(volume.shape, bool))
    assert summary.windows_total == 0 and not probabilities.any()


def test_bad_inputs_are_user_errors():
    with pytest.raises(MedcadError, match="NaN"):
        infer_probabilities(Pointwise(), np.full((8, 8, 8), np.nan, np.float32), TileSettings((8, 8, 8)))
    with pytest.raises(MedcadError, match="3-D"):
        infer_probabilities(Pointwise(), np.zeros((8, 8), np.float32), TileSettings((8, 8, 8)))
    with pytest.raises(MedcadError, match="output channels"):
        infer_probabilities(Pointwise(channels=2), np.zeros((8, 8, 8), np.float32), TileSettings((8, 8, 8)))


class Misfit(torch.nn.Module):
    """A network that does not fit a 1-channel 3-D card: it answers as ``mode`` says."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        if self.mode == "fails":
            return torch.nn.functional.conv3d(x, torch.ones(1, 2, 1, 1, 1))  # wants 2 input channels
        if self.mode == "halves":
            return x[:, :, ::2, ::2, ::2]
        if self.mode == "vector":
            return x.mean(dim=(2, 3, 4))
        if self.mode == "nan":
            return x * float("nan")
        return "not a tensor"


@pytest.mark.parametrize("mode, message", [
    ("fails", "network failed on a batch of windows of shape \\(1, 1, 8, 8, 8\\).*2 channels"),
    ("halves", "must keep the window's size"),
    ("vector", "must keep the window's size"),
    ("nan", "NaN scores"),
    ("text", "not a tensor"),
])
def test_a_network_that_does_not_fit_its_card_is_a_one_line_user_error(mode, message):
    with pytest.raises(MedcadError, match=message) as caught:
        infer_probabilities(Misfit(mode), np.zeros((8, 8, 8), np.float32), TileSettings((8, 8, 8)))
    assert "\n" not in str(caught.value)


def test_progress_callback_can_cancel():
    def cancel(_):
        raise Cancelled()

    with pytest.raises(Cancelled):
        infer_probabilities(Pointwise(), np.zeros((40, 40, 40), np.float32), TileSettings((16, 16, 16)), progress=cancel)


def test_device_selection(monkeypatch):
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert devices.select_device("auto").type == "cpu"
    with pytest.raises(MedcadError, match="CUDA"):
        devices.select_device("cuda")
    with pytest.raises(MedcadError, match="MPS"):
        devices.select_device("mps")
    with pytest.raises(MedcadError, match="unknown device"):
        devices.select_device("tpu")
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert devices.select_device("auto").type == "mps"
    assert devices.autocast_dtype(torch.device("mps")) is None
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    assert devices.select_device("auto").type == "cuda"
    assert devices.select_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert devices.autocast_dtype(torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert devices.autocast_dtype(torch.device("cuda")) is torch.float16
    assert devices.autocast_dtype(torch.device("cpu")) is None


def test_out_of_memory_halves_batch_then_moves_to_cpu(monkeypatch):
    real = engine._sliding_window
    calls = []

    def flaky(network, volume, settings, device, batch_size, *args):
        calls.append((device.type, batch_size))
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(network, volume, settings, device, batch_size, *args)

    monkeypatch.setattr(engine, "_sliding_window", flaky)
    monkeypatch.setattr(engine, "select_device", lambda requested: torch.device("cuda"))
    volume = np.random.default_rng(2).random((20, 20, 20), dtype=np.float32)
    network = Pointwise()
    probabilities, summary = infer_probabilities(network, volume, TileSettings((16, 16, 16), 0.25, 4), device="cuda")
    assert calls == [("cuda", 4), ("cuda", 2), ("cuda", 1), ("cpu", 4)]
    assert summary.device == "cpu" and len(summary.notes) == 3 and "CPU" in summary.notes[-1]
    np.testing.assert_allclose(probabilities, reference(network, volume), atol=1e-5)


def test_out_of_memory_on_cpu_is_a_clear_error(monkeypatch):
    def always(*args):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate... out of memory")

    monkeypatch.setattr(engine, "_sliding_window", always)
    with pytest.raises(MedcadError, match="not enough memory"):
        infer_probabilities(Pointwise(), np.zeros((16, 16, 16), np.float32), TileSettings((16, 16, 16), batch_size=2))


def test_other_errors_are_not_swallowed(monkeypatch):
    def broken(*args):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(engine, "_sliding_window", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        infer_probabilities(Pointwise(), np.zeros((16, 16, 16), np.float32), TileSettings((16, 16, 16)))


def two_lungs(shape=(40, 96, 160)):
    """Two separate blobs, far apart in x, like the lungs on either side of the mediastinum."""
    mask = np.zeros(shape, bool)
    mask[4:36, 20:76, 10:50] = True
    mask[4:36, 20:76, 110:150] = True
    return mask


def test_plan_regions_splits_where_it_saves_windows():
    mask = two_lungs()
    settings = TileSettings((16, 48, 48), 0.25, 2, mask_margin_zyx=(2, 4, 4))
    plan = engine.plan_regions(mask, settings)
    assert len(plan) >= 2
    owned = np.zeros(mask.shape, int)
    for core, region in plan:
        owned[core] += 1
        for c, r, n in zip(core, region, mask.shape):  # the region holds its core and stays in the image
            assert 0 <= r.start <= c.start and c.stop <= r.stop <= n
    assert owned.max() == 1 and np.all(owned[mask] == 1)  # disjoint cores holding every mask voxel
    planned = sum(count_windows([s.stop - s.start for s in region], settings.roi_size_zyx, 0.25) for _, region in plan)
    one_box = engine.mask_bounding_box(mask, settings.margin)
    assert planned < count_windows([s.stop - s.start for s in one_box], settings.roi_size_zyx, 0.25)
    assert engine.plan_regions(np.zeros((8, 8, 8), bool), settings) == []


def test_masked_output_is_the_blend_of_the_windows_that_ran():
    """Skipped windows must not pull their neighbours' output towards 0, and regions must blend
    like one sliding window: with a pointwise network every voxel a window ran on is exact."""
    mask = two_lungs()
    volume = np.random.default_rng(3).random(mask.shape, dtype=np.float32)
    network = Pointwise()
    settings = TileSettings((16, 48, 48), 0.25, 2, mask_margin_zyx=(2, 4, 4))
    probabilities, summary = infer_probabilities(network, volume, settings, mask=mask)
    calls = network.calls
    expected = reference(network, volume)
    searched = probabilities[0] > 0  # sigmoid(2v - 1) > 0 everywhere a window ran
    assert np.all(searched[mask])
    np.testing.assert_allclose(probabilities[0][searched], expected[0][searched], atol=1e-5)
    assert not searched[:, :, 60:100].any()  # the gap between the blobs is never searched
    assert summary.regions >= 2 and summary.windows_run < summary.windows_plain
    assert summary.windows_run + summary.windows_skipped == summary.windows_total
    assert calls == summary.windows_run


def test_a_skipped_window_does_not_dilute_its_neighbours():
    """A ring (2-D): the centre window holds no mask and is skipped; where it overlaps the
    windows that ran the output is still exact, and only what it alone covered is 0."""
    mask = np.zeros((80, 80), bool)
    mask[4:76, 4:76] = True
    mask[22:58, 22:58] = False
    volume = np.random.default_rng(4).random(mask.shape, dtype=np.float32)
    network = Pointwise(dims=2)
    settings = TileSettings((32, 32), 0.25, 4, mask_margin_zyx=(80, 80))  # one box: nothing to split
    probabilities, summary = infer_probabilities(network, volume, settings, mask=mask)
    assert (summary.regions, summary.windows_run, summary.windows_skipped) == (1, 8, 1)
    expected = reference(network, volume)[0]
    ran = np.zeros(mask.shape, bool)
    ran[:, :32] = ran[:, 48:] = ran[:32, :] = ran[48:, :] = True  # the centre window is [24, 56)
    np.testing.assert_allclose(probabilities[0][ran], expected[ran], atol=1e-5)
    assert np.all(probabilities[0][~ran] == 0)
