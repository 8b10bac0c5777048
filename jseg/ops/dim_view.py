"""The (outer, n, inner) view of a tensor around one dimension, shared by the per-dimension CPU operators."""

__all__ = ['outer_n_inner']


def outer_n_inner(shape, dim):
    """(outer, n, inner) for ``shape`` around ``dim`` (an index in [0, len(shape))).

    ``outer`` is the product of the sizes before ``dim``, ``n`` the size of ``dim`` and ``inner`` the
    product of those after it: a C-contiguous tensor of ``shape`` is then an (outer, n, inner) array.
    """
    outer = 1
    for size in shape[:dim]:
        outer *= size
    inner = 1
    for size in shape[dim + 1:]:
        inner *= size
    return outer, shape[dim], inner
