"""The ``momo-geo`` command line: a thin shell over the library.

Each command lives in its own module and is imported only when used, so ``momo-geo --help`` and
``momo-geo info`` start fast without loading torch. Every :class:`~momo_geo.errors.MomoGeoError`
(and any other failure) becomes one line on stderr and a non-zero exit; set ``MOMO_GEO_DEBUG=1``
to see the traceback of an unexpected error.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
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
    "evl": "momo_geo.cli.train:evl",
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

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not _available(cmd_name):
            return None
        module_name, attribute = COMMANDS[cmd_name].split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="momo-geo")
def cli() -> None:
    """Map Martian surface features in HiRISE, CTX and THEMIS scenes with MOMO."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one-line errors, clean Ctrl-C, no tracebacks."""
    # Training imports matplotlib (through Lightning and TorchGeo); in a venv that also sees
    # Debian's matplotlib (QGIS set-ups) that prints a harmless two-line warning about 3-D axes,
    # which momo-geo never uses. Mapping does not import matplotlib at all.
    warnings.filterwarnings("ignore", message="Unable to import Axes3D")
    try:
        cli.main(args=argv, prog_name="momo-geo", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("Interrupted; no partial output was left behind.", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # bad input is one line too, not click's usage block
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"Error: {' '.join(exc.format_message().split())}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
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
