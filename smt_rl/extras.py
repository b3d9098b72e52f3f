"""Optional packages and the extras that install them (``pip install 'smt-rl[EXTRA]'``).

A core install (``pip install smt-rl``) leaves these out; a feature that needs one imports it
through :func:`require` when it runs, so a missing package fails there, naming the extra, and
nowhere else.
``pyproject.toml``'s ``[project.optional-dependencies]`` must list each package under its extra
(and every extra under ``all``); a test checks that it does.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from smt_rl.errors import MissingExtraError


@dataclass(frozen=True)
class OptionalPackage:
    """One optional package."""

    package: str  # its name on the package index (pip install NAME)
    extra: str  # the smt-rl extra that installs it


OPTIONAL: dict[str, OptionalPackage] = {  # importable module -> package and extra
    "sb3_contrib": OptionalPackage("sb3-contrib", "baselines"),
    "popgym": OptionalPackage("popgym", "popgym"),
    "matplotlib": OptionalPackage("matplotlib", "plots"),
    "ray": OptionalPackage("ray", "ray"),
}


def install_hint(module: str) -> str:
    """``pip install 'smt-rl[EXTRA]'`` for an optional module."""
    return f"pip install 'smt-rl[{OPTIONAL[module].extra}]'"


def missing_message(module: str, feature: str) -> str:
    """What a user reads when ``feature`` needs the optional ``module`` and it is not installed."""
    package = OPTIONAL[module].package
    return (
        f"{feature}: the {package!r} package is not installed (a core install leaves it out); "
        f"{install_hint(module)}, or 'smt-rl[all]' for every extra."
    )


def require(module: str, feature: str) -> ModuleType:
    """Import the optional ``module`` (a key of :data:`OPTIONAL`) for ``feature``.

    Raises:
        MissingExtraError: ``module`` is not installed; the message names ``feature`` and the
            extra that installs it. (A module that is installed but fails inside its own import
            raises its own error.)
    """
    if module not in OPTIONAL:
        raise KeyError(f"{module!r} is not an optional module; known: {', '.join(OPTIONAL)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there; something it imports is not
        raise MissingExtraError(missing_message(module, feature)) from e
