"""The `spa` command: inspect, groups, export, prune, finetune, report, diff, bench, one module each (a `Tool`
in spa/cli/<command>.py; the options they share are declared once in spa/cli/args.py). Every
failure is one line on stderr and a non-zero exit code; nothing is written unless the pruned model
validated."""
from __future__ import annotations

import logging
import os
import sys

from spa.cli import bench, diff, export, finetune, groups, inspect, prune, report
from spa.cli.args import Parser
from spa.core.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, SpaError

# in the order `spa --help` lists them
TOOLS = {tool.name: tool for tool in (inspect.TOOL, groups.TOOL, export.TOOL, prune.TOOL, finetune.TOOL, report.TOOL,
                                      diff.TOOL, bench.TOOL)}


def build_parser() -> Parser:
    from spa.core.progress import set_quiet

    set_quiet(False)  # a new parser, a new command: forget an earlier in-process --quiet
    parser = Parser(prog="spa", description="Structurally Prune Anything: smaller ONNX models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for tool in TOOLS.values():
        tool.setup_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from spa.core.output import Terminated, private_tempdir, signals_raise

    # SIGTERM/SIGINT unwind through `finally`: temporaries are removed; every temporary file of the
    # run lies in one private folder in $TMPDIR, which the next run sweeps if this one is killed
    with signals_raise():
        try:
            with private_tempdir():
                return _main(argv)
        except KeyboardInterrupt:  # a signal while the private folder was made or removed
            print("spa: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Terminated as exc:
            print("spa: terminated", file=sys.stderr)
            return exc.code


def console_main() -> int:
    """The installed `spa` command and `python -m spa.cli`: `main`, and after an interrupted run's
    clean-up the process ends by SIGINT itself (the convention Python follows after an uncaught
    Ctrl-C): a calling shell loop stops too, `$?` reads 130, and the exit status does not depend on
    whether a library swallowed the KeyboardInterrupt on its way up."""
    import signal

    code = main()
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def _main(argv: list[str] | None) -> int:
    from spa.core.output import Terminated

    # libraries (onnx-ir, onnxscript) log failures with tracebacks; ours are reported in one line
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        args = build_parser().parse_args(argv)
        return TOOLS[args.command].run(args)
    except SpaError as exc:
        print(f"spa: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("spa: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated as exc:
        print("spa: terminated", file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # `spa groups --json | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # a bug: still one line unless asked for the traceback
        from spa.core.output import signal_received

        if signal_received():  # the signal's exception came back wrapped (e.g. by a C extension)
            print("spa: interrupted" if signal_received() == 130 else "spa: terminated", file=sys.stderr)
            return signal_received()
        if os.environ.get("SPA_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"spa: internal error: {type(exc).__name__}: {first[:300]} (set SPA_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


def _one_line(text: str) -> str:
    """Messages may quote file names or library errors; the contract is one line on stderr."""
    return " ".join(text.split()) or "unknown error"
