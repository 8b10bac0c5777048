"""tools/check_pretrained.py on generated checkpoint files (official key layouts from the fixtures)."""
import glob
import gzip
import hashlib
import json
import os
import re
import sys

import numpy as np
import pytest
from tool_helpers import ROOT, load_tool

sys.path.insert(0, os.path.join(ROOT, 'tests', 'utils'))
import torch_format_writer  # noqa: E402  (writes real torch.save files without PyTorch)

sys.path.remove(os.path.join(ROOT, 'tests', 'utils'))

FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')


def official_shapes(fixture, arch):
    """{name: shape} of the official state dict (BN counters left out), from a fixture made with the official code."""
    with gzip.open(os.path.join(FIXTURES, fixture), 'rt') as f:
        entries = json.load(f)[arch]
    return {e[0]: tuple(e[1]) for e in entries if not e[0].endswith('num_batches_tracked')}


def write_pth(path, state, key='state_dict'):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch_format_writer.save_zip({key: state} if key else state, str(path))
    return str(path)


def zeros(shapes):
    return {k: np.zeros(s, np.float32) for k, s in shapes.items()}


def rows_by_file(rows):
    return {row['file']: row for row in rows}


def test_catalogue_covers_every_pretrained_file_of_the_configs():
    tool = load_tool('check_pretrained')
    catalogued = {entry['path'] for entry in tool.CATALOGUE}
    used = set()
    for path in glob.glob(os.path.join(ROOT, 'project', '**', '*.py'), recursive=True):
        used.update(re.findall(r"'(pretrained/[^']+\.pth)'", open(path).read()))
    assert used and used <= catalogued, sorted(used - catalogued)
    names = [entry['name'] for entry in tool.CATALOGUE]
    for wanted in ['EfficientFormerV2-S0', 'EfficientFormerV2-S1', 'EfficientFormerV2-S2', 'EfficientFormerV2-L',
                   'MiT-B0', 'MiT-B1', 'MiT-B2', 'MiT-B3', 'MiT-B4', 'MiT-B5', 'MSCAN-T', 'MSCAN-S', 'MSCAN-B',
                   'Swin-T']:
        assert wanted in names
    for entry in tool.CATALOGUE:
        assert entry['url'].startswith('https://')
        if tool.HASH_IN_NAME.search(entry['path']):               # mmseg's files: address ends in the file name
            assert entry['url'].endswith('/' + os.path.basename(entry['path']))
        if entry['config'] and entry['name'] != 'Swin-T':          # Swin-T's config may not be in this checkout
            config_text = open(os.path.join(ROOT, entry['config'])).read()
            assert entry['path'] in config_text, entry


def test_all_missing_lists_the_addresses(tmp_path, capsys):
    tool = load_tool('check_pretrained')
    assert tool.main(['--root', str(tmp_path), '--names', 'MiT-B0', 'EfficientFormerV2-L']) == 0
    out = capsys.readouterr().out
    assert re.search(r'^MiT-B0 +pretrained/segformer/mit_b0_20220624-7e0fe6dd\.pth +- +- +- +missing$', out, re.M)
    assert ('pretrained/segformer/mit_b0_20220624-7e0fe6dd.pth  <-  https://download.openmmlab.com/mmsegmentation/'
            'v0.5/pretrain/segformer/mit_b0_20220624-7e0fe6dd.pth') in out
    assert out.rstrip().endswith('0 present, 2 missing, 0 failed')


def test_good_file_wrong_keys_wrong_hash_and_unreadable(tmp_path, capsys):
    tool = load_tool('check_pretrained')
    s0 = official_shapes('efficientformer_v2/official_state_dict.json.gz', 's0')
    imagenet = {k: v for k, v in zeros(s0).items() if not k.endswith('_seg')}   # ImageNet files have no *_seg
    imagenet['head.weight'] = np.zeros((1000, 176), np.float32)
    imagenet['dist_head.weight'] = np.zeros((1000, 176), np.float32)
    write_pth(tmp_path / 'pretrained/eformer_v2/eformer_s0_450.pth', imagenet, key='model')
    needed = len(imagenet) - 2

    s1 = official_shapes('efficientformer_v2/official_state_dict.json.gz', 's1')
    wrong = {k: v for k, v in zeros(s1).items() if not k.endswith('_seg')}
    wrong['patch_embed.0.weight'] = np.zeros((16, 3, 5, 5), np.float32)         # wrong shape
    wrong['stem.0.bias'] = wrong.pop('patch_embed.0.bias')                      # renamed
    write_pth(tmp_path / 'pretrained/eformer_v2/eformer_s1_450.pth', wrong, key='model')

    mscan = zeros(official_shapes('mscan/official_state_dict_shapes.json.gz', 'mscan_t'))
    write_pth(tmp_path / 'pretrained/segnext/mscan_t_20230227-119e8c9f.pth', mscan)        # right keys, not the file
    (tmp_path / 'pretrained/segformer').mkdir(parents=True)
    (tmp_path / 'pretrained/segformer/mit_b0_20220624-7e0fe6dd.pth').write_bytes(b'PK\x03\x04 not a checkpoint')

    extra = torch_format_writer.zip_bytes({'w': np.ones(3, np.float32)})
    digest = hashlib.sha256(extra).hexdigest()[:8]
    (tmp_path / 'pretrained/mine').mkdir()
    (tmp_path / f'pretrained/mine/mine_20240101-{digest}.pth').write_bytes(extra)

    rows = rows_by_file(tool.check(str(tmp_path)))
    good = rows['pretrained/eformer_v2/eformer_s0_450.pth']
    assert good['status'] == 'ok' and good['tensors'] == str(len(imagenet))
    assert good['keys'] == f'{needed}/{needed} (+2 extra)' and good['sha256'] == '-' and not good['details']

    bad_keys = rows['pretrained/eformer_v2/eformer_s1_450.pth']
    assert bad_keys['status'] == 'FAILED' and bad_keys['sha256'] == '-'
    (detail,) = bad_keys['details']
    assert detail == (f'does not fit the backbone: loaded {len(wrong) - 2} tensors; '
                      'missing in checkpoint (1): patch_embed.0.bias; unexpected in checkpoint (1): stem.0.bias; '
                      'shape mismatch (1): patch_embed.0.weight (checkpoint (16, 3, 5, 5) vs model (16, 3, 3, 3))')
    assert bad_keys['keys'] == f'{len(wrong) - 2}/{len(wrong)} (+1 extra)'   # one renamed: same count

    bad_hash = rows['pretrained/segnext/mscan_t_20230227-119e8c9f.pth']
    actual = hashlib.sha256(open(tmp_path / 'pretrained/segnext/mscan_t_20230227-119e8c9f.pth', 'rb').read())
    assert bad_hash['status'] == 'FAILED'
    assert bad_hash['sha256'] == f'file {actual.hexdigest()[:8]} != name 119e8c9f'
    assert bad_hash['keys'] == f'{len(mscan)}/{len(mscan)}'                       # the keys themselves fit
    assert bad_hash['details'][0].startswith('the SHA-256 does not match the hash in the file name')

    unreadable = rows['pretrained/segformer/mit_b0_20220624-7e0fe6dd.pth']
    assert unreadable['status'] == 'unreadable' and unreadable['tensors'] == '-'
    assert any('mit_b0_20220624-7e0fe6dd.pth' in d and 'not a readable zip archive' in d for d in unreadable['details'])

    mine = rows[f'pretrained/mine/mine_20240101-{digest}.pth']
    assert mine['backbone'] == '(not catalogued)' and mine['status'] == 'ok'
    assert mine['sha256'] == f'ok {digest}' and mine['tensors'] == '1' and mine['keys'] == '-'

    assert rows['pretrained/segformer/mit_b1_20220624-02e5a6a1.pth']['status'] == 'missing'

    assert tool.main(['--root', str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err == ('error: 3 pretrained file(s) failed the check: pretrained/eformer_v2/eformer_s1_450.pth, '
                            'pretrained/segformer/mit_b0_20220624-7e0fe6dd.pth, '
                            'pretrained/segnext/mscan_t_20230227-119e8c9f.pth\n')
    good_line = r'^EfficientFormerV2-S0 +pretrained/eformer_v2/eformer_s0_450\.pth +%d +%d/%d \(\+2 extra\) +- +ok$'
    assert re.search(good_line % (len(imagenet), needed, needed), captured.out, re.M)
    assert '5 present, 11 missing, 3 failed' in captured.out


def test_bad_arguments_are_one_line(tmp_path, capsys):
    tool = load_tool('check_pretrained')
    with pytest.raises(SystemExit) as info:
        tool.main(['--names', 'MiT-B9'])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --names: unknown backbone MiT-B9 (known: EfficientFormerV2-S0,')
    assert err.count('\n') == 1
    with pytest.raises(SystemExit):
        tool.main(['--root', str(tmp_path / 'nowhere')])
    assert capsys.readouterr().err == f'error: --root {tmp_path / "nowhere"} is not a directory (see --help)\n'
