"""Console helpers shared by the apps' admins."""

from __future__ import annotations

from core.fields import MoneyField
from core.money import format_money


class MoneyAdminMixin:
    """Every MoneyField of the model is shown as money (``$0.000103``, the one display rule)
    in the list and on read-only pages, never as nanos. Editable money fields keep their
    form field (``MoneyFormField``: amounts in, nanos stored)."""

    def _money_display(self, name: str):
        cache = self.__dict__.setdefault("_money_displays", {})
        if name not in cache:

            def show(obj):
                return format_money(getattr(obj, name))

            show.short_description = name.replace("_", " ")
            show.admin_order_field = name
            cache[name] = show
        return cache[name]

    def _is_money(self, name) -> bool:
        if not isinstance(name, str):
            return False
        try:
            return isinstance(self.model._meta.get_field(name), MoneyField)
        except Exception:  # not a model field: a method or an attribute of the admin
            return False

    def _swap(self, names):
        return [self._money_display(name) if self._is_money(name) else name for name in names]

    def get_list_display(self, request):
        return self._swap(super().get_list_display(request))

    def get_readonly_fields(self, request, obj=None):
        return self._swap(super().get_readonly_fields(request, obj))

    def get_fields(self, request, obj=None):
        readonly = set(super().get_readonly_fields(request, obj))
        view_only = not self.has_change_permission(request, obj)
        return [
            self._money_display(name) if self._is_money(name) and (view_only or name in readonly) else name
            for name in super().get_fields(request, obj)
        ]
