"""Shared fixtures. The suite runs on SQLite + in-process stores by default and on
PostgreSQL + Redis when DATABASE_URL / REDIS_URL are set (make test-full)."""

from __future__ import annotations

import pytest
from django.conf import settings

from tests import factories


def pytest_report_header(config):
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    return f"gateway stores: database={engine}, redis={'yes' if settings.REDIS_URL else 'no (in-process)'}"


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def user(db):
    return factories.UserFactory()


@pytest.fixture
def staff(db):
    return factories.UserFactory(username="operator", is_staff=True, is_superuser=True)
