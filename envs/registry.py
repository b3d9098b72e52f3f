"""Build a task from config values (``env.id``, ``env.kwargs``, ``env.entry_point``, ...).

``smt_rl/<id>`` is ``<id>`` under this package's adapter: MiniGridSymbolic for ``MiniGrid-*`` and
``BabyAI-*``, POPGymAdapter for ``popgym-*`` (their modules' factories are the entry points, which
import MiniGrid / POPGym when called). Plain ``MiniGrid-*`` and ``popgym-*`` ids mean that twin in
:func:`make_env` (plain ``BabyAI-*`` ids do not: the wrapper drops the mission these tasks need).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec, load_env_creator

from .tmaze import TMAZE_ID

NAMESPACE = "smt_rl"
MEMORY_TASK_IDS: tuple[str, ...] = (
    TMAZE_ID,
    "MiniGrid-MemoryS7-v0",
    "MiniGrid-MemoryS9-v0",
    "MiniGrid-MemoryS11-v0",
    "MiniGrid-MemoryS13-v0",
    "MiniGrid-MemoryS13Random-v0",
    "MiniGrid-MemoryS17Random-v0",
    "popgym-RepeatFirstEasy-v0",
    "popgym-RepeatPreviousEasy-v0",
    "popgym-CountRecallEasy-v0",
    "popgym-AutoencodeEasy-v0",
    "popgym-PositionOnlyCartPoleEasy-v0",
)
_MINIGRID = ("minigrid", "envs.minigrid_memory:make_minigrid_symbolic")
_POPGYM = ("popgym", "envs.popgym_tasks:make_popgym")
# Id prefix -> (package registering such ids, entry point building one under its adapter).
_ADAPTERS = {"MiniGrid-": _MINIGRID, "BabyAI-": _MINIGRID, "popgym-": _POPGYM}
_FACTORIES = (_MINIGRID[1], _POPGYM[1])
_ENTRY_POINT = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_FORM = "'package.module:Name' (a gymnasium.Env subclass or a function returning one)"
_KWARG_ERROR = re.compile(r"unexpected keyword argument '(\w+)'|multiple values for \D*'(\w+)'")
# Providers a core install (``pip install smt-rl``) leaves out: package -> (its tasks, the extra).
OPTIONAL_PROVIDERS = {"popgym": ("POPGym tasks", "popgym")}


class TaskConfigError(ValueError):
    """A task (``env.*``) config value cannot be turned into an env; the message says the fix."""


class UnknownTaskError(TaskConfigError):
    """``env.id`` is not a registered task."""


class MissingPackageError(TaskConfigError, ImportError):
    """The task's provider is an optional package that is not installed (the message names the
    extra: ``pip install 'smt-rl[popgym]'``)."""


def import_provider(package: str, env_id: str) -> None:
    """Import the package that registers ``env_id``'s task.

    Raises:
        MissingPackageError: an optional provider (POPGym) is not installed.
        TaskConfigError: any other import failure.
    """
    try:
        importlib.import_module(package)
    except ImportError as e:
        missing = isinstance(e, ModuleNotFoundError) and e.name == package.split(".")[0]
        if missing and package in OPTIONAL_PROVIDERS:
            tasks, extra = OPTIONAL_PROVIDERS[package]
            raise MissingPackageError(
                f"env.id {env_id!r}: {tasks}: the {package!r} package is not installed (a core "
                f"install leaves it out); pip install 'smt-rl[{extra}]', or 'smt-rl[all]' for "
                "every extra."
            ) from e
        raise TaskConfigError(f"env.id {env_id!r}: cannot import {package!r} ({e}).") from e


def register_adapted(env_id: str) -> str:
    """Register ``smt_rl/<env_id>`` (``env_id`` under its adapter) unless it is; return that id."""
    twin = f"{NAMESPACE}/{env_id}"
    if twin not in gym.registry:  # no checker or order enforcing above gym.make(env_id)'s own
        entry_point = next(ep for p, (_, ep) in _ADAPTERS.items() if env_id.startswith(p))
        flags = {"order_enforce": False, "disable_env_checker": True}
        gym.register(twin, entry_point, kwargs={"env_id": env_id}, **flags)
    return twin


def make_env(
    env_id: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    entry_point: str | None = None,
    max_episode_steps: int | None = None,
) -> gym.Env:
    """Build the task that the config values ``env.id`` / ``env.entry_point`` describe.

    Args:
        env_id: a registered id (``smt_rl/PassiveTMaze-v0``, ``MiniGrid-MemoryS7-v0``,
            ``popgym-RepeatFirstEasy-v0``, ``CartPole-v1``, ``module:Id``, ...); with
            ``entry_point``, the task's name.
        kwargs: constructor arguments of the env (for MiniGrid also ``movement_only``, ...).
        entry_point: ``"package.module:Name"`` of your own env class or factory.
        max_episode_steps: if given, a ``TimeLimit`` of this many steps (below any adapter).

    Raises:
        UnknownTaskError: ``env_id`` is not registered (the message suggests close matches).
        TaskConfigError: a bad kwarg, entry point or ``max_episode_steps``, or no task given.
    """
    env_kwargs = _check_values(kwargs, max_episode_steps)
    if entry_point is not None:
        spec = _entry_point_spec(entry_point, env_id, env_kwargs, max_episode_steps)
        return _build(lambda: gym.make(spec), f"env.entry_point {entry_point!r}", spec, env_kwargs)
    if env_id is None:
        tasks = ", ".join(MEMORY_TASK_IDS)
        raise TaskConfigError(
            f"No task given: set env.id (memory tasks: {tasks}) or env.entry_point."
        )
    spec, field = _find_spec(env_id), f"env.id {env_id!r}"
    limit = {"max_episode_steps": max_episode_steps}
    if spec.entry_point not in _FACTORIES:
        return _build(lambda: gym.make(spec.id, **limit, **env_kwargs), field, spec, env_kwargs)
    # An adapted task is built by its factory, not gym.make: gym.make would relabel it as the twin
    # (whose spec re-makes it with gym.make's wrappers on top) and put the time limit above the
    # adapter (where MiniGridSymbolic does not see the time-out).
    factory = load_env_creator(spec.entry_point)
    return _build(lambda: factory(**spec.kwargs, **env_kwargs, **limit), field, spec, env_kwargs)


def _find_spec(env_id: Any) -> EnvSpec:
    """The spec ``env_id`` stands for, importing its provider (and registering the twin)."""
    if not isinstance(env_id, str) or not env_id:
        raise TaskConfigError(f"env.id must be a non-empty string, got {env_id!r}.")
    module, _, name = env_id.rpartition(":")  # gymnasium's "module:Id" form
    plain = name.removeprefix(f"{NAMESPACE}/")
    provider = next((package for p, (package, _) in _ADAPTERS.items() if plain.startswith(p)), "")
    for package in filter(None, (module, provider)):
        import_provider(package, env_id)
    if provider:
        twin = register_adapted(_registered(plain, env_id).id)
        name = twin if plain != name or not plain.startswith("BabyAI-") else name
    return _registered(name, env_id)


def _registered(name: str, env_id: str) -> EnvSpec:
    """``gym.spec(name)``; an unknown id gets close matches and this project's memory tasks."""
    try:
        return gym.spec(name)
    except gym.error.Error as e:
        lowered = {k.lower(): k for k in [*gym.registry, *MEMORY_TASK_IDS]}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(lowered[c]) for c in close)}?" if close else ""
        raise UnknownTaskError(
            f"env.id: unknown task {env_id!r} (gymnasium: {e}).{hint}\nMemory tasks of this "
            f"project: {', '.join(MEMORY_TASK_IDS)}.\nAny id of gymnasium's registry works "
            f"(gymnasium.pprint_registry()); for your own env set env.entry_point to {_FORM}."
        ) from None


def _entry_point_spec(
    entry_point: Any, env_id: Any, kwargs: dict[str, Any], max_episode_steps: int | None
) -> EnvSpec:
    """An ``EnvSpec`` for ``entry_point(**kwargs)`` named ``env_id`` (or after the entry point)."""
    if not isinstance(entry_point, str) or not _ENTRY_POINT.match(entry_point):
        raise TaskConfigError(f"env.entry_point must be of the form {_FORM}, got {entry_point!r}.")
    try:
        load_env_creator(entry_point)
    except Exception as e:
        raise _entry_point_error(entry_point, e) from e
    spec_id = entry_point.replace(":", ".") if env_id is None else env_id
    try:
        return EnvSpec(spec_id, entry_point, kwargs=kwargs, max_episode_steps=max_episode_steps)
    except (gym.error.Error, TypeError) as e:
        fix = "Use e.g. 'MyTask-v0', or leave env.id unset."
        raise TaskConfigError(f"env.id {spec_id!r} cannot name a task: {e} {fix}") from None


def _entry_point_error(entry_point: str, error: Exception) -> TaskConfigError:
    """What went wrong in ``load_env_creator(entry_point)``, in one line naming env.entry_point."""
    module_name, attr = entry_point.split(":")
    field, module = f"env.entry_point {entry_point!r}", sys.modules.get(module_name)
    form = f" The expected form is {_FORM}."
    if isinstance(error, ModuleNotFoundError) and f"{module_name}.".startswith(f"{error.name}."):
        reason = f"no module named {error.name!r} (check the spelling and that it is installed)."
    elif isinstance(error, AttributeError) and module is not None and not hasattr(module, attr):
        close = difflib.get_close_matches(attr, [n for n in dir(module) if n[0] != "_"], n=1)
        reason = f"module {module_name!r} has no attribute {attr!r}."
        reason += f" Did you mean {close[0]!r}?" if close else ""
    else:  # the module itself failed: its own error, on one line
        reason, form = f"importing {module_name!r} raised {type(error).__name__}: {error}", ""
        reason = " ".join(reason.split())
    return TaskConfigError(f"{field}: {reason}{form}")


def _build(build: Callable[[], gym.Env], field: str, spec: EnvSpec, kwargs: dict) -> gym.Env:
    """``build()``, with the config mistakes it reveals raised as TaskConfigErrors."""
    try:
        return build()
    except TaskConfigError:
        raise
    except TypeError as e:
        if "must inherit from the gymnasium.Env" in str(e) or "object is not callable" in str(e):
            raise TaskConfigError(f"{field} gave no gymnasium.Env ({e}); use {_FORM}.") from e
        unexpected, duplicate = m.groups() if (m := _KWARG_ERROR.search(str(e))) else (None, None)
        if (unexpected or duplicate) not in kwargs:
            raise
        if duplicate:
            raise TaskConfigError(f"env.kwargs: {duplicate!r} is set by {field}; remove it.") from e
        accepted, more = _accepted_keys(spec)
        close = difflib.get_close_matches(unexpected, accepted, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(accepted) or "(none)"
        label = "Accepted keys include" if more else "Accepted keys"
        message = f"unknown key {unexpected!r} for {field}.{hint} {label}: {listed}."
        raise TaskConfigError(f"env.kwargs: {message}") from e
    except ValueError as e:
        raise TaskConfigError(f"env.kwargs: {field} rejected its arguments {kwargs}: {e}") from e


def _check_values(kwargs: Any, max_episode_steps: Any) -> dict[str, Any]:
    """A fresh dict of ``env.kwargs`` (string keys, none of gym.make's own); checks the limit."""
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise TaskConfigError(
            "env.kwargs must be a mapping of constructor arguments with string keys (e.g. "
            f"{{'length': 100}}), got {type(kwargs).__name__}: {kwargs!r}."
        )
    make_args = sorted({"max_episode_steps", "disable_env_checker"} & set(kwargs))
    if make_args:
        raise TaskConfigError(
            f"env.kwargs: {make_args[0]!r} is an argument of gym.make, not of the env; remove it "
            "(a time limit is env.max_episode_steps)."
        )
    if max_episode_steps is not None and (
        type(max_episode_steps) is not int or max_episode_steps <= 0
    ):
        raise TaskConfigError(
            "env.max_episode_steps must be a positive integer or null (no extra time limit), "
            f"got {max_episode_steps!r}."
        )
    return dict(kwargs)


def _accepted_keys(spec: EnvSpec) -> tuple[list[str], bool]:
    """The keyword arguments the spec's creator names (an adapted task: the env's, then the
    adapter's), and whether it takes others too (``**kwargs``)."""
    creator = spec.entry_point
    params = inspect.signature(load_env_creator(creator) if isinstance(creator, str) else creator)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [p.name for p in params.parameters.values() if p.kind in kinds]
    more = any(p.kind is p.VAR_KEYWORD for p in params.parameters.values())
    if spec.entry_point in _FACTORIES:
        env_names, more = _accepted_keys(gym.spec(spec.kwargs["env_id"]))
        names = env_names + [n for n in names if n not in ("env_id", "max_episode_steps")]
    return names, more
