"""Configure Jittor before it is first imported, so that it never downloads anything.

Jittor 1.3.11 decides at import time which back-ends to use and fetches what it
lacks from the internet (``jittor/compile_extern.py``): its own oneDNN build for
fast CPU convolutions, and on a CUDA machine the cutt, cutlass and NCCL sources;
a failed download stops the import. Compute nodes are often offline, so
``import jseg`` settles every question first. It looks at the machine
(:func:`describe_machine`), decides (:func:`plan_jittor_env`, a pure function of
that description) and applies the decision (environment variables, links in
Jittor's cache). What it sets:

* **CPU or CUDA.** CUDA is used only when it can work: an ``nvcc`` is found, the
  CUDA runtime library loads and the driver reports a device. Otherwise Jittor is
  told there is no ``nvcc`` (``nvcc_path=""``). ``JSEG_NO_CUDA=1`` (or the tools'
  ``--no-cuda``) forces the CPU.
* **oneDNN** comes from the ``jittor-offline`` package (PyPI), which holds the
  exact build Jittor verifies by md5 (``dnnl_lnx_2.2.0_cpu_gomp.tgz``); Jittor
  copies it into its cache on the first import. Without the package and without
  an earlier copy in the cache, oneDNN is switched off (``use_mkl=0``): correct,
  but convolutions are far slower.
* **cutt** (CUDA tensor transposes) and **NCCL** (multi-GPU all-reduce, set up
  only when MPI is present) come from a system NCCL when one is found
  (``NCCL_HOME``, ``CUDA_HOME``, the CUDA toolkit of ``nvcc``,
  ``LD_LIBRARY_PATH``, ``/usr/lib``, ``/usr/local/lib``, pip's
  ``nvidia-nccl-cu*`` wheels under ``site-packages/nvidia/nccl``), else from the
  sources in ``jittor-offline`` (Jittor builds NCCL 2.8.4 on the first run under
  ``mpirun``). A piece found nowhere is switched off (``use_cutt=0`` /
  ``use_nccl=0``).
* **cutlass** is switched off (``use_cutlass=0``) unless already in Jittor's
  cache: Jittor 1.3.11 only downloads it, no operator uses it.
* **cuDNN.** Jittor 1.3.11 looks for it in the CUDA toolkit of ``nvcc`` and in
  ``/usr/lib``, and with CUDA 11 or later loads cuDNN 8's libraries
  (``libcudnn_ops_infer.so``, ...), which cuDNN 9 (the only one for CUDA 13, and
  what pip's ``nvidia-cudnn-cu*`` wheels hold) no longer has. When no loadable
  cuDNN 8 is found, Jittor is told to skip it (``conv_opt=1``; it then also skips
  cuFFT and cuSPARSE, which jseg does not use): convolutions on the GPU run on
  Jittor's own kernels, which is slower, instead of the import failing.
* **Kernel compilation** runs in one thread (``use_parallel_op_compiler=1``).
  Jittor compiles new kernels in 16 threads by default, and that compiler shares
  unlocked state between its threads: now and then a kernel gets a corrupted
  name and fails to compile, or a compile thread crashes and the process hangs
  at exit. One thread makes a cold kernel cache about 1.5 times slower to fill.
* ``log_silent=1``: Jittor's ``[i]`` log lines are hidden.

A piece that is switched off is reported in one ``jseg: warning:`` line on
stderr, naming what is off, what it costs and how to get it. Every variable the
user already set wins: jseg sets nothing for a piece whose variables (see
:data:`PIECE_VARIABLES`) the user set. Nothing here imports Jittor.
"""
import ctypes
import glob
import importlib.util
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ['Machine', 'Plan', 'PIECE_VARIABLES', 'apply_plan', 'configure_jittor', 'cuda_usable', 'describe_machine',
           'env_flag', 'find_system_nccl', 'jittor_home', 'plan_jittor_env']

_configured = False
_TRUE, _FALSE = ('1', 'true', 'yes', 'on'), ('0', 'false', 'no', 'off')

#: Jittor's environment variables per piece; jseg leaves a piece alone when the user set any of them.
PIECE_VARIABLES = {
    'onednn': ('use_mkl', 'mkl_include_path', 'mkl_lib_path'),
    'cutt': ('use_cutt', 'cutt_include_path', 'cutt_lib_path', 'CUTT_PATH'),
    'nccl': ('use_nccl', 'nccl_include_path', 'nccl_lib_path'),
    'cutlass': ('use_cutlass', 'cutlass_include_path', 'CUTLASS_PATH'),
    'cudnn': ('conv_opt',),
}
#: The archives of the ``jittor-offline`` package that Jittor 1.3.11 takes instead of downloading.
PACK_ARCHIVES = {'onednn': 'dnnl_lnx_2.2.0_cpu_gomp.tgz', 'cutt': 'cutt-1.2.zip', 'nccl': 'nccl.tgz'}
#: What Jittor 1.3.11 leaves in ``<jittor home>/.cache/jittor`` once a piece is installed or copied there.
CACHE_MARKERS = {
    'onednn': ('mkl/dnnl_lnx_2.2.0_cpu_gomp/lib/libmkldnn.so',),
    'cutt': ('cutt/cutt-1.2.zip',),
    'nccl': ('nccl/nccl.tgz', 'nccl/nccl-2.8.4-1/build/lib/libnccl.so'),
    'cutlass': ('cutlass/cutlass/include/cutlass/cutlass.h',),
}
_CUDNN8_LIBS = ('libcudnn_ops_infer.so', 'libcudnn_ops_train.so', 'libcudnn_cnn_infer.so', 'libcudnn_cnn_train.so')
_OFFLINE_HINT = 'pip install jittor-offline'


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


@dataclass(frozen=True)
class Machine:
    """What jseg's decision depends on (filled in by :func:`describe_machine`, or by hand in tests).

    Attributes:
        cuda (bool): CUDA works here (nvcc, runtime and a device).
        mpi (bool): Jittor will set up MPI (an ``mpicc`` is found and ``use_mpi`` is not 0);
            Jittor sets up NCCL only then.
        jittor_home (str): Jittor's home folder (its caches are under ``.cache/jittor``).
        offline_pack (str | None): folder of the ``jittor_offline`` package.
        pack_archives (frozenset[str]): pieces whose archive the offline pack holds ('onednn', 'cutt', 'nccl').
        cached (frozenset[str]): pieces already in Jittor's cache ('onednn', 'cutt', 'nccl', 'cutlass').
        nccl (tuple[str, str] | None): a system NCCL: (folder of ``nccl.h``, path of ``libnccl.so*``).
        cudnn_problem (str | None): why Jittor cannot load cuDNN here; None when it can.
        user (dict[str, str]): the environment variables the user set.
        x86_64_linux (bool): the platform Jittor's oneDNN archive is for.
    """
    cuda: bool
    mpi: bool
    jittor_home: str
    offline_pack: str = None
    pack_archives: frozenset = frozenset()
    cached: frozenset = frozenset()
    nccl: tuple = None
    cudnn_problem: str = None
    user: dict = field(default_factory=dict)
    x86_64_linux: bool = True


@dataclass
class Plan:
    """What jseg sets before Jittor loads.

    Attributes:
        env (dict[str, str]): environment variables to set.
        links (dict[str, str]): symbolic links to create (link path -> target).
        warnings (list[str]): one line each, for the user.
    """
    env: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


def _user_owns(machine, piece):
    return any(name in machine.user for name in PIECE_VARIABLES[piece])


def _available(machine, piece):
    """The piece is in Jittor's cache or in the offline pack: Jittor sets it up without a download."""
    return piece in machine.cached or (machine.offline_pack is not None and piece in machine.pack_archives)


def plan_jittor_env(machine, force_cpu=False):
    """Decide Jittor's environment variables for ``machine`` (a :class:`Machine`); no side effects.

    Args:
        machine (Machine): the environment.
        force_cpu (bool): run on the CPU even when CUDA works.

    Returns:
        Plan: the variables jseg sets (none the user set), the links to create and the warning lines.
    """
    plan = Plan()
    user = machine.user
    for name, value in (('log_silent', '1'), ('use_parallel_op_compiler', '1')):
        if name not in user:
            plan.env[name] = value
    disabled = []  # (what is off, what it costs)

    if machine.x86_64_linux and not _user_owns(machine, 'onednn') and not _available(machine, 'onednn'):
        plan.env['use_mkl'] = '0'
        disabled.append(('oneDNN', 'CPU convolutions run without it, tens of times slower'))

    cuda = machine.cuda and not force_cpu
    if not cuda:
        plan.env['nvcc_path'] = ''
    else:
        _plan_cuda_pieces(machine, plan, disabled)

    if disabled:
        what = '; '.join(f'{name} off ({cost})' for name, cost in disabled)
        plan.warnings.append(f'jseg: warning: {what}. To get them: {_OFFLINE_HINT}'
                             + (', or point NCCL_HOME to an NCCL install' if any(n == 'NCCL' for n, _ in disabled)
                                else '') + '.')
    if machine.cudnn_problem and cuda and 'conv_opt' in plan.env:
        plan.warnings.append(f'jseg: warning: cuDNN off ({machine.cudnn_problem}): convolutions on the GPU use '
                             "Jittor's own kernels instead of cuDNN's, slower. Install cuDNN 8 into the CUDA toolkit "
                             'folder or /usr/lib/x86_64-linux-gnu, or set conv_opt=0 to let Jittor try.')
    return plan


def _plan_cuda_pieces(machine, plan, disabled):
    if not _user_owns(machine, 'cutlass') and 'cutlass' not in machine.cached:
        plan.env['use_cutlass'] = '0'  # downloaded by Jittor 1.3.11, used by none of its operators
    if not _user_owns(machine, 'cutt') and not _available(machine, 'cutt'):
        plan.env['use_cutt'] = '0'
        disabled.append(('cutt', "GPU tensor transposes use Jittor's generic kernels, slower"))
    if machine.mpi and not _user_owns(machine, 'nccl'):
        if machine.nccl is not None:
            include, library = machine.nccl
            plan.env['nccl_include_path'] = include
            if os.path.basename(library) == 'libnccl.so':
                plan.env['nccl_lib_path'] = os.path.dirname(library)
            else:  # e.g. pip's nvidia/nccl/lib/libnccl.so.2: Jittor opens exactly <nccl_lib_path>/libnccl.so
                link_dir = os.path.join(machine.jittor_home, '.cache', 'jittor', 'jseg_nccl_lib')
                plan.env['nccl_lib_path'] = link_dir
                plan.links[os.path.join(link_dir, 'libnccl.so')] = library
        elif not _available(machine, 'nccl'):
            plan.env['use_nccl'] = '0'
            disabled.append(('NCCL', 'multi-GPU gradients are all-reduced by MPI through host memory, slower'))
    if machine.cudnn_problem and not _user_owns(machine, 'cudnn'):
        plan.env['conv_opt'] = '1'


# ----------------------------------------------------------------------------------------------------------
# Looking at the machine


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


def _site_packages():
    return [p for p in sys.path if p and os.path.basename(p) in ('site-packages', 'dist-packages')]


def _nccl_library(folder):
    exact = os.path.join(folder, 'libnccl.so')
    if os.path.isfile(exact):
        return exact
    versioned = sorted(glob.glob(os.path.join(folder, 'libnccl.so.*')))
    return versioned[0] if versioned else None


def find_system_nccl(environ, cuda_root=None, site_packages=()):
    """A system NCCL as (folder of ``nccl.h``, path of ``libnccl.so`` or ``libnccl.so.N``), or None.

    Searched in order: ``$NCCL_HOME``, ``$CUDA_HOME``, ``cuda_root`` (the toolkit of ``nvcc``), the
    folders of ``$LD_LIBRARY_PATH`` (headers in ``../include``), ``/usr`` and ``/usr/local``, and pip's
    ``nvidia/nccl/{include,lib}`` under each of ``site_packages``.
    """
    candidates = []  # (include folder, library folders)
    for root in (environ.get('NCCL_HOME'), environ.get('CUDA_HOME'), cuda_root):
        if root:
            candidates.append((os.path.join(root, 'include'), [os.path.join(root, 'lib64'), os.path.join(root, 'lib')]))
    for folder in filter(None, environ.get('LD_LIBRARY_PATH', '').split(':')):
        candidates.append((os.path.join(os.path.dirname(folder.rstrip('/')), 'include'), [folder]))
    candidates.append(('/usr/include', ['/usr/lib/x86_64-linux-gnu', '/usr/lib64', '/usr/lib']))
    candidates.append(('/usr/local/include', ['/usr/local/lib64', '/usr/local/lib']))
    for site in site_packages:
        pip_root = os.path.join(site, 'nvidia', 'nccl')
        candidates.append((os.path.join(pip_root, 'include'), [os.path.join(pip_root, 'lib')]))
    for include, lib_dirs in candidates:
        if not os.path.isfile(os.path.join(include, 'nccl.h')):
            continue
        for folder in lib_dirs:
            library = _nccl_library(folder)
            if library:
                return os.path.abspath(include), os.path.abspath(library)
    return None


def cudnn_problem(nvcc, site_packages=()):
    """Why Jittor 1.3.11 cannot load cuDNN with this ``nvcc``, or None when it can.

    Jittor looks for ``cudnn.h`` in the toolkit's ``include`` (and ``targets/x86_64-linux/include``) and
    ``/usr/include``, for ``libcudnn.so`` and cuDNN 8's four sub-libraries in the toolkit's
    ``lib64``/``bin`` and ``/usr/lib/x86_64-linux-gnu``, ``/usr/lib``.
    """
    nvcc_dir = os.path.dirname(os.path.realpath(nvcc)) if os.path.isfile(nvcc) else os.path.dirname(nvcc)
    root = os.path.dirname(nvcc_dir)
    includes = [os.path.join(root, 'include'), os.path.join(root, 'targets', 'x86_64-linux', 'include'), '/usr/include']
    lib64 = '/usr/lib/x86_64-linux-gnu' if nvcc == '/usr/bin/nvcc' else os.path.join(root, 'lib64')
    libs = [nvcc_dir, lib64, os.path.join(root, 'targets', 'x86_64-linux', 'lib'), '/usr/lib/x86_64-linux-gnu',
            '/usr/lib']
    header = any(os.path.isfile(os.path.join(d, 'cudnn.h')) for d in includes)
    present = {name for name in ('libcudnn.so',) + _CUDNN8_LIBS
               if any(os.path.isfile(os.path.join(d, name)) for d in libs)}
    if header and len(present) == 1 + len(_CUDNN8_LIBS):
        return None
    pip = [os.path.join(s, 'nvidia', 'cudnn') for s in site_packages
           if glob.glob(os.path.join(s, 'nvidia', 'cudnn', 'lib', 'libcudnn.so*'))]
    if header and 'libcudnn.so' in present:
        return 'found cuDNN 9 or later; Jittor 1.3.11 loads cuDNN 8 only'
    where = f'only in {pip[0]}, which Jittor does not search' if pip else f'not in {root} nor /usr'
    return f'cuDNN {where}'


def _mpi_present(environ):
    if environ.get('use_mpi', '1') != '1':
        return False
    if 'mpicc_path' in environ:
        return bool(environ['mpicc_path'])
    return shutil.which('mpicc') is not None


def describe_machine(environ=None, probe_cuda=True):
    """The :class:`Machine` this process runs on (reads files and loads the CUDA driver; no Jittor).

    Args:
        environ (dict | None): the environment variables (default: ``os.environ``).
        probe_cuda (bool): look for CUDA; False describes the machine as CPU-only.
    """
    environ = dict(os.environ if environ is None else environ)
    home = jittor_home()
    cache = os.path.join(home, '.cache', 'jittor')
    spec = importlib.util.find_spec('jittor_offline')
    pack = os.path.dirname(spec.origin) if spec is not None and spec.origin else None
    pack_archives = frozenset(p for p, name in PACK_ARCHIVES.items()
                              if pack and os.path.isfile(os.path.join(pack, name)))
    cached = frozenset(p for p, markers in CACHE_MARKERS.items()
                       if any(os.path.isfile(os.path.join(cache, m)) for m in markers))
    cuda = probe_cuda and cuda_usable()
    nvcc = _find_nvcc() if cuda else None
    cuda_root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None
    sites = _site_packages()
    return Machine(cuda=cuda, mpi=_mpi_present(environ), jittor_home=home, offline_pack=pack,
                   pack_archives=pack_archives, cached=cached,
                   nccl=find_system_nccl(environ, cuda_root, sites) if cuda else None,
                   cudnn_problem=cudnn_problem(nvcc, sites) if cuda else None, user=environ,
                   x86_64_linux=platform.system() == 'Linux' and platform.machine() == 'x86_64')


def _make_links(links):
    for link, target in links.items():
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        tmp = f'{link}.tmp{os.getpid()}'
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)  # atomic: concurrent imports never see a half-made link


def apply_plan(plan, environ=None, stream=None):
    """Carry out ``plan``: create its links, set its variables in ``environ``, write its warning lines."""
    environ = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    _make_links(plan.links)
    environ.update(plan.env)
    for line in plan.warnings:
        stream.write(line + '\n')


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
    if _configured or 'jittor' in sys.modules:
        return
    _configured = True
    apply_plan(plan_jittor_env(describe_machine(probe_cuda=not force_cpu), force_cpu=force_cpu))
