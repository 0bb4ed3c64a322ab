"""The real emulator starts, serves a function from template.yaml, and answers unknown paths."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.e2e


def test_healthz_answers_200(emulator) -> None:
    response = httpx.get(f"{emulator.url}/healthz", timeout=10, trust_env=False)

    assert response.status_code == 200, response.text
    assert "dlq_stats" in response.json()


def test_an_unknown_path_is_a_hec_shaped_404(emulator) -> None:
    response = httpx.post(f"{emulator.url}/no/such/route", content=b"{}", timeout=10, trust_env=False)

    assert response.status_code == 404
    assert response.json() == {"text": "The requested URL was not found on this server.", "code": 404}


def test_a_post_to_the_bare_collector_path_is_not_redirected(emulator) -> None:
    # No token: the function's own HEC answer (401) is expected; a 308 would mean the request never
    # reached it, and HEC clients do not follow redirects.
    response = httpx.post(f"{emulator.url}/services/collector", content=b'{"event": "x"}', trust_env=False)

    assert not response.is_redirect, response.headers
    assert "code" in response.json(), response.text
