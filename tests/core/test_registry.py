"""Registries: build by name, defaults, duplicate names, helpful unknown-name errors."""
import pytest

from jseg.registry import BuildError, Registry, RegistryError


@pytest.fixture
def reg():
    reg = Registry('widget')

    @reg.register_module()
    class Gear:
        def __init__(self, teeth, size=1):
            self.teeth, self.size = teeth, size

    reg.register_module('Sprocket', module=Gear)
    return reg


def test_build_with_default_args(reg):
    obj = reg.build(dict(type='Gear', teeth=12), size=3)
    assert (obj.teeth, obj.size) == (12, 3)
    assert reg.build(dict(type='Sprocket', teeth=1, size=2)).size == 2


def test_unknown_type_lists_close_names(reg):
    with pytest.raises(RegistryError, match=r"unknown widget type 'Gaer'; did you mean 'Gear'"):
        reg.build(dict(type='Gaer', teeth=1))
    with pytest.raises(RegistryError) as info:
        reg.get('Zzz')
    assert 'did you mean' not in str(info.value)


def test_duplicate_name_is_an_error(reg):
    with pytest.raises(RegistryError, match='already registered'):
        @reg.register_module('Gear')
        class Other:
            pass


def test_wrong_arguments_name_the_type(reg):
    with pytest.raises(BuildError, match="Gear: .*'colour'"):
        reg.build(dict(type='Gear', teeth=1, colour='red'))
    with pytest.raises(BuildError, match='"type"'):
        reg.build(dict(teeth=1))


def test_project_registries_are_populated():
    from jseg.registry import METRICS, OPTIMIZERS, SCHEDULERS
    assert {'AdamW', 'SGD'} <= set(OPTIMIZERS.keys())
    assert {'LinearLR', 'PolyLR'} <= set(SCHEDULERS.keys())
    assert 'IoUMetric' in METRICS
