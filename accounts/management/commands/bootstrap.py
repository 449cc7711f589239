"""Idempotent first-run setup: admin, demo user with credit, demo provider, models, prices, key.

The last line of output is exactly ``DEMO_API_KEY=<key>``. A demo key is made when the demo
user has no active key whose plain text we could show, i.e. on every run: keys are stored
hashed, so an existing key can never be printed again, and each run issues a fresh one.
"""

from __future__ import annotations

import os
import secrets

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts import services as account_services
from accounts.models import User
from billing.models import BillingRecord, ModelPrice
from core.money import to_nanos
from keys import services as key_services
from keys.models import APIKey
from providers import services as provider_services
from providers.models import Model, Provider, ProviderModel

DEFAULT_UPSTREAM = "http://127.0.0.1:9100/v1"
DEMO_PROVIDER = "demo-upstream"
DEMO_CREDIT = to_nanos("100")

# (slug, type, input $/1M, output $/1M, cached input $/1M)
KNOWN_MODELS = {
    "gpt-4o-mini": (Model.Type.CHAT, "0.15", "0.60", "0.075"),
    "gpt-4o": (Model.Type.CHAT, "2.50", "10.00", "1.25"),
    "gpt-3.5-turbo-instruct": (Model.Type.COMPLETION, "1.50", "2.00", "0"),
    "text-embedding-3-small": (Model.Type.EMBEDDING, "0.02", "0", "0"),
    "claude-3-5-sonnet-latest": (Model.Type.CHAT, "3.00", "15.00", "0.30"),
}
DEFAULT_MODELS = "gpt-4o-mini,gpt-4o,gpt-3.5-turbo-instruct,text-embedding-3-small"
WEB_SEARCH_MODEL = "web_search"  # relay.tools.web_search.SEARCH_PRICE_MODEL
WEB_SEARCH_PRICE = "0.005"  # $ per search the gateway runs ($5 per 1,000, as search APIs charge)


def web_search_price(stdout) -> None:
    """The price of one web search run by the gateway: the ``per_request`` price of a model
    named ``web_search`` (no routes: it is never served), edited like any other price."""
    model, created = Model.objects.get_or_create(
        slug=WEB_SEARCH_MODEL,
        defaults={"type": Model.Type.CHAT, "display_name": "Web search (price per search)"},
    )
    if not ModelPrice.objects.filter(model=model).exists():
        ModelPrice.objects.create(
            model=model,
            per_request=to_nanos(WEB_SEARCH_PRICE),
            effective_from=timezone.now(),
            note="bootstrap default: one web search",
        )
    if created:
        stdout.write(f"created model {WEB_SEARCH_MODEL!r}: ${WEB_SEARCH_PRICE} per web search")


class Command(BaseCommand):
    help = "Create the admin, a demo user, provider, models, prices and key (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--upstream-url", default=DEFAULT_UPSTREAM, help="Base URL of the demo provider.")
        parser.add_argument("--upstream-key", default="", help="API key of the demo provider.")
        parser.add_argument("--upstream-type", default="openai", choices=["openai", "anthropic"])
        parser.add_argument("--models", default=DEFAULT_MODELS, help="Comma-separated model slugs.")

    def handle(self, *args, **options):
        models = [m.strip() for m in options["models"].split(",") if m.strip()]
        if not models:
            raise CommandError("--models names no model")
        upstream_url = options["upstream_url"].rstrip("/")
        if not upstream_url.startswith(("http://", "https://")):
            raise CommandError(f"--upstream-url must be an http(s) URL, got {upstream_url!r}")
        with transaction.atomic():
            self._admin()
            demo = self._demo_user()
            provider = self._provider(upstream_url, options["upstream_key"], options["upstream_type"])
            for slug in models:
                self._model(provider, slug)
            web_search_price(self.stdout)
            issued = key_services.api_key_create(user=demo, name=f"demo {timezone.now():%Y-%m-%d %H:%M}")
        self.stdout.write(f"demo user 'demo' has {APIKey.objects.filter(user=demo).count()} key(s)")
        self.stdout.write(f"DEMO_API_KEY={issued.plain}")

    def _admin(self) -> None:
        username = os.environ.get("ADMIN_USERNAME", "admin")
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"admin user {username!r} exists")
            return
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        account_services.user_create(
            username=username,
            password=password,
            email=os.environ.get("ADMIN_EMAIL", ""),
            is_staff=True,
            is_superuser=True,
        )
        if os.environ.get("ADMIN_PASSWORD"):
            self.stdout.write(f"created admin user {username!r} with the password from ADMIN_PASSWORD")
        else:
            self.stdout.write(f"created admin user {username!r} with password: {password}  (shown once)")

    def _demo_user(self) -> User:
        demo = User.objects.filter(username="demo").first()
        if demo is None:
            demo = account_services.user_create(username="demo", password=None, email="demo@example.com")
            account_services.user_adjust_balance(
                user=demo, amount=DEMO_CREDIT, kind=BillingRecord.Kind.TOPUP, description="demo credit"
            )
            self.stdout.write("created demo user 'demo' with $100.00 of credit")
        return demo

    def _provider(self, url: str, key: str, provider_type: str) -> Provider:
        provider = Provider.objects.filter(name=DEMO_PROVIDER).first()
        if provider is None:
            provider = provider_services.provider_create(
                name=DEMO_PROVIDER, type=provider_type, base_url=url, api_key=key, health_check_model=""
            )
            self.stdout.write(f"created provider {DEMO_PROVIDER!r} -> {url}")
        else:
            provider.base_url = url
            provider.type = provider_type
            provider.save(update_fields=["base_url", "type", "updated_at"])
            if key:
                provider_services.provider_set_credentials(provider=provider, api_key=key)
            self.stdout.write(f"provider {DEMO_PROVIDER!r} points at {url}")
        return provider

    def _model(self, provider: Provider, slug: str) -> None:
        kind, price_in, price_out, price_cached = KNOWN_MODELS.get(
            slug, (Model.Type.CHAT, "1.00", "2.00", "0")
        )
        model, created = Model.objects.get_or_create(
            slug=slug,
            defaults={"type": kind, "display_name": slug, "supports_tools": kind == Model.Type.CHAT},
        )
        ProviderModel.objects.get_or_create(provider=provider, model=model)
        if not ModelPrice.objects.filter(model=model).exists():
            ModelPrice.objects.create(
                model=model,
                input_per_1m=to_nanos(price_in),
                output_per_1m=to_nanos(price_out),
                cached_input_per_1m=to_nanos(price_cached),
                effective_from=timezone.now(),
                note="bootstrap default",
            )
        if created:
            self.stdout.write(f"created model {slug!r} with its price")
