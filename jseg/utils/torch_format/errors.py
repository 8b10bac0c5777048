"""The one error of the ``.pth`` reader."""

__all__ = ['TorchFormatError']


class TorchFormatError(ValueError):
    """A file that cannot be read as a PyTorch checkpoint; the message names the file and the problem."""
