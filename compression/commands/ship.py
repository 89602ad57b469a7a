"""`ship`: copy only what one backend reads into a new folder (e.g. models/NAME)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from compression.commands.common import add_package_arg

if TYPE_CHECKING:
    from compression.ship import ShipConfig

HELP = "copy only what one backend reads into a new folder (e.g. models/NAME)"
READS_DATA = False  # it copies or converts a package: no --data, --oos-label or --domains


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The package, the slim copy's folder, the backend and the name."""
    from compression.ship import ShipConfig

    add_package_arg(p)
    p.add_argument("--output-dir", type=Path, required=True, help="the slim package folder to write")
    p.add_argument("--backend", default=ShipConfig.backend, help="the backend whose files are kept")
    p.add_argument("--name", help="package name in the new manifest (default: the package's)")


def config_from_args(args: argparse.Namespace) -> ShipConfig:
    """The ShipConfig the options describe."""
    from compression.ship import ShipConfig

    return ShipConfig(args.package, args.output_dir, args.backend, args.name)


def run(args: argparse.Namespace) -> int:
    """Write the slim package and print its folder."""
    from app.package import PackageError
    from compression.ship import ship

    try:
        print(ship(config_from_args(args)))
    except (ValueError, PackageError) as exc:
        raise SystemExit(f"ship: {exc}") from None
    return 0
