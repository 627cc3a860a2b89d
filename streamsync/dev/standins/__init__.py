"""Local stand-ins for Braze and MoEngage (aiohttp), so delivery can be tested end to end.

Each implements the endpoints streamsync uses as documented (auth, body shape, batch and
size limits, partial errors, rate limits with their headers), keeps the resulting
profiles readable (``GET /_standin/profiles``), injects faults on request
(``POST /_standin/faults``) and records every request that broke a documented limit or
came before a 429's reset (``GET /_standin/report``), so tests can assert none did.
"""

from streamsync.dev.standins.braze import BrazeStandIn
from streamsync.dev.standins.common import StandInAdmin, StandInServer
from streamsync.dev.standins.moengage import MoEngageStandIn

__all__ = ["BrazeStandIn", "MoEngageStandIn", "StandInAdmin", "StandInServer"]
