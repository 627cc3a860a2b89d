"""The ``identity:`` section: which records link an id to a person, and how long the
records of an id nobody has claimed yet are kept.

Emails are off by default: an address changes hands (a shared family inbox, a reused
work address), and a wrong link is permanent.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from streamsync.audiences.durations import DAY, parse_duration

#: Default ``anonymous_horizon``: records of an unlinked id older than this at the link
#: are dropped (and counted), which bounds what is held per anonymous visitor.
DEFAULT_ANONYMOUS_HORIZON_MS = 30 * DAY


def _duration_ms(value: object) -> int:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError("a duration is a number with a unit, such as 30d")
    return parse_duration(value)


class IdentityConfig(BaseModel):
    """Which links are made (each kind on or off) and the horizon of held records."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    anonymous: bool = Field(
        default=True,
        description="A track, page, screen or identify carrying both userId and "
        "anonymousId links the anonymousId to the userId.",
    )
    alias: bool = Field(default=True, description="An alias links its previousId to its userId.")
    email: bool = Field(
        default=False,
        description="An identify of a userId carrying traits.email links that email to "
        "the userId, so a webhook whose only identifier is the email counts as the "
        "person's (and an email never linked is no customer of its own).",
    )
    live: bool = Field(
        default=False,
        description="The evaluate service resolves links too (an identity task per "
        "partition of ids, through the internal topics <group_id>.identity and "
        "<group_id>.identity.forward); off, it skips anonymous records and aliases.",
    )
    anonymous_horizon_ms: Annotated[int, BeforeValidator(_duration_ms)] = Field(
        default=DEFAULT_ANONYMOUS_HORIZON_MS,
        gt=0,
        alias="anonymous_horizon",
        description="Records of an id not linked yet are kept this long: at the link, "
        "those older than this are dropped and counted.",
    )

    @property
    def resolves_live(self) -> bool:
        """Whether the evaluate service resolves links (:attr:`live` and a link kind)."""
        return self.live and self.resolves

    @property
    def resolves(self) -> bool:
        """Whether any link kind is on (otherwise records keep their own keys)."""
        return self.anonymous or self.alias or self.email
