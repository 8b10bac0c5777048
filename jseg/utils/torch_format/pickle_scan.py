"""Check a pickle's opcode stream before it is unpickled.

:func:`scan_pickle` walks the opcodes with :mod:`pickletools` (nothing is built)
and simulates the unpickler's stack, so that the restricted unpickler only ever
sees a stream that

* uses pickle protocol 2 or lower (what ``torch.save`` writes): no frames,
  out-of-band buffers, extension registry or protocol-4 containers;
* refers only to memo slots already written (a forged ``LONG_BINPUT`` index
  would make the C unpickler allocate a memo of that size);
* has at most ``MAX_OPCODES`` opcodes (so at most as many objects) in at most
  ``MAX_PICKLE_BYTES``;
* nests containers at most ``MAX_DEPTH`` deep. Tuples are immutable, so their
  depth is exact; hashing a tuple recurses in C without a guard, and a tuple
  key nested a million deep would crash the interpreter. Lists and dicts
  filled after creation through the memo may end deeper than counted: Python
  code walking them stops with ``RecursionError``, which the reader reports;
* applies ``BUILD`` (``__setstate__``) only to ``OrderedDict`` objects and
  refused objects, never to a tensor or to an object of the reader.
"""
import pickletools

__all__ = ['MAX_DEPTH', 'MAX_OPCODES', 'MAX_PICKLE_BYTES', 'scan_pickle']

#: Deepest nesting of containers accepted (torch state dicts nest about 6 deep).
MAX_DEPTH = 100
#: Largest pickle accepted (a state dict's pickle holds about 200 bytes per tensor).
MAX_PICKLE_BYTES = 64 << 20
#: Most opcodes accepted: each makes at most one object, so this bounds the objects of a tree
#: (about 20 opcodes per tensor: 25,000 tensors, weights and optimizer state together).
MAX_OPCODES = 1 << 19

_EXTENSIONS = {'EXT1', 'EXT2', 'EXT4'}  # the copyreg extension registry: never used by torch
_MEMO_PUT = {'PUT', 'BINPUT', 'LONG_BINPUT'}
_MEMO_GET = {'GET', 'BINGET', 'LONG_BINGET'}
_TUPLES = {'TUPLE', 'TUPLE1', 'TUPLE2', 'TUPLE3', 'EMPTY_TUPLE'}
_FILL = {'APPEND', 'APPENDS', 'SETITEM', 'SETITEMS'}
_BUILD_TARGETS = {'collections.OrderedDict', 'refused'}


def _entry(depth, kind=None, _cache={}):  # noqa: B006 - the cache is the point
    """What the scanner knows of a stack item: ``(nesting depth, kind)``, one shared tuple per value.

    Entries are immutable and shared, so the scanner holds a pointer per stack item and memo
    slot, whatever the pickle builds.
    """
    key = (depth, kind)
    return _cache.setdefault(key, key)


_VALUE = _entry(0)


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
    stack, marks, memo = [], [], []

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
        if count >= MAX_OPCODES:
            raise fail(f'{what}: pickle has more than {MAX_OPCODES} opcodes')
        name = op.name
        if op.proto > 2 or name in _EXTENSIONS:
            raise fail(f'{what}: pickle opcode {name} (protocol {op.proto}) is not allowed')
        if name == 'MARK':
            marks.append(len(stack))
            continue
        if name in _MEMO_PUT:
            if not 0 <= arg <= count or not stack:
                raise fail(f'{what}: pickle memo index {arg} out of range')
            memo.extend([None] * (arg + 1 - len(memo)))
            memo[arg] = stack[-1]
            continue
        if name in _MEMO_GET:
            if not 0 <= arg < len(memo) or memo[arg] is None:
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
        if stack and stack[-1][0] > MAX_DEPTH:
            raise fail(f'{what}: containers nested more than {MAX_DEPTH} deep')


def _results(name, arg, op, below, sliced, allowed_globals, fail, what):
    """The entries opcode ``name`` leaves on the stack, given what it took off."""
    if name in _TUPLES:
        children = sliced if name in ('TUPLE', 'EMPTY_TUPLE') else below
        return [_entry(1 + max((c[0] for c in children), default=0))]
    if name in ('EMPTY_LIST', 'EMPTY_DICT'):
        return [_entry(1)]
    if name in ('LIST', 'DICT'):
        return [_entry(1 + max((c[0] for c in sliced), default=0))]
    if name in _FILL:  # the filled container's entry (other references to it keep the old depth)
        (depth, kind), items = below[0], below[1:] + sliced
        return [_entry(max(depth, 1 + max((c[0] for c in items), default=0)), kind)]
    if name == 'BUILD':
        target = below[0]
        if target[1] not in _BUILD_TARGETS:
            raise fail(f'{what}: pickle BUILD on {target[1] or "a built-in value"} is not allowed')
        return [target]
    if name == 'GLOBAL':
        module, _, attr = arg.partition(' ')
        return [_entry(0, f'global {module}.{attr}')]
    if name in ('REDUCE', 'NEWOBJ'):
        (_, func), (depth, _) = below
        called = func[len('global '):] if func and func.startswith('global ') else None
        if called is None:
            kind = 'the result of a call'
        elif called not in allowed_globals:
            kind = 'refused'  # a placeholder: its result discards what BUILD gives it
        elif called in _BUILD_TARGETS:
            kind = called
        else:
            kind = f'the result of {called}'
        return [_entry(depth, kind)]
    if name in ('OBJ', 'INST'):
        raise fail(f'{what}: pickle opcode {name} is not allowed')
    return [_VALUE] * len(op.stack_after)
