"""The ``momo-geo`` command line: a thin shell over the library.

Each command lives in its own module and is imported only when used, so ``momo-geo --help`` and
``momo-geo info`` start fast without loading torch. Every :class:`~momo_geo.errors.MomoGeoError`
(and any other failure) becomes one line on stderr and a non-zero exit; set ``MOMO_GEO_DEBUG=1``
to see the traceback of an unexpected error.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import signal
import sys
import warnings

import click

from momo_geo import __version__
from momo_geo.errors import MomoGeoError

# command name -> "module:attribute"; modules that are not present yet are simply not listed.
COMMANDS: dict[str, str] = {
    "info": "momo_geo.cli.info:info",
    "map": "momo_geo.cli.map:map_command",
    "map-archive": "momo_geo.cli.map_archive:map_archive_command",
    "sample-scene": "momo_geo.cli.sample:sample_scene",
    "pretrain": "momo_geo.cli.train:pretrain",
    "merge": "momo_geo.cli.train:merge",
    "evl": "momo_geo.cli.evl:evl",
    "import-weights": "momo_geo.cli.train:import_weights",
    "finetune": "momo_geo.cli.finetune:finetune",
    "evaluate": "momo_geo.cli.evaluate:evaluate",
    "models": "momo_geo.cli.models:models",
}


def _available(name: str) -> bool:
    module = COMMANDS[name].split(":")[0]
    return importlib.util.find_spec(module) is not None


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (or help lists it)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if _available(name))

    def invoke(self, ctx: click.Context) -> object:
        # Ctrl-C outside a run's own handling (while imports load): one line, not click's empty
        # line and "Aborted!".
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted("Interrupted; no partial output was left behind.", 130) from None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not _available(cmd_name):
            return None
        module_name, attribute = COMMANDS[cmd_name].split(":")
        return getattr(importlib.import_module(module_name), attribute)


def _verbose(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        quiet_libraries(True)
    return value


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="momo-geo")
@click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_verbose,
              is_eager=True, help="Show the libraries' own warnings (GDAL, pyogrio, numpy, "
                                  "torch) for any command (`map -v` does too).")
def cli() -> None:
    """Map Martian surface features in HiRISE, CTX and THEMIS scenes with MOMO."""


class Interrupted(Exception):  # noqa: N818 - what the user reads: "Interrupted: ..."
    """A run stopped by a signal: the one line to print and the exit status (128 + signal).

    Not a KeyboardInterrupt: click would turn that into its own ``Abort`` (an empty line and
    "Aborted!"), losing which scenes were completed.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def quiet_libraries(verbose: bool = False) -> None:
    """The libraries' own warnings (pyogrio's field-name laundering on every ``.shp``, numpy's
    runtime warnings, torch's, GDAL's through rasterio's logger) only with ``-v``.

    momo-geo says what matters itself, in one line each; a raw library warning is noise to a
    geologist and breaks "one line on stderr per problem". ``MOMO_GEO_DEBUG`` shows them too.
    """
    from momo_geo.outputs import QUIET_LIBRARIES

    verbose = verbose or bool(os.environ.get("MOMO_GEO_DEBUG"))
    QUIET_LIBRARIES["quiet"] = not verbose
    root = logging.getLogger()
    quiet = [h for h in root.handlers if getattr(h, "momo_geo_quiet", False)]
    if verbose:
        warnings.simplefilter("default")
        for handler in quiet:
            root.removeHandler(handler)
        return
    warnings.simplefilter("ignore")
    if not quiet:  # any handler on the root logger keeps logging's last-resort printer silent
        handler = logging.NullHandler()
        handler.momo_geo_quiet = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one-line errors (exit 1), clean stops, no tracebacks."""
    # Training imports matplotlib (through Lightning and TorchGeo); in a venv that also sees
    # Debian's matplotlib (QGIS set-ups) that prints a harmless two-line warning about 3-D axes,
    # which momo-geo never uses. Mapping does not import matplotlib at all.
    warnings.filterwarnings("ignore", message="Unable to import Axes3D")
    quiet_libraries()
    try:
        code = cli.main(args=argv, prog_name="momo-geo", standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code:
            sys.exit(code)  # click returns (not raises) a command's Exit(code) in this mode
    except Interrupted as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: no traceback now
        click.echo(str(exc), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: no traceback now
        click.echo("Interrupted; no partial output was left behind.", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # bad input is one line too, not click's usage block
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"Error: {' '.join(exc.format_message().split())}{hint}", err=True)
        sys.exit(1)  # like every other user error (docs/mapping.md), not click's 2
    except click.ClickException as exc:
        click.echo(f"Error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except MomoGeoError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # the last line of defence: still one line, still non-zero
        if os.environ.get("MOMO_GEO_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        click.echo(f"Error: {type(exc).__name__}: {message} "
                   "(set MOMO_GEO_DEBUG=1 for details)", err=True)
        sys.exit(1)
