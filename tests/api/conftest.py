"""Fixtures of the management API tests: users and API clients logged in with real JWTs."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests import factories

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Django's default hasher takes ~0.3 s a password by design; these tests make many."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def client_for(user) -> APIClient:
    """A client logged in the way programs do: POST /auth/login, then a Bearer token."""
    client = APIClient()
    response = client.post("/auth/login", {"username": user.username, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    client.tokens = response.json()
    return client


@pytest.fixture
def alice(db):
    return factories.UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return factories.UserFactory(username="bob")


@pytest.fixture
def operator(db):
    return factories.UserFactory(username="operator", is_staff=True)


@pytest.fixture
def api(alice):
    return client_for(alice)


@pytest.fixture
def bob_api(bob):
    return client_for(bob)


@pytest.fixture
def staff_api(operator):
    return client_for(operator)


@pytest.fixture
def anon():
    return APIClient()
