"""Config files: _base_ inheritance, merge rules, _delete_, overrides, strict keys, dump."""
import textwrap

import pytest

from jseg.config import Config, ConfigError, ConfigKeyError, parse_cfg_options


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def cfg_tree(tmp_path):
    write(tmp_path / '_base_' / 'model.py', """
        model = dict(type='EncoderDecoder', backbone=dict(type='A', depth=3, widths=[1, 2]),
                     decode_head=dict(num_classes=150, loss=dict(type='CE', weight=1.0)))
        optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
        """)
    write(tmp_path / '_base_' / 'runtime.py', """
        max_iters = 100
        log_interval = 10
        """)
    child = write(tmp_path / 'exp' / 'child.py', """
        _base_ = ['../_base_/model.py', '../_base_/runtime.py']
        model = dict(backbone=dict(depth=5), decode_head=dict(num_classes=19))
        optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=6e-5))
        crop_size = (512, 512)
        """)
    return child


def test_inheritance_merges_dicts_recursively(cfg_tree):
    cfg = Config.fromfile(cfg_tree)
    assert cfg.model.backbone == dict(type='A', depth=5, widths=[1, 2])
    assert cfg.model.decode_head.num_classes == 19
    assert cfg.model.decode_head.loss.type == 'CE'
    assert cfg.max_iters == 100 and cfg.log_interval == 10
    assert cfg.crop_size == (512, 512)
    assert cfg.name == 'child'


def test_delete_replaces_the_inherited_dict(cfg_tree):
    cfg = Config.fromfile(cfg_tree)
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=6e-5)  # no momentum left over
    assert '_delete_' not in str(cfg.to_dict())


def test_base_as_single_string_and_list_replaced_not_merged(tmp_path):
    write(tmp_path / 'base.py', "a = dict(x=[1, 2, 3], y=1)\n")
    child = write(tmp_path / 'c.py', "_base_ = 'base.py'\na = dict(x=[9])\n")
    assert Config.fromfile(child).a == dict(x=[9], y=1)


def test_cfg_options_override_literals_and_lists(cfg_tree):
    opts = parse_cfg_options(["model.decode_head.num_classes=7", "model.backbone.widths.1=8",
                              "max_iters=20", "model.type=Other", "crop_size=(64, 64)"])
    assert opts['model.type'] == 'Other' and opts['crop_size'] == (64, 64)
    cfg = Config.fromfile(cfg_tree, opts)
    assert cfg.model.decode_head.num_classes == 7
    assert cfg.model.backbone.widths == [1, 8]
    assert cfg.max_iters == 20 and cfg.model.type == 'Other'
    cfg2 = Config.fromfile(cfg_tree, ["+model.neck={'type': 'FPN'}"])
    assert cfg2.model.neck == dict(type='FPN')


def test_cfg_options_unknown_key_is_an_error_with_hint(cfg_tree):
    with pytest.raises(ConfigError, match="did you mean 'max_iters'"):
        Config.fromfile(cfg_tree, ['max_iter=5'])
    with pytest.raises(ConfigError, match='key=value'):
        parse_cfg_options(['max_iters'])


def test_cfg_options_container_that_is_no_literal_is_an_error():
    with pytest.raises(ConfigError, match=r"param_scheduler: .* is not a Python literal"):
        parse_cfg_options(["param_scheduler=[dict(type='PolyLR')]"])
    assert parse_cfg_options(["param_scheduler=[{'type': 'PolyLR'}]", 'name=abc', 'work_dir=']) == dict(
        param_scheduler=[dict(type='PolyLR')], name='abc', work_dir='')


def test_missing_key_is_strict_with_hint(cfg_tree):
    cfg = Config.fromfile(cfg_tree)
    with pytest.raises(ConfigKeyError, match="did you mean 'log_interval'"):
        cfg.log_intervall
    with pytest.raises(KeyError):
        cfg['modle']
    assert cfg.get('missing', 3) == 3
    assert not hasattr(cfg, 'missing')


def test_dump_round_trips(cfg_tree, tmp_path):
    cfg = Config.fromfile(cfg_tree)
    out = tmp_path / 'dumped.py'
    cfg.dump(str(out))
    text = out.read_text()
    assert 'model = dict(' in text and '_base_' not in text
    compile(text, str(out), 'exec')  # valid Python
    again = Config.fromfile(str(out))
    assert again.to_dict() == cfg.to_dict()


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match='not found'):
        Config.fromfile(str(tmp_path / 'nope.py'))
    bad = write(tmp_path / 'bad.py', "a = dict(\n")
    with pytest.raises(ConfigError, match='syntax error'):
        Config.fromfile(bad)
    loop_a = write(tmp_path / 'la.py', "_base_ = 'lb.py'\n")
    write(tmp_path / 'lb.py', "_base_ = 'la.py'\n")
    with pytest.raises(ConfigError, match='loops'):
        Config.fromfile(loop_a)
    missing_base = write(tmp_path / 'mb.py', "_base_ = 'gone.py'\n")
    with pytest.raises(ConfigError, match="_base_ file 'gone.py' not found"):
        Config.fromfile(missing_base)
