"""MPI process helpers. Jittor's distributed mode is MPI (``mpirun -np N python ...``)."""
import numpy as np

__all__ = ['get_rank', 'get_world_size', 'is_main_process', 'all_reduce_sum', 'barrier', 'broadcast_model']


def _jt():
    import jittor as jt
    return jt


def get_rank():
    jt = _jt()
    return jt.rank if jt.in_mpi else 0


def get_world_size():
    jt = _jt()
    return jt.world_size if jt.in_mpi else 1


def is_main_process():
    return get_rank() == 0


def all_reduce_sum(array):
    """Sum a NumPy array over all MPI processes (identity in a single process)."""
    jt = _jt()
    array = np.asarray(array)
    if not jt.in_mpi:
        return array
    dtype = array.dtype
    work = array.astype(np.float64 if dtype.kind == 'f' else np.int64)
    summed = jt.array(work).mpi_all_reduce('add').numpy()
    return summed.astype(dtype)


def barrier():
    """Wait until every MPI process reaches this point."""
    jt = _jt()
    if jt.in_mpi:
        jt.array(np.zeros(1, np.float32)).mpi_all_reduce('add').sync()


def broadcast_model(model, root=0):
    """Give every MPI process ``root``'s floating-point parameters and buffers.

    Integer buffers (index tables) are derived from the architecture and equal on
    every rank, so they are skipped. Each tensor is synchronised before the
    next, so that all ranks issue the collectives in the same order.
    """
    jt = _jt()
    if not jt.in_mpi:
        return
    for var in model.state_dict().values():
        if 'float' in str(var.dtype):
            var.assign(var.mpi_broadcast(root))
            var.sync()
