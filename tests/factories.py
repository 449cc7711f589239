"""factory_boy factories for the models tests need."""

from __future__ import annotations

import factory
from django.utils import timezone

from accounts.models import User
from billing.models import ModelPrice
from core.money import to_nanos
from providers import crypto
from providers.models import Model, Provider, ProviderModel


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("correct horse battery staple")
    balance = to_nanos("10")


class ProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Provider

    name = factory.Sequence(lambda n: f"provider{n}")
    type = Provider.Type.OPENAI
    base_url = "http://127.0.0.1:9/v1"
    credentials_encrypted = factory.LazyFunction(lambda: crypto.encrypt("sk-upstream-secret"))


class ModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Model
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"model-{n}")
    type = Model.Type.CHAT


class RouteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProviderModel

    provider = factory.SubFactory(ProviderFactory)
    model = factory.SubFactory(ModelFactory)


class PriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelPrice

    model = factory.SubFactory(ModelFactory)
    input_per_1m = to_nanos("0.15")
    output_per_1m = to_nanos("0.60")
    cached_input_per_1m = to_nanos("0.075")
    effective_from = factory.LazyFunction(lambda: timezone.now() - timezone.timedelta(days=1))
