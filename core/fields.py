"""``MoneyField``: an integer of nanos in the database, a decimal amount in forms."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.db import models

from core.money import input_str, to_nanos


class MoneyFormField(forms.CharField):
    """Shows and accepts amounts such as ``12.50``; cleans to integer nanos."""

    def __init__(self, *args, **kwargs):
        kwargs.pop("max_length", None)
        super().__init__(*args, **kwargs)
        self.widget.attrs.setdefault("inputmode", "decimal")

    def prepare_value(self, value):
        if isinstance(value, int):
            return input_str(value)
        return value

    def to_python(self, value):
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        try:
            return to_nanos(value.replace(",", "").replace("$", ""))
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid") from None


class MoneyField(models.BigIntegerField):
    description = "An exact amount of money in nanos (1e-9 of the currency unit)"

    def formfield(self, **kwargs):
        kwargs.setdefault("form_class", MoneyFormField)
        return super(models.IntegerField, self).formfield(**kwargs)
