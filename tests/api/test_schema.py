"""The OpenAPI schema: valid, served with the docs pages offline, and true to the API
(schemathesis drives every management endpoint with generated input)."""

from __future__ import annotations

import io

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests import factories


def test_schema_validates_without_warnings(db):
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null", stdout=out, stderr=out)


def test_schema_describes_relay_and_management(client, db):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/messages", "/v1/models", "/v1/usage",
                 "/auth/login", "/api/me/keys/", "/api/admin/providers/{provider_id}/"):  # fmt: skip
        assert path in paths, path
    assert paths["/v1/chat/completions"]["post"]["security"] == [{"relayKey": []}, {"relayKeyHeader": []}]
    assert "text/event-stream" in paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    # secrets are write-only: no response schema has them
    components = schema["components"]["schemas"]
    assert "api_key" not in components["Provider"]["properties"]
    assert "key_hash" not in components["Key"]["properties"]
    assert "code_hash" not in str(components)


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_work_offline(client, db, page):
    html = client.get(page).content.decode()
    start = client.get(f"{page}?script=").content.decode() if page == "/api/docs/" else html
    assert "/api/schema/" in start
    assert "cdn" not in html.lower() and "https://" not in html.replace("https://github.com", "")
    assets = [part.split('"')[0] for part in html.split('src="')[1:]]
    # Swagger UI's start-up code is the page's own ?script (no inline script: see the CSP)
    own = [asset for asset in assets if asset.startswith(f"{page}?")]
    assert own == ([f"{page}?script="] if page == "/api/docs/" else [])
    assert assets and all(
        asset.startswith("/static/drf_spectacular_sidecar/") for asset in assets if asset not in own
    )
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert "<script>" not in html


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/", "/dashboard/login/", "/admin/login/"])
def test_pages_have_a_content_security_policy(client, db, page):
    response = client.get(page)
    assert response.status_code == 200
    policy = dict(
        part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    script = client.get("/api/docs/?script=")
    assert script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in script.content


# --- schemathesis ---------------------------------------------------------------------------

# Loaded once at collection, over WSGI from the running Django app (no database needed).
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", WSGIHandler())
# Fuzzing (valid and invalid input) only: the exhaustive boundary-value "coverage" phase
# quadruples the run time of the suite's slowest test.
schema.config.phases.coverage.enabled = False


@pytest.fixture
def staff_token(db):
    """A staff access token; Django's per-request connection closing is off meanwhile (as in
    Django's test client), so the requests run inside the test's transaction."""
    from jwtauth.services import token_pair_issue

    staff = factories.UserFactory(username="schema-operator", is_staff=True, is_superuser=True, password=None)
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield token_pair_issue(user=staff)["access"]
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.include(path_regex=r"^/(api|auth)/").exclude(path_regex=r"/probe/$").parametrize()
@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, staff_token):
    """No 5xx and no answer that violates the schema, for generated (valid and invalid)
    input on every management endpoint, as staff. The relay paths are hand-written and
    served by the relay app (tested end to end elsewhere); the probe is left out because it
    calls out to whatever base URL a generated provider has."""
    case.call_and_validate(
        headers={"Authorization": f"Bearer {staff_token}"},
        checks=[
            not_a_server_error,
            response_schema_conformance,
            status_code_conformance,
            content_type_conformance,
        ],
    )
