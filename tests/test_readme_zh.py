"""README_zh-CN.md is README.md in Chinese: same sections in the same order, the same commands in each.

Sections are matched by position (the n-th ``##``/``###`` heading of one file with the n-th of the
other); commands are the lines of fenced code blocks without comments (whole-line ``#`` comments and
trailing ``  # ...`` comments are translated, the commands are not). A failure names the section and
the command that differ, so that a README change can be carried over to the translation.
"""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGLISH, CHINESE = 'README.md', 'README_zh-CN.md'
HEADING = re.compile(r'^(#{2,3}) +(\S.*?)\s*$')
TRAILING_COMMENT = re.compile(r'\s+#\s.*$')


def parse(name):
    """[(heading, [command lines of the section's code blocks])], the part before the first heading first.

    ``heading`` is the heading line (``'## Tools'``), or ``'(top)'`` for the text before it.
    """
    sections = [('(top)', [])]
    fence = None
    with open(os.path.join(ROOT, name), encoding='utf-8') as f:
        for line in f:
            line = line.rstrip('\n')
            stripped = line.strip()
            if stripped.startswith('```'):
                fence = None if fence is not None else stripped
                continue
            if fence is None:
                match = HEADING.match(line)
                if match:
                    sections.append((f'{match.group(1)} {match.group(2)}', []))
                continue
            if not stripped or stripped.startswith('#'):
                continue
            sections[-1][1].append(TRAILING_COMMENT.sub('', line).rstrip())
    assert fence is None, f'{name}: a code block is not closed'
    return sections


def describe(index, english, chinese):
    return f'section {index} ({ENGLISH}: {english!r}, {CHINESE}: {chinese!r})'


def test_both_readmes_link_to_each_other():
    english = open(os.path.join(ROOT, ENGLISH), encoding='utf-8').read().splitlines()
    chinese = open(os.path.join(ROOT, CHINESE), encoding='utf-8').read().splitlines()
    assert any('(README_zh-CN.md)' in line for line in english[:5]), f'{ENGLISH} links to {CHINESE} at the top'
    assert any('(README.md)' in line for line in chinese[:5]), f'{CHINESE} links back to {ENGLISH} at the top'


def test_same_sections_in_the_same_order():
    english, chinese = parse(ENGLISH), parse(CHINESE)
    for index, ((en, _), (zh, _)) in enumerate(zip(english, chinese)):
        en_level, zh_level = en.split(' ')[0], zh.split(' ')[0]
        assert en_level == zh_level, f'{describe(index, en, zh)}: heading levels differ ({en_level} vs {zh_level})'
    if len(english) != len(chinese):
        longer, name = (english, ENGLISH) if len(english) > len(chinese) else (chinese, CHINESE)
        extra = [heading for heading, _ in longer[min(len(english), len(chinese)):]]
        raise AssertionError(f'{ENGLISH} has {len(english) - 1} headings, {CHINESE} has {len(chinese) - 1}; '
                             f'only in {name} (at the end, after matching by position): {extra}')


def test_same_commands_in_each_section():
    english, chinese = parse(ENGLISH), parse(CHINESE)
    for index, ((en, en_commands), (zh, zh_commands)) in enumerate(zip(english, chinese)):
        for number, (a, b) in enumerate(zip(en_commands, zh_commands), 1):
            assert a == b, f'{describe(index, en, zh)}, command {number} differs:\n  {ENGLISH}: {a}\n  {CHINESE}: {b}'
        if len(en_commands) != len(zh_commands):
            shorter = min(len(en_commands), len(zh_commands))
            name, first = ((ENGLISH, en_commands[shorter]) if len(en_commands) > shorter
                           else (CHINESE, zh_commands[shorter]))
            raise AssertionError(f'{describe(index, en, zh)}: {len(en_commands)} command lines in {ENGLISH}, '
                                 f'{len(zh_commands)} in {CHINESE}; the first only in {name}: {first!r}')


def test_the_parser_sees_commands_and_headings():
    sections = dict(parse(ENGLISH))
    assert 'python -m pytest tests -q' in sections['## Quick start']
    mpi = sections['### Several GPUs or machines (MPI)']
    assert any(line.startswith('mpirun -np 16 --hostfile hosts') for line in mpi)
    assert 'pip install -e .' in sections['## Installation']      # the trailing comment is dropped
