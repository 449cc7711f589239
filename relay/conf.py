"""Django settings the relay reads on every request, without Django's lazy-object cost.

``django.conf.settings`` answers each attribute through ``LazyObject.__getattribute__``
(about 0.6 us a read; seven reads a request were 2 % of the relay's CPU). ``HOT.NAME`` is
the same value as a plain attribute, copied on first use and forgotten whenever a setting
changes (``setting_changed``: what the tests' overrides send).
"""

from __future__ import annotations

from django.conf import settings
from django.core.signals import setting_changed


class _Hot:
    def __getattr__(self, name: str):
        value = getattr(settings, name)
        self.__dict__[name] = value
        return value


HOT = _Hot()


def _forget(**kwargs) -> None:
    HOT.__dict__.clear()


setting_changed.connect(_forget)
