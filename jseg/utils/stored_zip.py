"""Read members of an uncompressed zip archive with bounded work (``.pth`` and ``.npz`` checkpoints).

``torch.save`` and ``np.savez`` both write *stored* (uncompressed) zip members.
:class:`StoredZip` reads only such members, and only when asked: before a
member's buffer is allocated, its declared size is checked against the bytes
the file really holds at that place, so memory and time stay proportional to
the bytes actually read. A compressed or encrypted member, a member that runs
past the end of the file, or a damaged directory raises the caller's error
class with a message that names the file.
"""
import os
import struct
import zipfile
import zlib

__all__ = ['StoredZip']

_LOCAL_HEADER = struct.Struct('<4sHHHHHIIIHH')  # signature ... name length, extra length (30 bytes)
_CHUNK = 1 << 24


class StoredZip:
    """The members of a zip archive of stored members, read one at a time.

    Args:
        path (str): the archive.
        error (type[Exception]): raised (with ``'<path>: <problem>'``) for any
            unreadable or unsupported content.
        fileobj: an open binary file of ``path`` to use (not closed here).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path, error, fileobj=None):
        self.path = os.fspath(path)
        self._error = error
        self._own = fileobj is None
        self._f = open(self.path, 'rb') if fileobj is None else fileobj
        try:
            self.file_size = os.fstat(self._f.fileno()).st_size
            try:
                with zipfile.ZipFile(self._f) as zf:
                    infos = zf.infolist()
            except Exception as err:  # noqa: BLE001 - zipfile raises many kinds on a damaged directory
                raise self.fail(f'not a readable zip archive (truncated or corrupt?): {type(err).__name__}: '
                                f'{err}') from None
            self.members = {}
            for info in infos:
                if not info.filename.isprintable():
                    raise self.fail(f'archive member name {info.filename[:100]!r} has control characters')
                if info.filename in self.members:
                    raise self.fail(f'zip archive has two members named {info.filename!r}')
                self.members[info.filename] = info
        except BaseException:
            self.close()
            raise

    def fail(self, message):
        return self._error(f'{self.path}: {message}')

    def names(self):
        return list(self.members)

    def size(self, name):
        """The member's size in bytes (None if there is no such member)."""
        info = self.members.get(name)
        return None if info is None else info.file_size

    def _data_offset(self, info):
        """Where the member's bytes start, after checking that all of them are in the file."""
        if info.flag_bits & 0x1:
            raise self.fail(f'archive member {info.filename} is encrypted')
        if info.compress_type != zipfile.ZIP_STORED:
            raise self.fail(f'archive member {info.filename} is compressed (method {info.compress_type}); '
                            f'checkpoints are written uncompressed and compressed members are not read')
        if info.compress_size != info.file_size:
            raise self.fail(f'archive member {info.filename}: stored size {info.compress_size} differs from '
                            f'its size {info.file_size}')
        if not 0 <= info.header_offset <= self.file_size - _LOCAL_HEADER.size:
            raise self.fail(f'archive member {info.filename}: header offset {info.header_offset} is outside the file')
        self._f.seek(info.header_offset)
        header = self._f.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b'PK\x03\x04':
            raise self.fail(f'archive member {info.filename}: bad local header (truncated or corrupt?)')
        fields = _LOCAL_HEADER.unpack(header)
        start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
        if start + info.file_size > self.file_size:
            raise self.fail(f'archive member {info.filename} declares {info.file_size} bytes but the file holds '
                            f'only {max(0, self.file_size - start)} after its header (truncated or forged)')
        return start

    def check(self, name):
        """Validate member ``name`` without reading its data (see :meth:`read`)."""
        info = self.members.get(name)
        if info is None:
            raise self.fail(f'archive member {name} is missing')
        self._data_offset(info)
        return info.file_size

    def read(self, name, limit=None):
        """The bytes of member ``name`` as a ``bytearray``, CRC-checked.

        Args:
            limit (int | None): refuse a member larger than this many bytes.
        """
        info = self.members.get(name)
        if info is None:
            raise self.fail(f'archive member {name} is missing')
        start = self._data_offset(info)
        if limit is not None and info.file_size > limit:
            raise self.fail(f'archive member {name} is too large ({info.file_size} bytes, at most {limit})')
        buf = bytearray(info.file_size)  # all of it is in the file: checked above
        view = memoryview(buf)
        crc, pos = 0, 0
        self._f.seek(start)
        while pos < len(buf):
            n = self._f.readinto(view[pos:pos + _CHUNK])
            if not n:
                raise self.fail(f'archive member {name} is truncated')
            crc = zlib.crc32(view[pos:pos + n], crc)
            pos += n
        view.release()
        if crc != info.CRC:
            raise self.fail(f'archive member {name} is corrupt (CRC mismatch)')
        return buf

    def close(self):
        if self._own and self._f is not None:
            self._f.close()
        self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
