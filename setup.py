"""Install jseg: ``pip install -e .`` (or ``python setup.py develop``)."""
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version():
    namespace = {}
    with open(osp.join(HERE, 'jseg', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def read_requirements():
    with open(osp.join(HERE, 'requirements.txt')) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


setup(
    name='jseg',
    version=read_version(),
    description='Semantic segmentation in Jittor: OffSeg and the offset learning paradigm',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['jseg', 'jseg.*']),
    package_data={'jseg.ops': ['csrc/*.h', 'csrc/*.cc', 'csrc/*.cu']},
    python_requires='>=3.8',
    install_requires=read_requirements(),
    extras_require={'test': ['pytest>=7'], 'tools': ['matplotlib>=3.5']},  # tools: the plotting tools
    license='Non-commercial academic use (see README)',
)
