"""The one exception type for bad data: it names the file and the problem."""

__all__ = ['DataError']


class DataError(Exception):
    """A dataset file or folder that cannot be used as it is.

    The message always names the offending path and says what is wrong with
    it (and, where there is one, how to fix it), e.g.
    ``annotation .../ADE_train_00000001.png: size 512x683 differs from its
    image 683x512``.

    Args:
        path (str | None): the file or folder at fault.
        problem (str): what is wrong, in words.
        hint (str | None): what to do about it (appended to the message).
    """

    def __init__(self, path, problem, hint=None):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.hint = hint
        message = problem if path is None else f'{path}: {problem}'
        if hint:
            message = f'{message} ({hint})'
        super().__init__(message)

    def __reduce__(self):  # keep (path, problem, hint) through pickling
        return (self.__class__, (self.path, self.problem, self.hint))
