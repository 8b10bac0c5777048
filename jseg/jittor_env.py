"""Configure Jittor before it is first imported, so that it never downloads anything.

Jittor decides at import time which compiler back-ends to use, and fetches what it
lacks from the internet: a CUDA toolkit when a driver is present but no ``nvcc``,
and its own oneDNN build for fast CPU convolutions. Compute nodes are often
offline, so ``import jseg`` settles both questions first:

* **CUDA** is used only when it can work: an ``nvcc`` is found, the CUDA runtime
  library loads and the driver reports at least one device. Otherwise Jittor is
  told there is no ``nvcc`` (``nvcc_path=""``) and runs on the CPU.
  ``JSEG_NO_CUDA=1`` (or ``tools/run_net.py --no-cuda``) forces the CPU.
* **oneDNN**: Jittor looks for ``<jittor home>/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp``
  and downloads it when absent. When the system has oneDNN (Debian's
  ``libdnnl-dev``), that folder is created as a set of links to it. Without a
  system oneDNN and without an earlier download, oneDNN is switched off
  (``use_mkl=0``), which works offline but makes convolutions far slower; a
  warning says how to fix it.

* **Kernel compilation** runs in one thread (``use_parallel_op_compiler=1``).
  Jittor 1.3.11 compiles new kernels in 16 threads by default, and that
  compiler shares unlocked state between its threads: now and then a kernel
  gets a corrupted name and fails to compile, or a compile thread crashes, after
  which the process hangs at exit. One thread makes a first run (cold kernel
  cache) about 1.5 times slower and never fails that way; set
  ``use_parallel_op_compiler=16`` to trade that back.

Variables the user already set (``nvcc_path``, ``use_mkl``, ``log_silent``,
``use_parallel_op_compiler``) are respected. Nothing here imports Jittor.
"""
import ctypes
import ctypes.util
import glob
import json
import os
import platform
import shutil
import warnings
from pathlib import Path

__all__ = ['configure_jittor', 'cuda_usable', 'env_flag', 'jittor_home']

_DNNL_DIR_NAME = 'dnnl_lnx_2.2.0_cpu_gomp'
_configured = False


_TRUE, _FALSE = ('1', 'true', 'yes', 'on'), ('0', 'false', 'no', 'off')


def env_flag(name, default):
    """The boolean environment variable ``name``; ``default`` when it is unset or empty.

    Raises:
        ValueError: the value is none of 1/true/yes/on and 0/false/no/off.
    """
    value = os.environ.get(name, '').strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f'environment variable {name}={os.environ[name]!r}: expected 1/true/yes/on or 0/false/no/off')


def jittor_home():
    """The folder Jittor keeps its caches under (mirrors Jittor's own rule)."""
    if 'JITTOR_HOME' in os.environ:
        return os.path.abspath(os.environ['JITTOR_HOME'])
    config = Path.home() / '.cache' / 'jittor' / 'config.json'
    try:
        with open(config) as f:
            return json.load(f).get('JITTOR_HOME', str(Path.home()))
    except (OSError, ValueError):
        return str(Path.home())


def _find_nvcc():
    if os.environ.get('nvcc_path'):
        return os.environ['nvcc_path']
    found = shutil.which('nvcc')
    if found:
        return found
    for candidate in ('/usr/local/cuda/bin/nvcc', '/usr/bin/nvcc', '/opt/cuda/bin/nvcc'):
        if os.path.isfile(candidate):
            return candidate
    return None


def _load_library(names, extra_dirs=()):
    for name in names:
        for folder in extra_dirs:
            for path in sorted(glob.glob(os.path.join(folder, name + '*'))):
                try:
                    return ctypes.CDLL(path)
                except OSError:
                    pass
        try:
            return ctypes.CDLL(name)
        except OSError:
            pass
    return None


def cuda_usable():
    """True when an nvcc, the CUDA runtime and a CUDA device are all present."""
    nvcc = _find_nvcc()
    if not nvcc:
        return False
    cuda_root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    lib_dirs = [os.path.join(cuda_root, 'lib64'), os.path.join(cuda_root, 'lib')]
    if _load_library(['libcudart.so'], lib_dirs) is None:
        return False
    driver = _load_library(['libcuda.so.1', 'libcuda.so'])
    if driver is None:
        return False
    try:
        if driver.cuInit(0) != 0:
            return False
        count = ctypes.c_int(0)
        if driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return False
        return count.value > 0
    except (AttributeError, OSError):
        return False


def _system_dnnl():
    """(include dir, library path) of a system oneDNN, or None."""
    lib = None
    for folder in ('/usr/lib/x86_64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib'):
        candidates = sorted(glob.glob(os.path.join(folder, 'libdnnl.so.*')))
        if candidates:
            lib = candidates[0]
            break
    if lib is None:
        name = ctypes.util.find_library('dnnl')
        lib = name if name and os.path.isabs(name) else None
    for include in ('/usr/include', '/usr/local/include'):
        if os.path.isfile(os.path.join(include, 'dnnl.h')) and lib:
            return include, lib
    return None


def _setup_onednn():
    if 'use_mkl' in os.environ or platform.system() != 'Linux' or platform.machine() != 'x86_64':
        return
    mkl_root = os.path.join(jittor_home(), '.cache', 'jittor', 'mkl')
    target = os.path.join(mkl_root, _DNNL_DIR_NAME)
    if os.path.isfile(os.path.join(target, 'lib', 'libmkldnn.so')):
        return  # an earlier download or an earlier shim
    system = _system_dnnl()
    if system is None:
        os.environ['use_mkl'] = '0'
        warnings.warn('jseg: no oneDNN found, so Jittor runs convolutions without it '
                      '(correct but much slower). Install it with '
                      '"apt-get install libdnnl-dev" (Debian/Ubuntu).')
        return
    include, lib = system
    os.makedirs(os.path.join(target, 'include'), exist_ok=True)
    os.makedirs(os.path.join(target, 'lib'), exist_ok=True)
    for header in glob.glob(os.path.join(include, 'dnnl*.h*')):
        link = os.path.join(target, 'include', os.path.basename(header))
        if not os.path.lexists(link):
            os.symlink(header, link)
    link = os.path.join(target, 'lib', 'libmkldnn.so')
    tmp = link + f'.tmp{os.getpid()}'
    os.symlink(lib, tmp)
    os.replace(tmp, link)  # atomic: concurrent imports never see a half-made link


def configure_jittor(force_cpu=None):
    """Set Jittor's environment variables; a no-op once Jittor is imported.

    Args:
        force_cpu (bool | None): run on the CPU even when CUDA works. ``None``
            reads the ``JSEG_NO_CUDA`` environment variable.
    """
    global _configured
    if force_cpu is None:
        force_cpu = env_flag('JSEG_NO_CUDA', False)
    if force_cpu:
        os.environ['JSEG_NO_CUDA'] = '1'
    if _configured or 'jittor' in __import__('sys').modules:
        return
    _configured = True
    os.environ.setdefault('log_silent', '1')
    os.environ.setdefault('use_parallel_op_compiler', '1')  # see the module docstring
    if force_cpu or not cuda_usable():
        os.environ['nvcc_path'] = ''
    _setup_onednn()
