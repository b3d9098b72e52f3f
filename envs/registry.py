"""Resolve a task from config values (``env.id``, ``env.kwargs``, ``env.entry_point``, ...).

One function, :func:`make_env`, turns the ``env`` section of a config into a ``gymnasium.Env``:

- ``env.id``: any registered gymnasium id, such as ``smt_rl/PassiveTMaze-v0``. ``MiniGrid-*`` ids
  get :class:`~envs.minigrid_memory.MiniGridSymbolic` (its own kwargs, e.g. ``movement_only``, are
  split from the env's), ``popgym-*`` ids get :class:`~envs.popgym_tasks.POPGymAdapter` (and no
  passive env checker: it would sit below the adapter and warn about what the adapter fixes).
  MiniGrid and POPGym are imported only when one of their ids is asked for. gymnasium's
  ``module:Id`` form (import ``module``, then look ``Id`` up) works too.
- ``env.entry_point``: ``"package.module:Name"``, a ``gymnasium.Env`` subclass or a function
  returning one, built through a gymnasium ``EnvSpec`` so the usual wrappers apply. When
  ``env.id`` is given as well it only names the task (the spec id); it is not looked up.

Config mistakes raise :class:`TaskConfigError` (a ``ValueError``) whose message names the config
field and the fix; an unknown id raises its subclass :class:`UnknownTaskError`.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec, load_env_creator

from .minigrid_memory import MiniGridSymbolic
from .popgym_tasks import POPGymAdapter
from .tmaze import TMAZE_ID

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

# Id prefix -> module whose import registers those ids (imported lazily).
_PROVIDERS: dict[str, str] = {"MiniGrid-": "minigrid", "BabyAI-": "minigrid", "popgym-": "popgym"}
# Id prefix -> wrapper applied to every env made from such an id.
_WRAPPERS: dict[str, type[gym.Wrapper]] = {"MiniGrid-": MiniGridSymbolic, "popgym-": POPGymAdapter}
# Wrappers that fix the raw env's API: gymnasium's passive checker would sit below them and warn
# about what they fix, so envs wrapped by them are made without it (tests run check_env on them).
_FIXES_API: tuple[type[gym.Wrapper], ...] = (POPGymAdapter,)
# Keys that gym.make itself would swallow if passed inside env.kwargs.
_MAKE_KEYS: dict[str, str] = {
    "max_episode_steps": "set env.max_episode_steps instead",
    "disable_env_checker": "it is not configurable here",
}
_ENTRY_POINT_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_ENTRY_POINT_FORM = "'package.module:Name' (a gymnasium.Env subclass or a function returning one)"


class TaskConfigError(ValueError):
    """A task (``env.*``) config value cannot be turned into an env; the message says the fix."""


class UnknownTaskError(TaskConfigError):
    """``env.id`` is not a registered task."""


def make_env(
    env_id: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    entry_point: str | None = None,
    max_episode_steps: int | None = None,
) -> gym.Env:
    """Build the task that the config values ``env.id`` / ``env.entry_point`` describe.

    Args:
        env_id: a registered gymnasium id (``smt_rl/PassiveTMaze-v0``, ``MiniGrid-MemoryS7-v0``,
            ``popgym-RepeatFirstEasy-v0``, ``CartPole-v1``, ...). With ``entry_point`` it is only
            the task's name.
        kwargs: constructor arguments of the env (for MiniGrid ids also the wrapper's
            ``movement_only``).
        entry_point: ``"package.module:Name"`` of your own env class or factory; takes precedence
            over the registry.
        max_episode_steps: if given, a ``TimeLimit`` of this many steps (overrides the id's own).

    Returns:
        The env, wrapped by ``gym.make`` (env checker, order enforcing, time limit) and, for
        MiniGrid / POPGym ids, by this package's adapter.

    Raises:
        UnknownTaskError: ``env_id`` is not registered (the message suggests close matches).
        TaskConfigError: a bad kwarg, entry point, ``max_episode_steps``, or neither id nor
            entry point given.
    """
    env_kwargs = _check_kwargs(kwargs)
    _check_max_episode_steps(max_episode_steps)
    if entry_point is not None:
        return _make_from_entry_point(entry_point, env_id, env_kwargs, max_episode_steps)
    if env_id is None:
        raise TaskConfigError(
            "No task given: set env.id to a registered id (e.g. "
            f"{TMAZE_ID!r}; memory tasks: {', '.join(MEMORY_TASK_IDS)}) or env.entry_point to "
            f"{_ENTRY_POINT_FORM}."
        )
    return _make_from_id(env_id, env_kwargs, max_episode_steps)


# ---------------------------------------------------------------------------------------------
# Registered ids


def _make_from_id(env_id: str, kwargs: dict[str, Any], max_episode_steps: int | None) -> gym.Env:
    """``gym.make`` a registered id with validated kwargs, plus the adapter its prefix asks for."""
    if not isinstance(env_id, str) or not env_id:
        raise TaskConfigError(f"env.id must be a non-empty string, got {env_id!r}.")
    spec = _find_spec(env_id)
    wrapper = next((w for p, w in _WRAPPERS.items() if spec.id.startswith(p)), None)
    wrapper_kwargs: dict[str, Any] = {}
    wrapper_keys: list[str] = []
    if wrapper is not None:
        wrapper_keys, _ = _parameters(wrapper, skip=("env",))
        wrapper_kwargs = {k: kwargs.pop(k) for k in wrapper_keys if k in kwargs}

    creator = _creator_of(spec)
    name = f"{spec.id} ({_describe(spec.entry_point)})"
    _check_keys(kwargs, creator, name, extra_keys=wrapper_keys, preset=spec.kwargs)
    try:
        env = gym.make(
            spec.id,
            max_episode_steps=max_episode_steps,
            disable_env_checker=True if wrapper in _FIXES_API else None,
            **kwargs,
        )
    except TypeError as e:
        _raise_if_kwarg_error(e, kwargs, creator, name, wrapper_keys)
        raise
    except TaskConfigError:
        raise
    except ValueError as e:
        raise TaskConfigError(f"env.kwargs: {spec.id} rejected its arguments {kwargs}: {e}") from e
    if wrapper is not None:
        try:
            env = wrapper(env, **wrapper_kwargs)
        except ValueError as e:
            env.close()
            raise TaskConfigError(f"env.kwargs: {e}") from e
    return env


def _find_spec(env_id: str) -> EnvSpec:
    """The registered spec of ``env_id``, importing the package that registers it if needed."""
    lookup_id = env_id
    if ":" in env_id:  # gymnasium's "module:Id" form
        module, _, lookup_id = env_id.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UnknownTaskError(
                f"env.id {env_id!r}: cannot import module {module!r} ({e}). The 'module:Id' form "
                f"imports a module that registers Id; for your own class use env.entry_point "
                f"{_ENTRY_POINT_FORM}."
            ) from e
    for prefix, module in _PROVIDERS.items():
        if lookup_id.startswith(prefix):
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise TaskConfigError(
                    f"env.id {env_id!r} needs the package {module!r}, which is not installed "
                    f"({e}); install it (pip install {module})."
                ) from e
    try:
        return gym.spec(lookup_id)
    except gym.error.Error as e:
        raise UnknownTaskError(_unknown_id_message(env_id, lookup_id, str(e))) from None


def _unknown_id_message(env_id: str, lookup_id: str, reason: str) -> str:
    """The message for an unknown id: close matches, the memory tasks, and the alternatives."""
    for module in set(_PROVIDERS.values()):  # so that their ids can be suggested too
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    known = sorted(set(gym.registry) | set(MEMORY_TASK_IDS))
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(lookup_id.lower(), list(lowered), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(lowered[c]) for c in close)}?" if close else ""
    return (
        f"env.id: unknown task {env_id!r} (gymnasium: {reason}).{hint}\n"
        f"Memory tasks of this project: {', '.join(MEMORY_TASK_IDS)}.\n"
        "Any id of gymnasium's registry works (list them with gymnasium.pprint_registry()); "
        f"for your own env set env.entry_point to {_ENTRY_POINT_FORM}."
    )


def _creator_of(spec: EnvSpec) -> Callable[..., Any] | None:
    """The class or function a spec builds its env with, or None if it cannot be loaded."""
    if callable(spec.entry_point):
        return spec.entry_point
    try:
        return load_env_creator(spec.entry_point)
    except Exception:  # gym.make will report the failure itself
        return None


def _describe(entry_point: Any) -> str:
    if isinstance(entry_point, str):
        return entry_point
    return f"{getattr(entry_point, '__module__', '?')}:{getattr(entry_point, '__qualname__', '?')}"


# ---------------------------------------------------------------------------------------------
# Entry points


def _make_from_entry_point(
    entry_point: str, env_id: str | None, kwargs: dict[str, Any], max_episode_steps: int | None
) -> gym.Env:
    """Build ``entry_point(**kwargs)`` through an ``EnvSpec`` named ``env_id`` (or the path)."""
    creator = _load_entry_point(entry_point)
    module, _, attr = entry_point.partition(":")
    spec_id = env_id if env_id is not None else f"{module}.{attr}"
    if not isinstance(spec_id, str):
        raise TaskConfigError(f"env.id must be a string, got {spec_id!r}.")
    try:
        spec = EnvSpec(
            id=spec_id,
            entry_point=entry_point,
            kwargs=dict(kwargs),
            max_episode_steps=max_episode_steps,
        )
    except gym.error.Error as e:
        raise TaskConfigError(
            f"env.id {spec_id!r} cannot name a task: {e} Use e.g. 'MyTask-v0', or leave env.id "
            "unset to name it after env.entry_point."
        ) from None
    name = f"env.entry_point {entry_point!r}"
    _check_keys(kwargs, creator, name, extra_keys=[])
    try:
        return gym.make(spec)
    except TypeError as e:
        if "must inherit from the gymnasium.Env class" in str(e):
            raise TaskConfigError(
                f"env.entry_point {entry_point!r} did not return a gymnasium.Env ({e}). It must "
                f"be {_ENTRY_POINT_FORM}."
            ) from e
        _raise_if_kwarg_error(e, kwargs, creator, name, [])
        raise
    except TaskConfigError:
        raise
    except ValueError as e:
        raise TaskConfigError(f"env.kwargs: {name} rejected its arguments {kwargs}: {e}") from e


def _load_entry_point(entry_point: Any) -> Callable[..., Any]:
    """Import and check ``"package.module:Name"``; every failure names env.entry_point."""
    if not isinstance(entry_point, str) or not _ENTRY_POINT_RE.match(entry_point):
        raise TaskConfigError(
            f"env.entry_point must be of the form {_ENTRY_POINT_FORM}, got {entry_point!r}."
        )
    module_name, _, attr = entry_point.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise TaskConfigError(
                f"env.entry_point {entry_point!r}: no module named {e.name!r}. Check the spelling "
                f"and that the package is installed or on PYTHONPATH; the expected form is "
                f"{_ENTRY_POINT_FORM}."
            ) from e
        raise TaskConfigError(
            f"env.entry_point {entry_point!r}: importing {module_name!r} failed because one of "
            f"its own imports is missing: {e}."
        ) from e
    if not hasattr(module, attr):
        candidates = sorted(
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and inspect.isclass(v) and issubclass(v, gym.Env)
        )
        close = difflib.get_close_matches(attr, [n for n in vars(module) if not n.startswith("_")])
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listed = f" Env classes there: {', '.join(candidates)}." if candidates else ""
        raise TaskConfigError(
            f"env.entry_point {entry_point!r}: module {module_name!r} has no attribute "
            f"{attr!r}.{hint}{listed} The expected form is {_ENTRY_POINT_FORM}."
        )
    obj = getattr(module, attr)
    if inspect.isclass(obj):
        if not issubclass(obj, gym.Env):
            raise TaskConfigError(
                f"env.entry_point {entry_point!r}: class {attr} is not a gymnasium.Env subclass. "
                f"It must be {_ENTRY_POINT_FORM}."
            )
    elif not callable(obj):
        raise TaskConfigError(
            f"env.entry_point {entry_point!r}: {attr} is a {type(obj).__name__}, not a class or "
            f"function. It must be {_ENTRY_POINT_FORM}."
        )
    return obj


# ---------------------------------------------------------------------------------------------
# Argument checks


def _check_kwargs(kwargs: Any) -> dict[str, Any]:
    """A fresh dict of ``env.kwargs``, which must be a mapping with string keys (or None)."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise TaskConfigError(
            f"env.kwargs must be a mapping of constructor arguments (e.g. {{'length': 100}}), got "
            f"{type(kwargs).__name__}: {kwargs!r}."
        )
    bad = [k for k in kwargs if not isinstance(k, str)]
    if bad:
        raise TaskConfigError(f"env.kwargs keys must be strings, got {bad!r}.")
    return dict(kwargs)


def _check_max_episode_steps(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TaskConfigError(
            f"env.max_episode_steps must be a positive integer or null (no extra time limit), got "
            f"{value!r}."
        )


def _parameters(creator: Any, skip: tuple[str, ...] = ()) -> tuple[list[str], bool]:
    """Keyword-passable parameter names of ``creator`` and whether it also takes ``**kwargs``."""
    try:
        signature = inspect.signature(creator)
    except (TypeError, ValueError):
        return [], True
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = signature.parameters.values()
    names = [p.name for p in params if p.kind in kinds and p.name not in skip]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return names, takes_any


def _known_keys(creator: Any) -> list[str]:
    """Parameter names of ``creator``; for a class taking ``**kwargs``, also its bases' ones.

    Only for messages: a base class's parameters may be set by the subclass itself.
    """
    if creator is None:
        return []
    names, takes_any = _parameters(creator)
    if inspect.isclass(creator):
        for base in creator.__mro__[1:]:
            if not takes_any or base in (gym.Env, object) or "__init__" not in vars(base):
                continue
            more, takes_any = _parameters(base.__init__, skip=("self",))
            names += [n for n in more if n not in names]
    return names


def _kwarg_error(key: str, accepted: list[str], name: str, complete: bool) -> TaskConfigError:
    """The error for one bad key of env.kwargs, listing what is accepted."""
    if key in _MAKE_KEYS:
        return TaskConfigError(
            f"env.kwargs: {key!r} is not an argument of {name}; {_MAKE_KEYS[key]}."
        )
    close = difflib.get_close_matches(key, accepted, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(accepted) if accepted else "(none)"
    label = "Accepted keys" if complete else "Known keys include"
    return TaskConfigError(f"env.kwargs: unknown key {key!r} for {name}.{hint} {label}: {listed}.")


def _check_keys(
    kwargs: dict[str, Any],
    creator: Any,
    name: str,
    extra_keys: list[str],
    preset: Mapping[str, Any] | None = None,
) -> None:
    """Reject keys the constructor cannot take and required arguments that are missing.

    ``preset`` holds arguments the registered spec already passes. Unknown keys are only caught
    here when the signature is closed (no ``**kwargs``); the rest surfaces as a TypeError later.
    """
    if creator is None:
        return
    names, takes_any = _parameters(creator)
    accepted = names + [k for k in extra_keys if k not in names]
    for key in kwargs:
        if key in _MAKE_KEYS or (not takes_any and key not in names):
            raise _kwarg_error(key, accepted, name, complete=not takes_any)
    given = set(kwargs) | set(preset or {})
    missing = [k for k in _required(creator) if k not in given]
    if missing:
        raise TaskConfigError(
            f"env.kwargs: {name} needs the argument(s) {', '.join(map(repr, missing))}; add them "
            f"to env.kwargs (accepted keys: {', '.join(accepted)})."
        )


def _required(creator: Any) -> list[str]:
    """Names of the parameters of ``creator`` that have no default."""
    try:
        signature = inspect.signature(creator)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        p.name
        for p in signature.parameters.values()
        if p.kind in kinds and p.default is inspect.Parameter.empty
    ]


_UNEXPECTED_KWARG = re.compile(
    r"unexpected keyword argument '(\w+)'|multiple values for (?:keyword )?argument '(\w+)'"
)


def _raise_if_kwarg_error(
    error: TypeError, kwargs: dict[str, Any], creator: Any, name: str, extra_keys: list[str]
) -> None:
    """Turn a constructor's TypeError about one of ``kwargs`` into a TaskConfigError."""
    match = _UNEXPECTED_KWARG.search(str(error))
    if not match:
        return
    key = match.group(1) or match.group(2)
    if key not in kwargs:
        return
    names = _known_keys(creator)
    accepted = names + [k for k in extra_keys if k not in names]
    if match.group(2):
        raise TaskConfigError(
            f"env.kwargs: {key!r} is set by {name} itself and cannot be passed; remove it."
        ) from error
    raise _kwarg_error(key, accepted, name, complete=False) from error
