"""Test cohorts and percentage rollout: which customers a destination receives.

The Data Out guides' first step with a new destination or audience is "validate with a
small internal segment (employees / test accounts)", then "roll out gradually". A
:class:`Rollout` says both: an allowlist of customer ids that is always included, then a
``percent`` of every customer, chosen by :func:`rollout_bucket`. It applies to a whole
destination (``rollout:``) and, further, per audience (``rollout.audiences``): a member is
delivered when the destination's rule and its audience's rule both include the customer.

Why this hash:

* **Deterministic.** blake2b of the customer id, not ``hash()`` (salted per process): every
  replica, restart and replay agrees on who is in the 10%.
* **Independent of the holdout.** The holdout hashes ``<audience>\\0<customer>`` with no
  key (:func:`streamsync.audiences.engine.in_holdout`); this one is personalised
  (``person=b"ss-rollout"``), so the rollout's 10% is not the holdout's 10%.
* **The same for every audience.** The customer id alone is hashed, so a destination at
  10% gets the same customers in every audience (a test group sees the whole programme).
* **Monotonic.** ``bucket < percent``: raising the percentage only adds customers and
  lowering it only takes some away, so a step is a pure backfill or a pure detach.

Traits such as ``is_test`` are not available to delivery: the deltas and the membership
table carry the customer id and the identifiers a destination needs (email, external id),
not profile attributes. An audience that selects test accounts by trait is the way to
deliver by trait; the allowlist is the cohort delivery itself can apply.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

#: What :func:`rollout_bucket` returns is below this.
BUCKETS = 100.0

#: An allowlist: customer ids, none empty.
CustomerIds = frozenset[Annotated[str, Field(min_length=1)]]


def rollout_bucket(customer_id: str) -> float:
    """Where ``customer_id`` falls in [0, 100): included when below the percentage."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8, person=b"ss-rollout").digest()
    return int.from_bytes(digest, "big") / 2**64 * BUCKETS


class Cohort(BaseModel):
    """An allowlist and a percentage; ``percent`` is required, so ``customers`` alone is
    written ``{customers: [...], percent: 0}`` and nobody is rolled out by omission."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: CustomerIds = Field(
        default_factory=frozenset, description="customer ids always included (test accounts)"
    )
    percent: float = Field(
        ge=0, le=100, description="share of all customers included, by a stable hash"
    )


class Rollout(BaseModel):
    """A destination's cohort (``None``: every customer) and its audiences' own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: CustomerIds = Field(
        default_factory=frozenset, description="customer ids always included (test accounts)"
    )
    percent: float = Field(
        default=100.0, ge=0, le=100, description="share of all customers, by a stable hash"
    )
    audiences: dict[str, Cohort] = Field(
        default_factory=dict,
        description="per audience, a further cohort (both must include the customer)",
    )

    def includes(self, audience: str, customer_id: str) -> bool:
        """Whether ``customer_id`` receives ``audience`` (the hash computed once)."""
        own = self.audiences.get(audience)
        if self.percent >= BUCKETS and (own is None or own.percent >= BUCKETS):
            return True
        bucket = rollout_bucket(customer_id)
        if customer_id not in self.customers and bucket >= self.percent:
            return False
        return own is None or customer_id in own.customers or bucket < own.percent

    @property
    def everyone(self) -> bool:
        """Whether nobody is left out (no cohort at all)."""
        return self.percent >= BUCKETS and all(
            c.percent >= BUCKETS for c in self.audiences.values()
        )

    def named_audiences(self) -> list[str]:
        return list(self.audiences)


#: Every customer: the default of a destination without ``rollout:``.
EVERYONE = Rollout()
