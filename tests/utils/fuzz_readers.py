"""Fuzz targets for jseg's two checkpoint readers: ``.pth`` (torch_format) and jseg ``.npz``.

Each input is written to a file and read as jseg reads checkpoints. An input
passes when it loads or raises the reader's one error class
(``TorchFormatError`` / ``CheckpointError``); any other exception, a crash, or
a read whose peak resident memory grows by more than ``--memory-mb`` fails.

Mutations are structure-aware: the seed's zip members are decoded, one or more
members (mostly the pickle or ``.npy`` headers) are mutated, and the archive is
rebuilt with valid CRCs, so that mutants get past the zip layer; raw byte
mutations of the whole file are mixed in. Seeds: the PyTorch-written fixtures
(``.pth``) and small jseg checkpoints (``.npz``).

Usage::

    python tests/utils/fuzz_readers.py pth --seconds 60             # our mutation loop
    python tests/utils/fuzz_readers.py npz --seconds 60 --atheris   # coverage-guided (pip install atheris)

The mutation loop prints one JSON line: inputs run, how many loaded / were
refused, the largest memory growth seen; atheris prints libFuzzer's statistics
(``Done N runs``). The exit status is 0 when no input failed.
"""
import argparse
import io
import json
import os
import random
import resource
import sys
import tempfile
import time
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reader_harness  # noqa: E402
import torch_format_writer  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(HERE), 'fixtures', 'torch_format')
_INTERESTING = [b'\x00', b'\xff', b'\x7f', b'\x80', b'\xff\xff\xff\x7f', b'\x00\x00\x00\x80', b'(', b'.', b'0',
                b'\x85', b's', b'b', b'R', b'Q', b'h\x00', b'q\x00', b']', b'}', b')']


class Failure(Exception):
    """An input that did not end in the reader's error: the message says how."""


def seeds(kind, folder):
    if kind == 'pth':
        names = sorted(n for n in os.listdir(FIXTURES) if n.endswith('.pth'))
        return [open(os.path.join(FIXTURES, n), 'rb').read() for n in names]
    checkpoint, _ = reader_harness.import_readers()
    out = []
    rng = np.random.default_rng(0)
    for i, arrays in enumerate([{'w': rng.standard_normal((2, 3)).astype(np.float32), 'b': np.arange(3)},
                                {'x': np.zeros((0, 2), np.float16), 'y': np.array(True)}]):
        path = os.path.join(folder, f'seed{i}.npz')
        checkpoint.save_checkpoint(path, arrays, {'iteration': i, 'best': {'metric': 'mIoU', 'value': 0.5}},
                                   {'exp_avg': {k: np.ones(1, np.float32) for k in arrays}})
        out.append(open(path, 'rb').read())
    return out


def mutate_bytes(data, rng):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not data:
            data += bytes([rng.randrange(256)])
        pos, kind = rng.randrange(len(data)), rng.random()
        if kind < 0.35:
            data[pos] = rng.randrange(256)
        elif kind < 0.55:
            token = rng.choice(_INTERESTING)
            data[pos:pos + len(token)] = token
        elif kind < 0.7:
            del data[pos:pos + rng.randint(1, 16)]
        elif kind < 0.85:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            start = rng.randrange(len(data))
            data[pos:pos] = data[start:start + rng.randint(1, 64)] * rng.randint(1, 4)
    return bytes(data)


def mutate(data, rng):
    """A mutant of the zip archive ``data``: members re-zipped with valid CRCs, or raw damage."""
    if rng.random() < 0.15:
        return mutate_bytes(data, rng)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            records = [(info.filename, zf.read(info)) for info in zf.infolist()]
    except Exception:  # noqa: BLE001 - an earlier mutant: damage it further
        return mutate_bytes(data, rng)
    if not records:
        return mutate_bytes(data, rng)
    weights = [8 if name.endswith(('.pkl', '.npy')) else 1 for name, _ in records]
    for _ in range(rng.randint(1, 2)):
        i = rng.choices(range(len(records)), weights)[0]
        name, content = records[i]
        if rng.random() < 0.1:
            name = mutate_bytes(name.encode(), rng).decode('utf-8', 'replace')
        else:
            content = mutate_bytes(content[:4096], rng) + content[4096:]
        records[i] = (name, content)
    if rng.random() < 0.1:
        records.append(rng.choice(records))
    try:
        return torch_format_writer.zip_archive(records)
    except Exception:  # noqa: BLE001 - e.g. a name that cannot be encoded
        return mutate_bytes(data, rng)


def make_target(kind, folder, memory_mb):
    checkpoint, torch_format = reader_harness.import_readers()
    path = os.path.join(folder, f'input.{kind}')
    stats = {'inputs': 0, 'loaded': 0, 'refused': 0, 'max_growth_mb': 0.0}

    def read():
        if kind == 'pth':
            torch_format.load_torch_file(path, return_refused=True)
        else:
            checkpoint.read_checkpoint(path, prefixes=('model/',))
            checkpoint.read_checkpoint(path)

    def target(data):
        with open(path, 'wb') as f:
            f.write(data)
        reader_harness.reset_peak_rss()
        baseline = reader_harness.peak_rss_mb()
        stats['inputs'] += 1
        try:
            read()
            stats['loaded'] += 1
        except (torch_format.TorchFormatError, checkpoint.CheckpointError) as err:
            message = str(err)
            if '\n' in message or not (path in message or 'checkpoint not found' in message):
                raise Failure(f'error message does not name the file in one line: {message!r}') from None
            stats['refused'] += 1
        growth = reader_harness.peak_rss_mb() - baseline
        stats['max_growth_mb'] = max(stats['max_growth_mb'], growth)
        if growth > memory_mb:
            raise Failure(f'memory grew by {growth:.1f} MB (bound {memory_mb} MB)')

    return target, stats


def run_own_loop(kind, seconds, memory_mb, seed):
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        target, stats = make_target(kind, folder, memory_mb)
        corpus = seeds(kind, folder)
        for data in corpus:
            target(data)
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            data = mutate(rng.choice(corpus), rng)
            try:
                target(data)
            except Exception as err:
                crash = os.path.join(tempfile.gettempdir(), f'fuzz_{kind}_crash.bin')
                open(crash, 'wb').write(data)
                raise Failure(f'{type(err).__name__}: {err} (input saved as {crash})') from err
            if rng.random() < 0.05 and len(corpus) < 200:
                corpus.append(data)  # keep some mutants as new starting points
    return stats


def run_atheris(kind, seconds, memory_mb, seed):
    import atheris
    folder = tempfile.mkdtemp()
    with atheris.instrument_imports():
        target, stats = make_target(kind, folder, memory_mb)
    corpus = os.path.join(folder, 'corpus')
    os.makedirs(corpus)
    for i, data in enumerate(seeds(kind, folder)):
        with open(os.path.join(corpus, f'seed{i}'), 'wb') as f:
            f.write(data)

    def custom_mutator(data, max_size, mutator_seed):
        return mutate(data, random.Random(mutator_seed))[:max_size]

    # libFuzzer's RSS limit reads getrusage's peak, which a child inherits from its parent across
    # fork and exec: under a test run whose process has grown past 2 GB, every input would be an
    # 'out-of-memory'. The limit is therefore 2 GB above that inherited peak; one allocation stays
    # bounded by 2 GB (-malloc_limit_mb), and each input's own growth by make_target's memory_mb.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    # libFuzzer prints the inputs run ('Done N runs'); a failing input ends it with a traceback and status 1
    atheris.Setup([sys.argv[0], f'-max_total_time={seconds}', f'-seed={seed + 1}', '-max_len=65536',
                   '-timeout=20', '-print_final_stats=1', f'-rss_limit_mb={inherited_mb + 2048}',
                   '-malloc_limit_mb=2048', corpus], target, custom_mutator=custom_mutator)
    atheris.Fuzz()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('reader', choices=['pth', 'npz'])
    parser.add_argument('--seconds', type=float, default=5)
    parser.add_argument('--memory-mb', type=float, default=32, help='bound on peak memory growth per input')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--atheris', action='store_true', help='coverage-guided fuzzing with atheris')
    args = parser.parse_args(argv)
    if args.atheris:
        return run_atheris(args.reader, int(args.seconds), args.memory_mb, args.seed)
    try:
        stats = run_own_loop(args.reader, args.seconds, args.memory_mb, args.seed)
    except Failure as err:
        print(json.dumps({'reader': args.reader, 'failure': str(err)}), flush=True)
        return 1
    print(json.dumps(dict(stats, reader=args.reader, engine='mutation loop')), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
