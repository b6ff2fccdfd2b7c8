"""The exception types users see: each message is a complete one-line explanation, and each kind
of problem has its own process exit code (the table is in README.md)."""


class SpaError(Exception):
    """A user-facing failure: bad input, an impossible request, or a model SPA refuses."""

    exit_code = 2  # a request SPA cannot carry out; subclasses say more precisely what went wrong


class UsageError(SpaError):
    """Bad or conflicting command-line options and budget values."""

    exit_code = 2


class InputError(SpaError):
    """An input file (model, its external data, calibration arrays) is missing, unreadable or corrupt."""

    exit_code = 3


class UnsafePathError(SpaError):
    """A path would read or write outside the model's folder (`..`, absolute, symlink escape)."""

    exit_code = 4


class UnsupportedError(SpaError):
    """A well-formed model SPA refuses: opset, IR version, custom domain, control flow, dynamic widths."""

    exit_code = 5


class OutputError(SpaError):
    """The output cannot be written where asked (the input itself, a folder, a missing or read-only folder)."""

    exit_code = 6


class ValidationError(SpaError):
    """The pruned model failed a check (onnx.checker, ONNX Runtime, interface, oracle); nothing was written."""

    exit_code = 7


class PlanError(SpaError):
    """A plan file is not a plan, or does not fit this model."""

    exit_code = 8


class FidelityError(SpaError):
    """The pruned model kept less of the original's behaviour than --min-fidelity asks; nothing was written."""

    exit_code = 9


EXIT_INTERNAL = 1  # a bug in SPA: one line, a traceback only with SPA_DEBUG=1
EXIT_INTERRUPTED = 130
