"""Reading images and label maps from disk (mmcv/mmseg 1.x ``LoadImageFromFile``/``LoadAnnotations``)."""
import cv2
import numpy as np
from PIL import Image

from jseg.registry import TRANSFORMS

from ..errors import DataError

__all__ = ['LoadImageFromFile', 'LoadAnnotations', 'read_bytes', 'decode_image', 'decode_label']

_CV2_FLAGS = {'color': cv2.IMREAD_COLOR, 'grayscale': cv2.IMREAD_GRAYSCALE,
              'unchanged': cv2.IMREAD_UNCHANGED}


def read_bytes(path, what='image'):
    """The bytes of ``path``; a :class:`DataError` when it is missing, unreadable or empty."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(path, f'{what} file not found') from None
    except OSError as err:
        raise DataError(path, f'cannot read {what} file: {err.strerror or err}') from None
    if not data:
        raise DataError(path, f'{what} file is empty (0 bytes)')
    return data


def decode_image(data, path, flag='color', backend='cv2'):
    """Decode image bytes to a uint8 array, (H, W, 3) BGR for ``flag='color'``.

    Raises :class:`DataError` naming ``path`` when the bytes are no image or a
    truncated one.
    """
    if backend == 'cv2':
        img = cv2.imdecode(np.frombuffer(data, np.uint8), _CV2_FLAGS[flag])
        if img is None:
            raise DataError(path, 'cannot decode image: the file is corrupt, truncated or not an image')
        return img
    if backend == 'pillow':
        return _pillow_to_array(_open_pillow(data, path, 'image'), flag)
    raise ValueError(f"imdecode_backend must be 'cv2' or 'pillow', got {backend!r}")


# mmcv fills the background of an 'LA' (grey + alpha) image with this RGB colour, not black.
_LA_BACKGROUND = (124, 117, 104)


def _pillow_to_array(pil, flag):
    """A Pillow image as mmcv's ``imfrombytes(backend='pillow')`` returns it (BGR channel order).

    ``'unchanged'``: the pixels as stored, the first three channels swapped to BGR when
    there are three or more (alpha stays last); no EXIF rotation. ``'color'`` and
    ``'grayscale'``: EXIF orientation applied, then converted through RGB, an 'LA'
    image composited on :data:`_LA_BACKGROUND` by its alpha.
    """
    if flag == 'unchanged':
        array = np.array(pil)
        if array.ndim >= 3 and array.shape[2] >= 3:
            array[:, :, :3] = array[:, :, 2::-1]
        return array
    from PIL import ImageOps
    pil = ImageOps.exif_transpose(pil)
    if pil.mode == 'LA':
        rgba = pil.convert('RGBA')
        pil = Image.new('RGB', rgba.size, _LA_BACKGROUND)
        pil.paste(rgba, mask=rgba.split()[3])
    elif pil.mode != 'RGB':
        pil = pil.convert('RGB')
    if flag == 'color':
        return np.ascontiguousarray(np.asarray(pil)[:, :, ::-1])
    return np.asarray(pil.convert('L'))


def _open_pillow(data, path, what):
    import io
    try:
        pil = Image.open(io.BytesIO(data))
        pil.load()  # decode now, so that a truncated file fails here
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(path, f'cannot decode {what}: {err} (corrupt, truncated or not an image)') from None
    return pil


def decode_label(data, path, backend='pillow'):
    """Decode a label map to an (H, W) uint8 array of class ids.

    Palette PNGs give their palette indices (the class ids), as mmseg's
    default pillow backend does. A colour (RGB) map is an error: label maps
    must hold ids, not colours.
    """
    if backend == 'pillow':
        pil = _open_pillow(data, path, 'annotation')
        if pil.mode in ('RGB', 'RGBA', 'CMYK', 'YCbCr', 'LAB', 'HSV'):
            raise DataError(path, f'annotation is a {pil.mode} colour image, expected a single-channel '
                                  'map of class ids (mode L or P)')
        label = np.asarray(pil)
    elif backend == 'cv2':
        label = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if label is None:
            raise DataError(path, 'cannot decode annotation: the file is corrupt, truncated or not an image')
    else:
        raise ValueError(f"imdecode_backend must be 'cv2' or 'pillow', got {backend!r}")
    if label.ndim == 3 and label.shape[2] == 1:
        label = label[..., 0]
    if label.ndim != 2:
        raise DataError(path, f'annotation has shape {label.shape}, expected a single-channel map (H, W)')
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise DataError(path, f'annotation holds values up to {int(label.max())}; '
                                  'class ids must fit in 0..255')
        label = label.astype(np.uint8)
    return label


@TRANSFORMS.register_module()
class LoadImageFromFile:
    """Read ``results['img_path']`` into ``results['img']``.

    Adds ``img`` ((H, W, 3) uint8 BGR, as cv2 reads it), ``img_shape`` and
    ``ori_shape`` (both ``(h, w)``).

    Args:
        to_float32 (bool): convert the image to float32.
        color_type (str): ``'color'``, ``'grayscale'`` or ``'unchanged'``.
        imdecode_backend (str): ``'cv2'`` (default, as mmcv) or ``'pillow'``.
        ignore_empty (bool): return ``None`` instead of raising when the file
            is missing or unreadable (the dataset then draws another sample,
            as mmengine does).
        backend_args, file_client_args: accepted for config compatibility;
            only local files are supported, so they must be ``None``.
    """

    def __init__(self, to_float32=False, color_type='color', imdecode_backend='cv2',
                 file_client_args=None, ignore_empty=False, *, backend_args=None):
        if color_type not in _CV2_FLAGS:
            raise ValueError(f'color_type must be one of {sorted(_CV2_FLAGS)}, got {color_type!r}')
        if backend_args is not None or file_client_args is not None:
            raise ValueError('LoadImageFromFile reads local files only; backend_args and '
                             'file_client_args must be None')
        self.to_float32 = to_float32
        self.color_type = color_type
        self.imdecode_backend = imdecode_backend
        self.ignore_empty = ignore_empty

    def __call__(self, results):
        path = results['img_path']
        try:
            img = decode_image(read_bytes(path, 'image'), path, self.color_type, self.imdecode_backend)
        except DataError:
            if self.ignore_empty:
                return None
            raise
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(ignore_empty={self.ignore_empty}, to_float32={self.to_float32}, '
                f"color_type='{self.color_type}', imdecode_backend='{self.imdecode_backend}')")


@TRANSFORMS.register_module()
class LoadAnnotations:
    """Read the label map ``results['seg_map_path']`` into ``results['gt_seg_map']``.

    Adds ``gt_seg_map`` ((H, W) uint8 class ids) and appends its key to
    ``seg_fields``. Then, in this order:

    * ``reduce_zero_label``: 0 becomes 255 (ignored) and every other id k
      becomes k - 1 (255 stays 255), for datasets whose 0 means "unlabelled";
    * ``results['label_map']`` (set by the dataset when a config selects a
      subset of classes): old id -> new id;
    * checks: the map must have the image's original size
      (``results['ori_shape']``) and, when the dataset sets
      ``results['num_classes']``, hold only ids in ``[0, num_classes)`` or 255.
      A failure raises :class:`DataError` naming the file.

    Args:
        reduce_zero_label (bool | None): ``None`` (default) takes the
            dataset's setting (``results['reduce_zero_label']``), as mmseg 1.x
            does; an explicit value must agree with the dataset's.
        imdecode_backend (str): ``'pillow'`` (default, as mmseg) or ``'cv2'``.
        backend_args: accepted for config compatibility; must be ``None``.
    """

    def __init__(self, reduce_zero_label=None, backend_args=None, imdecode_backend='pillow'):
        if backend_args is not None:
            raise ValueError('LoadAnnotations reads local files only; backend_args must be None')
        self.reduce_zero_label = reduce_zero_label
        self.imdecode_backend = imdecode_backend
        self.ignore_index = 255

    def _resolve_reduce_zero_label(self, results):
        from_dataset = results.get('reduce_zero_label')
        if self.reduce_zero_label is None:
            return bool(from_dataset)
        if from_dataset is not None and bool(from_dataset) != bool(self.reduce_zero_label):
            raise ValueError(
                f'LoadAnnotations(reduce_zero_label={self.reduce_zero_label}) contradicts the dataset, '
                f'built with reduce_zero_label={from_dataset}; set it on the dataset only')
        return bool(self.reduce_zero_label)

    def __call__(self, results):
        path = results.get('seg_map_path')
        if path is None:
            raise DataError(results.get('img_path'), 'LoadAnnotations is in the pipeline but this image has '
                                                     'no annotation (the dataset has no seg_map_path)')
        label = decode_label(read_bytes(path, 'annotation'), path, self.imdecode_backend)
        ori_shape = results.get('ori_shape')
        if ori_shape is not None and tuple(label.shape) != tuple(ori_shape[:2]):
            raise DataError(path, f'annotation size {label.shape[1]}x{label.shape[0]} (w x h) differs from '
                                  f'its image {results.get("img_path")} of size {ori_shape[1]}x{ori_shape[0]}')
        reduce_zero_label = self._resolve_reduce_zero_label(results)
        lut = _label_lut(reduce_zero_label, results.get('label_map'))
        num_classes = results.get('num_classes')
        if num_classes is not None:
            _check_label_range(label, lut, num_classes, self.ignore_index, path, reduce_zero_label,
                               results.get('label_hint'))
        if lut is not None:
            label = cv2.LUT(np.ascontiguousarray(label), lut)
        results['gt_seg_map'] = label
        results.setdefault('seg_fields', [])
        if 'gt_seg_map' not in results['seg_fields']:
            results['seg_fields'].append('gt_seg_map')
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(reduce_zero_label={self.reduce_zero_label}, '
                f"imdecode_backend='{self.imdecode_backend}')")


# 0 -> 255, k -> k - 1, 255 -> 255
_REDUCE_ZERO_LUT = np.concatenate([[255], np.arange(255)]).astype(np.uint8)
_REDUCE_ZERO_LUT[255] = 255


def _label_lut(reduce_zero_label, label_map):
    """A 256-entry uint8 table doing reduce_zero_label then label_map, or None for the identity."""
    if not reduce_zero_label and not label_map:
        return None
    lut = _REDUCE_ZERO_LUT.copy() if reduce_zero_label else np.arange(256, dtype=np.uint8)
    if label_map:
        remap = np.arange(256, dtype=np.uint8)
        for old_id, new_id in label_map.items():
            remap[old_id] = new_id
        lut = remap[lut]
    return lut


def _check_label_range(raw, lut, num_classes, ignore_index, path, reduce_zero_label, hint=None):
    """Raise DataError if ``raw`` (before ``lut``) gives ids outside [0, num_classes) other than the ignore index."""
    present = np.nonzero(cv2.calcHist([np.ascontiguousarray(raw)], [0], None, [256], [0, 256]).ravel())[0]
    values = present if lut is None else np.unique(lut[present])
    bad = values[(values >= num_classes) & (values != ignore_index)]
    if bad.size:
        shown = ', '.join(str(int(v)) for v in bad[:8]) + (', ...' if bad.size > 8 else '')
        after = ' after reduce_zero_label' if reduce_zero_label else ''
        raise DataError(path, f'label values {shown}{after} are outside [0, {num_classes}) and are not the '
                              f'ignore index {ignore_index}', hint)
