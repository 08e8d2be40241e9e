"""Cross-scale view maths on known arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniseg.training.views import common_grid, make_view, view_valid_mask


def _ramp(size=8):
    return torch.arange(size * size, dtype=torch.float32).reshape(1, 1, size, size)


def test_coarser_view_is_the_whole_patch_downsampled_and_centred():
    x = _ramp()
    view = make_view(x, 0.5, pad_value=-1.0)  # 10x patch seen at 5x
    a = x[0, 0].numpy()
    expected_inner = a.reshape(4, 2, 4, 2).mean(axis=(1, 3))  # 2x2 block means of the whole patch
    assert view.shape == x.shape
    np.testing.assert_allclose(view[0, 0, 2:6, 2:6].numpy(), expected_inner)
    border = np.ones((8, 8), bool)
    border[2:6, 2:6] = False
    assert (view[0, 0].numpy()[border] == -1.0).all()
    box = view_valid_mask(8, 0.5)
    assert (box.start, box.stop) == (2, 6)


def test_finer_view_is_the_centre_crop_upsampled():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 2:6, 2:6] = torch.tensor([[1.0, 2, 3, 4]] * 4)  # constant along y in the centre
    view = make_view(x, 2.0, pad_value=0.0)  # 10x patch seen at 20x
    assert view.shape == x.shape
    # bilinear x2 of a row [1,2,3,4] (align_corners=False, edge clamped)
    expected_row = [1.0, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4.0]
    np.testing.assert_allclose(view[0, 0].numpy(), np.tile(expected_row, (8, 1)), atol=1e-6)
    assert view_valid_mask(8, 2.0) == slice(0, 8)


def test_same_scale_view_is_the_patch():
    x = _ramp()
    assert make_view(x, 1.0, 0.0) is x


@pytest.mark.parametrize("factor", [0.125, 0.25, 0.5, 2.0, 4.0, 8.0])
def test_common_grid_aligns_the_same_place(factor):
    """A map that is a function of physical position agrees on the common grid."""
    size = 32
    x = torch.rand(1, 1, size, size)
    view = make_view(x, factor, pad_value=0.0)
    p, v = common_grid(x[0], view[0], factor)
    k = round(1 / factor) if factor < 1 else int(factor)
    assert p.shape[-1] == size // k == v.shape[-1]
    if factor < 1:  # pooled patch == the downsampled patch inside the view, exactly
        assert torch.allclose(p, v)
    else:  # pooled upsampled crop ~= the crop (bilinear then mean is a mild blur)
        assert torch.corrcoef(torch.stack([p.flatten(), v.flatten()]))[0, 1] > 0.8


def test_bad_factor_is_rejected():
    with pytest.raises(ValueError, match="2\\*\\*n"):
        make_view(_ramp(), 3.0, 0.0)
    with pytest.raises(ValueError):
        make_view(_ramp(6), 0.25, 0.0)
