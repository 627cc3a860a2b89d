"""Reading the admin server back the way Prometheus and the kubelet do: over HTTP."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


async def _get(url: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, with the aiohttp client."""
    return asyncio.run(_get(url))


def scrape(base_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics`` as {(sample name, labels): value}."""
    status, content_type, body = get(f"{base_url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))
