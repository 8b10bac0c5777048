"""Functional ``pixel_shuffle`` / ``pixel_unshuffle`` with PyTorch's channel order."""

__all__ = ['pixel_shuffle', 'pixel_unshuffle']


def pixel_shuffle(x, upscale_factor):
    """(B, C*r*r, H, W) -> (B, C, H*r, W*r): ``out[b, c, h*r+i, w*r+j] = x[b, c*r*r + i*r + j, h, w]``."""
    r = upscale_factor
    b, c, h, w = x.shape
    if c % (r * r):
        raise ValueError(f'pixel_shuffle: {c} channels are not divisible by {r}*{r}')
    x = x.reshape(b, c // (r * r), r, r, h, w).permute(0, 1, 4, 2, 5, 3)  # (B, C, H, r, W, r)
    return x.reshape(b, c // (r * r), h * r, w * r)


def pixel_unshuffle(x, downscale_factor):
    """(B, C, H*r, W*r) -> (B, C*r*r, H, W), the inverse of :func:`pixel_shuffle`."""
    r = downscale_factor
    b, c, hr, wr = x.shape
    if hr % r or wr % r:
        raise ValueError(f'pixel_unshuffle: size {(hr, wr)} is not divisible by {r}')
    h, w = hr // r, wr // r
    x = x.reshape(b, c, h, r, w, r).permute(0, 1, 3, 5, 2, 4)            # (B, C, r, r, H, W)
    return x.reshape(b, c * r * r, h, w)
