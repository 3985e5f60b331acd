"""The ``mripipe`` command: parses arguments, sets up logging, dispatches to a stage function.

This package is the command-line layer; stage packages never import it. Each subcommand's adapter
converts the parsed arguments into typed values (paths, numbers, the ``--params`` config section
as a dict) and calls one plain typed function of its stage module, the function the unit tests
call too; the adapter holds no logic. Stage modules are imported inside the adapters, so
``mripipe --help`` is instant. ``python -m mripipe.cli`` runs the same command.

Modules (in the order of ``mripipe --help``):

- ``data_commands``: phantom, dicom, manifest, validate.
- ``preprocess_commands``: fingerprint, preprocess, ready, qc-table.
- ``learn_commands``: split, patches, search-init, train, rung, choose, package.
- ``infer_commands``: predict, infer.
- ``evaluate_commands``: evaluate, evaluate-detection, summarise, where, report-training, report-data, reproduce, publish.
- ``track_commands``: tracking-server, ui.
- ``arguments``: the option helpers the command modules share (``--params``, ``--log``, paths).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mripipe.cli import (
    data_commands,
    evaluate_commands,
    infer_commands,
    learn_commands,
    preprocess_commands,
    track_commands,
)
from mripipe.cli.arguments import Adapter, show
from mripipe.core.errors import InputError
from mripipe.core.utils import setup_logging

log = logging.getLogger("mripipe")

FAMILIES = (data_commands, preprocess_commands, learn_commands, infer_commands, evaluate_commands,
            track_commands)


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their arguments."""
    parser = argparse.ArgumentParser(prog="mripipe", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        family.add_commands(sub)
    return parser


def adapter(command: str) -> Adapter:
    """The adapter ``mripipe <command>`` calls (a function of one of this package's modules)."""
    parser = build_parser()
    for action in parser._subparsers._group_actions if parser._subparsers else []:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            func: Adapter = action.choices[command].get_default("func")
            return func
    raise KeyError(f"no mripipe subcommand {command!r}")


def command_module(command: str) -> str:
    """The stage module a subcommand executes, e.g. ``preprocess`` -> ``mripipe.preprocess.preprocess_scan``."""
    return str(adapter(command).stage_module)  # type: ignore[attr-defined]


def command_code(command: str, relative_to: Path | None = None) -> list[str]:
    """The source files a rule running ``mripipe <command>`` lists as its code inputs
    (:func:`mripipe.core.codegraph.code_files`, relative to ``relative_to``): the stage module
    and everything it imports, and the CLI module holding the command's adapter -- that file
    alone: the shared helpers and this dispatcher only parse arguments, and a changed command line
    re-runs a job anyway."""
    from mripipe.core.codegraph import code_files

    func = adapter(command)
    return code_files([str(func.stage_module)], relative_to=relative_to,  # type: ignore[attr-defined]
                      alone=[func.__module__])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mripipe`` console script."""
    ns = build_parser().parse_args(argv)
    setup_logging(ns.log)
    try:
        out = ns.func(ns)
    except (InputError, FileNotFoundError) as exc:
        # Bad input the code recognises on purpose: one line naming the file and the problem.
        log.error("%s", exc)
        return 1
    except Exception:
        # Anything else is a bug or an environment failure: the full traceback, in the log.
        log.exception("mripipe %s crashed", ns.command)
        return 1
    if isinstance(out, tuple):  # (user-facing text, exit status), e.g. `mripipe reproduce`
        if out[0]:
            show(out[0])
        return int(out[1])
    if isinstance(out, str):  # user-facing output of a command (e.g. `mripipe where`)
        show(out)
    return 0
