"""Helpers of the tool tests: load a tool script as a module, point the tiny config at a dataset."""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'tests', 'fixtures', 'configs', 'tiny_offseg_demo.py')
TOOLS = os.path.join(ROOT, 'tools')
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)  # the tools import their shared tool_common module


def load_tool(name):
    """Import ``tools/<name>.py`` as a module (under a name no other module uses)."""
    module_name = f'_jseg_tool_{name}'
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(TOOLS, f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def data_options(data_root):
    """--cfg-options pointing every split of the tiny config at ``data_root``."""
    return [f"{split}_dataloader.dataset.data_root='{data_root}'" for split in ('train', 'val', 'test')]
