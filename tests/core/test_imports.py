"""Every jseg module imports, and its __all__ names only things it defines or imports."""
import importlib
import pkgutil

import pytest

import jseg

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(jseg.__path__, 'jseg.'))


def test_modules_found():
    assert len(MODULES) > 50 and 'jseg.runner.runner' in MODULES


@pytest.mark.parametrize('name', MODULES)
def test_module_imports_and_all_is_honest(name):
    module = importlib.import_module(name)
    missing = [item for item in getattr(module, '__all__', []) if not hasattr(module, item)]
    assert not missing, f'{name}.__all__ names undefined {missing}'
