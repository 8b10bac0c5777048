"""Check a pickle's opcode stream before it is unpickled.

:func:`scan_pickle` walks the opcodes with :mod:`pickletools` (nothing is built)
and simulates the unpickler's stack, so that the restricted unpickler only ever
sees a stream that

* uses pickle protocol 2 or lower (what ``torch.save`` writes): no frames,
  out-of-band buffers, extension registry or protocol-4 containers;
* refers only to memo slots already written (a forged ``LONG_BINPUT`` index
  would make the C unpickler allocate a memo of that size);
* nests containers at most ``MAX_DEPTH`` deep. Tuples are immutable, so their
  depth is exact; hashing a tuple recurses in C without a guard, and a tuple
  key nested a million deep would crash the interpreter. Lists and dicts
  filled after creation through the memo may end deeper than counted: Python
  code walking them stops with ``RecursionError``, which the reader reports;
* applies ``BUILD`` (``__setstate__``) only to ``OrderedDict`` objects and
  refused objects, never to a tensor or to an object of the reader.
"""
import pickletools

__all__ = ['MAX_DEPTH', 'MAX_PICKLE_BYTES', 'scan_pickle']

#: Deepest nesting of containers accepted (torch state dicts nest about 6 deep).
MAX_DEPTH = 100
#: Largest pickle accepted (a state dict's pickle holds about 200 bytes per tensor).
MAX_PICKLE_BYTES = 64 << 20

_EXTENSIONS = {'EXT1', 'EXT2', 'EXT4'}  # the copyreg extension registry: never used by torch
_MEMO_PUT = {'PUT', 'BINPUT', 'LONG_BINPUT'}
_MEMO_GET = {'GET', 'BINGET', 'LONG_BINGET'}
_TUPLES = {'TUPLE', 'TUPLE1', 'TUPLE2', 'TUPLE3', 'EMPTY_TUPLE'}
_FILL = {'APPEND', 'APPENDS', 'SETITEM', 'SETITEMS'}
_BUILD_TARGETS = {'collections.OrderedDict', 'refused'}


class _Entry:
    """What the scanner knows of a stack item: nesting depth and, for globals and calls, a kind."""
    __slots__ = ('depth', 'kind')

    def __init__(self, depth=0, kind=None):
        self.depth, self.kind = depth, kind


def scan_pickle(data, fail, what, allowed_globals):
    """Check the pickle in ``data`` (bytes-like); raise ``fail(message)`` at the first problem.

    Args:
        fail (callable): message -> exception to raise (names the file).
        what (str): the pickle's name in messages (``'archive/data.pkl'``).
        allowed_globals (Container[str]): ``'module.name'`` of the globals the
            unpickler resolves; any other global is a refused placeholder.
    """
    if len(data) > MAX_PICKLE_BYTES:
        raise fail(f'{what}: pickle of {len(data)} bytes is larger than allowed ({MAX_PICKLE_BYTES})')
    stack, marks, memo = [], [], {}

    def pop(n):
        if n > len(stack) - (marks[-1] if marks else 0):
            raise fail(f'{what}: pickle stack underflow')
        items = stack[len(stack) - n:] if n else []
        del stack[len(stack) - n:]
        return items

    ops = pickletools.genops(data if isinstance(data, (bytes, bytearray)) else bytes(data))
    count = -1
    while True:
        count += 1
        try:
            op, arg, _ = next(ops)
        except StopIteration:
            break
        except (ValueError, EOFError) as err:  # a truncated or malformed opcode stream
            raise fail(f'{what}: corrupt or truncated pickle ({err})') from None
        name = op.name
        if op.proto > 2 or name in _EXTENSIONS:
            raise fail(f'{what}: pickle opcode {name} (protocol {op.proto}) is not allowed')
        if name == 'MARK':
            marks.append(len(stack))
            continue
        if name in _MEMO_PUT:
            if not 0 <= arg <= count or not stack:
                raise fail(f'{what}: pickle memo index {arg} out of range')
            memo[arg] = stack[-1]
            continue
        if name in _MEMO_GET:
            if arg not in memo:
                raise fail(f'{what}: pickle memo index {arg} was never written')
            stack.append(memo[arg])
            continue
        if name == 'DUP':
            stack.append(pop(1)[0])
            stack.append(stack[-1])
            continue
        before = op.stack_before
        sliced = []
        if pickletools.markobject in before:
            if not marks:
                raise fail(f'{what}: pickle opcode {name} without MARK')
            start = marks.pop()
            sliced = stack[start:]
            del stack[start:]
            below = pop(before.index(pickletools.markobject))
        else:
            below = pop(len(before))
        stack.extend(_results(name, arg, op, below, sliced, allowed_globals, fail, what))
        if stack and stack[-1].depth > MAX_DEPTH:
            raise fail(f'{what}: containers nested more than {MAX_DEPTH} deep')


def _results(name, arg, op, below, sliced, allowed_globals, fail, what):
    """The entries opcode ``name`` leaves on the stack, given what it took off."""
    if name in _TUPLES:
        children = sliced if name in ('TUPLE', 'EMPTY_TUPLE') else below
        return [_Entry(1 + max((c.depth for c in children), default=0))]
    if name in ('EMPTY_LIST', 'EMPTY_DICT'):
        return [_Entry(1)]
    if name in ('LIST', 'DICT'):
        return [_Entry(1 + max((c.depth for c in sliced), default=0))]
    if name in _FILL:
        container, items = below[0], below[1:] + sliced
        container.depth = max(container.depth, 1 + max((c.depth for c in items), default=0))
        return [container]
    if name == 'BUILD':
        target = below[0]
        if target.kind not in _BUILD_TARGETS:
            raise fail(f'{what}: pickle BUILD on {target.kind or "a built-in value"} is not allowed')
        return [target]
    if name == 'GLOBAL':
        module, _, attr = arg.partition(' ')
        return [_Entry(kind=f'global {module}.{attr}')]
    if name in ('REDUCE', 'NEWOBJ'):
        func, args = below
        called = (func.kind or '')[len('global '):] if (func.kind or '').startswith('global ') else None
        if called is None:
            kind = 'the result of a call'
        elif called not in allowed_globals:
            kind = 'refused'  # a placeholder: its result discards what BUILD gives it
        elif called in _BUILD_TARGETS:
            kind = called
        else:
            kind = f'the result of {called}'
        return [_Entry(args.depth, kind)]
    if name in ('OBJ', 'INST'):
        raise fail(f'{what}: pickle opcode {name} is not allowed')
    return [_Entry() for _ in op.stack_after]
