"""Entry point: discovers sub-command modules, runs them, and turns errors into one line and an exit code."""
from __future__ import annotations

import errno
import importlib
import os
import pkgutil
import shlex
import sys
import warnings

import click

import repanalysis
from repanalysis.errors import INTERRUPTED, RepanalysisError, last_error_line

_NOT_COMMANDS = {"main", "common"}
_PATH_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.EEXIST,
                errno.ENAMETOOLONG, errno.ELOOP}


class _Group(click.Group):
    """Lists sub-commands by discovering modules in this package, importing each only when needed."""

    def _names(self) -> dict[str, str]:
        import repanalysis.cli as pkg

        found = {}
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name.startswith("_") or info.name in _NOT_COMMANDS:
                continue
            found[info.name.replace("_", "-")] = info.name
        return found

    def list_commands(self, ctx):
        return sorted(self._names())

    def get_command(self, ctx, cmd_name):
        module = self._names().get(cmd_name)
        if module is None:
            return None
        return importlib.import_module(f"repanalysis.cli.{module}").command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120, "terminal_width": 120})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(repanalysis.__version__, prog_name="repanalysis")
def cli(debug: bool) -> None:
    """repanalysis: what a training loss did to an image classifier.

    Extract logits and penultimate features once, then compare models on logit statistics,
    feature geometry, calibration and Grad-CAM localisation.
    """


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("REPANALYSIS_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]      # accepted anywhere, not only before the sub-command
    if not debug:
        warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    if not argv:                                     # bare `repanalysis`: the list of sub-commands
        with click.Context(cli, info_name="repanalysis") as ctx:
            click.echo(cli.get_help(ctx))
        return
    from repanalysis.dump import provenance

    provenance.COMMAND = shlex.join(["repanalysis", *argv])     # recorded in every result JSON this run writes
    try:
        cli.main(args=argv, prog_name="repanalysis", standalone_mode=False)
    except click.exceptions.Abort:
        _fail(INTERRUPTED, 130)
    except click.ClickException as exc:       # bad usage: one line, like every other error
        if debug:
            exc.show()
            sys.exit(exc.exit_code)
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        _fail(last_error_line(exc.format_message()) + hint, exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except RepanalysisError as exc:
        if debug:
            raise
        _fail(last_error_line(str(exc)), exc.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        _fail(INTERRUPTED, 130)
    except OSError as exc:
        if debug:
            raise
        _os_error(exc)
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        if debug:
            raise
        cause = _os_error_behind(exc)
        if cause is not None:          # e.g. matplotlib's PDF writer failing on ENOSPC, then in its own cleanup
            _os_error(cause)
        _fail(f"internal error ({type(exc).__name__}: {str(exc).strip()[:200]}); re-run with --debug for the "
              "traceback and report it", 1)


def _os_error(exc: OSError) -> None:
    if exc.errno == errno.ENOSPC:
        where = f" while writing {exc.filename}" if exc.filename else ""
        _fail(f"disk full{where} (no space left on device); nothing was replaced: free space and re-run the "
              "command", 1)
    if exc.filename and exc.errno in _PATH_ERRNOS:      # a path the user gave that cannot be used: bad input
        _fail(f"cannot use {exc.filename}: {exc.strerror}; expected a path that exists / can be written", 2)
    _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 1)


def _os_error_behind(exc: BaseException) -> OSError | None:
    """The OSError an exception was raised while handling (its __cause__ / __context__ chain), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
