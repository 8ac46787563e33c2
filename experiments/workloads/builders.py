"""Named builders of one kind (models, datasets): the built-ins, names registered in this process, and
import paths ``"my_pkg.module:function"`` resolved on use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

B = TypeVar("B", bound=Callable[..., object])


class BuilderRegistry(Generic[B]):
    """The builders a config key (``model.name``, ``data.name``) may name.

    ``setting`` is the config key (for errors), ``register_name`` the public registration function (for
    errors), ``signature`` how a builder is called (for errors), ``builtins`` the built-in builders
    (they cannot be replaced).
    """

    def __init__(self, setting: str, register_name: str, signature: str, builtins: Mapping[str, B]) -> None:
        self.setting = setting
        self.register_name = register_name
        self.signature = signature
        self.builtins: tuple[str, ...] = tuple(builtins)
        self.builders: dict[str, B] = dict(builtins)

    def names(self) -> list[str]:
        """Built-in names, then those registered in this process, in registration order."""
        return list(self.builders)

    def register(self, name: str, builder: B, *, replace: bool = False) -> None:
        """Make ``name`` valid in this process; ValueError when ``name`` is not a non-empty string
        without ``:`` (import paths are resolved, not registered), ``builder`` is not callable, or
        ``name`` is taken (unless ``replace``; built-ins cannot be replaced)."""
        fn = self.register_name
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(f"{fn}: name must be a non-empty string without ':', got {name!r}")
        if not callable(builder):
            raise ValueError(f"{fn}: builder for {name!r} must be callable, got {type(builder).__name__}")
        if name in self.builtins or (name in self.builders and not replace and self.builders[name] is not builder):
            raise ValueError(f"{fn}: {name!r} is already registered (registered: {self.names()}); "
                             "choose another name" + ("" if name in self.builtins else " or pass replace=True"))
        self.builders[name] = builder

    def lookup(self, name: str) -> B:
        """The builder of ``name``: a registered name, or an import path (imported now). ValueError
        listing the registered names and the import-path form for an unknown name; for an import path,
        one naming the setting for a module that does not import, a missing attribute or an object
        that is not callable."""
        from baselines.external import import_object, is_import_path

        if is_import_path(name):
            builder = import_object(name, self.setting, "callables", callable)
            if not callable(builder):
                kind = self.register_name.removeprefix("register_")
                raise ValueError(f"{self.setting}: {name!r} is a {type(builder).__name__}, not a callable {kind} "
                                 f"builder {self.signature}")
            return builder  # type: ignore[no-any-return]
        if name not in self.builders:
            raise ValueError(f"{self.setting} must be one of {self.names()} or an import path "
                             f"'module.path:function' of a {self.signature}, got {name!r}")
        return self.builders[name]
