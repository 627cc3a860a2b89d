"""The destination kinds: one table, ``kind`` -> (configuration model, client factory).

``kind: braze`` in the configuration file picks :class:`~streamsync.destinations.braze.
BrazeConfig` to validate the entry and, when ``deliver`` starts, the factory that builds
its API client. The table is written out here rather than filled by each kind's module as
a side effect of being imported: what exists is visible in one place, nothing depends on
import order, and the kinds' modules import only the shared base (``config.py``,
``client.py``), never this module. A third destination is a module with a
:class:`~streamsync.destinations.config.DestinationConfig` subclass and a
:class:`~streamsync.destinations.client.DestinationClient` subclass, and one entry in
:data:`KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import SecretStr, ValidationError

from streamsync.audiences.definition import DESTINATION_NAME
from streamsync.destinations.braze import BrazeClient, BrazeConfig
from streamsync.destinations.braze_cohorts import BrazeCohortClient
from streamsync.destinations.client import DestinationClient
from streamsync.destinations.config import DestinationConfig
from streamsync.destinations.moengage import MoEngageClient, MoEngageConfig

Model = TypeVar("Model", bound=DestinationConfig)
#: ``(config, name, secret, env) -> client``: ``secret`` is the destination's credential,
#: already read; ``env`` is where any further credential named in ``config`` is read from.
ClientFactory = Callable[[Model, str, SecretStr, Mapping[str, str] | None], DestinationClient]


@dataclass(frozen=True, slots=True)
class Kind(Generic[Model]):
    """One destination kind: the model its configuration entries validate against, and
    how its API client is built from a validated entry."""

    model: type[Model]
    client: ClientFactory[Model]


def _braze_client(
    config: BrazeConfig, name: str, secret: SecretStr, env: Mapping[str, str] | None
) -> DestinationClient:
    # mode cohorts: the partner endpoints, with the partner key read here (not at load).
    if config.mode == "cohorts":
        assert config.cohorts is not None
        return BrazeCohortClient(name, config, secret, config.cohorts.partner_key.read(env))
    return BrazeClient(name, config, secret)


def _moengage_client(
    config: MoEngageConfig, name: str, secret: SecretStr, env: Mapping[str, str] | None
) -> DestinationClient:
    return MoEngageClient(name, config, secret)


#: Every destination kind, by its ``kind`` value.
KINDS: Mapping[str, Kind[Any]] = {
    "braze": Kind(BrazeConfig, _braze_client),
    "moengage": Kind(MoEngageConfig, _moengage_client),
}


def build_client(
    config: DestinationConfig,
    name: str,
    secret: SecretStr,
    env: Mapping[str, str] | None = None,
) -> DestinationClient:
    """The API client of destination ``name`` (configured by ``config``, a model from
    :data:`KINDS`); ``env`` is where any further credentials named in it are read from."""
    kind = KINDS[config.kind]
    if not isinstance(config, kind.model):
        raise TypeError(f"destination {name!r}: kind {config.kind!r} needs a {kind.model.__name__}")
    return kind.client(config, name, secret, env)


def parse_destinations(data: Any) -> dict[str, DestinationConfig]:
    """``destinations:`` mapping -> validated models, each by its ``kind``.

    Raises ``ValueError`` with the destination's name for unknown kinds, so the
    configuration loader reports it like any other error.
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("destinations must be a mapping of name -> settings")
    result: dict[str, DestinationConfig] = {}
    for name, settings in data.items():
        if isinstance(settings, DestinationConfig):
            result[str(name)] = settings
            continue
        if not isinstance(name, str) or not DESTINATION_NAME.match(name):
            raise ValueError(f"destination name {name!r} must be letters, digits, '_', '.', '-'")
        if not isinstance(settings, dict):
            raise ValueError(f"destination {name!r} must be a mapping")
        kind = settings.get("kind")
        entry = KINDS.get(kind) if isinstance(kind, str) else None
        if entry is None:
            known = ", ".join(sorted(KINDS))
            raise ValueError(f"destination {name!r}: kind must be one of {known}")
        try:
            result[name] = entry.model.model_validate(settings)
        except ValidationError as exc:
            # Never the input values: they may be customer data or a pasted secret.
            problems = "; ".join(
                ".".join(str(part) for part in item["loc"]) + ": " + item["msg"]
                for item in exc.errors(include_input=False, include_url=False)
            )
            raise ValueError(f"destination {name!r}: {problems}") from None
    return result
