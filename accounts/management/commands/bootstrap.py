"""First-run setup, safe to rerun: the operator, one provider, its models and their prices.

Production (the README's recipe)::

    manage.py bootstrap --upstream-url https://api.openai.com/v1 --upstream-key sk-... \\
        --models gpt-4o-mini,gpt-4o --price gpt-4o-mini=0.15,0.60,0.075 --price gpt-4o=2.50,10,1.25

creates no user but the operator and never invents a price: a model without ``--price`` is
created unpriced (its requests cost nothing) and the command says so loudly, once per model.

``--demo`` (what ``make run`` uses) adds the demo side: a ``demo`` user with $100 of credit
and a fresh password, the built-in list prices for the models it knows, and one demo key.
The demo key is replaced on every run (the previous one is revoked: keys are stored hashed,
so an old one can never be printed again), so reruns do not multiply keys. The last two lines
are exactly ``DEMO_PASSWORD=<password>`` and ``DEMO_API_KEY=<key>``.

A provider that exists is left as the operator set it. The one exception is the demo
provider while it still points at a loopback fake with no credentials (``make run`` on
another ``FAKE_UPSTREAM_PORT``); ``--update-provider`` forces the URL, type and key.

Each step is one small method called in order from ``handle``; a new step (another
provider, a tool's price) is one more method and one more line there.
"""

from __future__ import annotations

import os
import secrets
from decimal import Decimal
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts import services as account_services
from accounts.models import User
from billing import services as billing_services
from billing.models import BillingRecord, ModelPrice
from core.money import format_money, to_nanos
from keys import services as key_services
from keys.models import APIKey
from providers import services as provider_services
from providers.models import Model, Provider, ProviderModel

DEFAULT_UPSTREAM = "http://127.0.0.1:9100/v1"
DEMO_PROVIDER = "demo-upstream"
PROVIDER = "upstream"
DEMO_USER = "demo"
DEMO_CREDIT = to_nanos("100")
DEMO_KEY_MARK = {"bootstrap": "demo"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

# The demo's prices: list prices ($ per 1M tokens) of the models it knows, used with --demo only.
# (slug, type, input, output, cached input)
KNOWN_MODELS = {
    "gpt-4o-mini": (Model.Type.CHAT, "0.15", "0.60", "0.075"),
    "gpt-4o": (Model.Type.CHAT, "2.50", "10.00", "1.25"),
    "gpt-3.5-turbo-instruct": (Model.Type.COMPLETION, "1.50", "2.00", "0"),
    "text-embedding-3-small": (Model.Type.EMBEDDING, "0.02", "0", "0"),
    "claude-3-5-sonnet-latest": (Model.Type.CHAT, "3.00", "15.00", "0.30"),
}
DEFAULT_MODELS = "gpt-4o-mini,gpt-4o,gpt-3.5-turbo-instruct,text-embedding-3-small"
PRICE_FIELDS = ("input_per_1m", "output_per_1m", "cached_input_per_1m")


def parse_price(text: str) -> tuple[str, dict[str, int]]:
    """``"gpt-4o=2.50,10,1.25"`` -> ("gpt-4o", input, output, cached input in nanos per 1M)."""
    slug, sep, amounts = text.partition("=")
    parts = [part.strip() for part in amounts.split(",")]
    if not sep or not slug.strip() or not 2 <= len(parts) <= 3:
        raise CommandError(f"--price {text!r}: write MODEL=INPUT,OUTPUT[,CACHED_INPUT] in $ per 1M tokens")
    try:
        nanos = [to_nanos(part) for part in parts]
    except ValueError as exc:
        raise CommandError(f"--price {text!r}: {exc}") from None
    if any(value < 0 for value in nanos):
        raise CommandError(f"--price {text!r}: a price cannot be negative")
    return slug.strip(), dict(zip(PRICE_FIELDS, nanos, strict=False))


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
        billing_services.model_price_create(
            model=model, per_request=to_nanos(WEB_SEARCH_PRICE), note="bootstrap default: one web search"
        )
    if created:
        stdout.write(f"created model {WEB_SEARCH_MODEL!r}: ${WEB_SEARCH_PRICE} per web search")


class Command(BaseCommand):
    help = (
        "Create the operator, a provider, its models and prices (idempotent); "
        "--demo adds the demo user, list prices and a demo key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--demo", action="store_true", help="Also the demo user, list prices and a key.")
        parser.add_argument("--upstream-url", help=f"Base URL of the provider (--demo: {DEFAULT_UPSTREAM}).")
        parser.add_argument("--upstream-key", default="", help="API key of the provider.")
        parser.add_argument("--upstream-type", default="openai", choices=[t.value for t in Provider.Type])
        parser.add_argument("--provider-name", help=f"Default {PROVIDER!r} ({DEMO_PROVIDER!r} with --demo).")
        parser.add_argument(
            "--update-provider",
            action="store_true",
            help="Set the URL, type and key of an existing provider.",
        )
        parser.add_argument("--models", default=DEFAULT_MODELS, help="Comma-separated model slugs.")
        parser.add_argument(
            "--price",
            action="append",
            default=[],
            metavar="MODEL=IN,OUT[,CACHED]",
            help="Price of a model in $ per 1M tokens (repeat per model); no price, no charge.",
        )
        parser.add_argument("--mj-upstream-url", default="", help="A midjourney-proxy to add as a provider.")
        parser.add_argument("--mj-secret", default="", help="Its mj-api-secret.")

    def handle(self, *args, **options):
        models = [m.strip() for m in options["models"].split(",") if m.strip()]
        if not models:
            raise CommandError("--models names no model")
        prices = dict(parse_price(text) for text in options["price"])
        if unknown := sorted(set(prices) - set(models)):
            raise CommandError(f"--price names models not in --models: {', '.join(unknown)}")
        demo = options["demo"]
        name = options["provider_name"] or (DEMO_PROVIDER if demo else PROVIDER)
        url = options["upstream_url"] or (DEFAULT_UPSTREAM if demo else None)
        if url is None and not Provider.objects.filter(name=name).exists():
            raise CommandError(
                "give --upstream-url (and --upstream-key) of the provider to create, or --demo for the "
                "local demo against the bundled fake upstream"
            )
        if url is not None:
            url = url.rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise CommandError(f"--upstream-url must be an http(s) URL, got {url!r}")
        if demo:
            prices = {**self._list_prices(models), **prices}
        with transaction.atomic():
            self._operator()
            provider = self._provider(name, url, options, demo=demo)
            unpriced = [slug for slug in models if not self._model(provider, slug, prices.get(slug))]
            # more providers or tool prices: one method each (like _model), called here
            web_search_price(self.stdout)
            if options["mj_upstream_url"]:
                midjourney_setup(self.stdout, options["mj_upstream_url"], options["mj_secret"])
            if demo:
                password, key = self._demo_user(), self._demo_key()
        self._warn_unpriced(unpriced)
        if demo:
            self.stdout.write(f"DEMO_PASSWORD={password}")
            self.stdout.write(f"DEMO_API_KEY={key}")

    # --- steps -----------------------------------------------------------------------------------

    def _operator(self) -> None:
        username = os.environ.get("ADMIN_USERNAME", "admin")
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"operator {username!r} exists")
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
            self.stdout.write(f"created operator {username!r} with the password from ADMIN_PASSWORD")
        else:
            self.stdout.write(f"created operator {username!r} with password: {password}  (shown once)")

    def _provider(self, name: str, url: str | None, options: dict, *, demo: bool) -> Provider:
        key, kind = options["upstream_key"], options["upstream_type"]
        provider = Provider.objects.filter(name=name).first()
        if provider is None:
            provider = provider_services.provider_create(
                name=name, type=kind, base_url=url, api_key=key, health_check_model=""
            )
            self.stdout.write(f"created provider {name!r} -> {url}")
            return provider
        untouched_demo = demo and _is_local_fake(provider) and provider.type == kind and not key
        if url is not None and url != provider.base_url and (options["update_provider"] or untouched_demo):
            provider.base_url, provider.type = url, kind
            provider.save(update_fields=["base_url", "type", "updated_at"])
            self.stdout.write(f"provider {name!r} now points at {url}")
        elif url is not None and url != provider.base_url:
            self.stdout.write(
                f"provider {name!r} exists and points at {provider.base_url}: left as it is "
                "(an operator changed it; --update-provider to overwrite)"
            )
        else:
            self.stdout.write(f"provider {name!r} exists ({provider.base_url})")
        if key and options["update_provider"]:
            provider_services.provider_set_credentials(provider=provider, api_key=key)
        return provider

    def _list_prices(self, models: list[str]) -> dict[str, dict[str, int]]:
        known = {slug: KNOWN_MODELS[slug][1:] for slug in models if slug in KNOWN_MODELS}
        return {
            slug: {
                field: to_nanos(Decimal(amount)) for field, amount in zip(PRICE_FIELDS, amounts, strict=True)
            }
            for slug, amounts in known.items()
        }

    def _model(self, provider: Provider, slug: str, price: dict[str, int] | None) -> bool:
        """The model, its route on ``provider`` and, given one, its price; False: unpriced."""
        kind = KNOWN_MODELS.get(slug, (Model.Type.CHAT,))[0]
        model, created = Model.objects.get_or_create(
            slug=slug,
            defaults={"type": kind, "display_name": slug, "supports_tools": kind == Model.Type.CHAT},
        )
        ProviderModel.objects.get_or_create(provider=provider, model=model)
        if created:
            self.stdout.write(f"created model {slug!r}")
        if ModelPrice.objects.filter(model=model).exists():
            return True  # prices are versions the operator owns: a rerun adds none
        if price is None:
            return False
        billing_services.model_price_create(model=model, **price, note="bootstrap")
        shown = ", ".join(
            f"{field.removesuffix('_per_1m')} {format_money(v, 9)}" for field, v in price.items()
        )
        self.stdout.write(f"priced {slug!r} per 1M tokens: {shown}")
        return True

    def _warn_unpriced(self, unpriced: list[str]) -> None:
        if not unpriced:
            return
        self.stderr.write(
            self.style.WARNING(
                f"WARNING: no price for {', '.join(unpriced)}: requests to "
                f"{'it' if len(unpriced) == 1 else 'them'} cost nothing until you add one. Rerun with "
                "--price MODEL=INPUT,OUTPUT[,CACHED] ($ per 1M tokens), or add it in the console "
                "(/admin/billing/modelprice/add/) or POST /api/admin/prices/."
            )
        )

    def _demo_user(self) -> str:
        """The demo user (credit given once) with a fresh password, returned to print."""
        password = secrets.token_urlsafe(9)
        demo = User.objects.filter(username=DEMO_USER).first()
        if demo is None:
            demo = account_services.user_create(
                username=DEMO_USER, password=password, email="demo@example.com"
            )
            account_services.user_adjust_balance(
                user=demo, amount=DEMO_CREDIT, kind=BillingRecord.Kind.TOPUP, description="demo credit"
            )
            self.stdout.write(f"created demo user {DEMO_USER!r} with {format_money(DEMO_CREDIT)} of credit")
        else:
            account_services.user_change_password(user=demo, new_password=password)
        return password

    def _demo_key(self) -> str:
        """One live demo key: the previous bootstrap key is revoked, the user's own keys stay."""
        demo = User.objects.get(username=DEMO_USER)
        old = APIKey.objects.filter(user=demo, metadata__bootstrap=DEMO_KEY_MARK["bootstrap"]).exclude(
            status=APIKey.Status.REVOKED
        )
        for key in old:
            key_services.api_key_revoke(key=key)
        issued = key_services.api_key_create(
            user=demo, name=f"demo {timezone.now():%Y-%m-%d %H:%M}", metadata=dict(DEMO_KEY_MARK)
        )
        live = APIKey.objects.filter(user=demo).exclude(status=APIKey.Status.REVOKED).count()
        self.stdout.write(
            f"demo user {DEMO_USER!r} has {live} live key(s) (the previous demo key is revoked)"
        )
        return issued.plain


def _is_local_fake(provider: Provider) -> bool:
    return urlsplit(provider.base_url).hostname in LOOPBACK_HOSTS and not provider.credentials_encrypted


# --- Midjourney --------------------------------------------------------------------------

MJ_PROVIDER = "midjourney"
# per-action prices in dollars per task (the relay charges them when the upstream accepts
# a task and refunds them if it fails); operators change them like any price
MJ_PRICES = {
    "mj_imagine": "0.10",
    "mj_variation": "0.10",
    "mj_reroll": "0.10",
    "mj_upscale": "0.05",
    "mj_describe": "0.05",
    "mj_blend": "0.10",
    "mj_shorten": "0.05",
    "mj_zoom": "0.10",
    "mj_pan": "0.10",
    "mj_inpaint": "0.10",
    "mj_modal": "0.10",
    "mj_action": "0.10",
}


def midjourney_setup(stdout, url: str, secret: str) -> Provider:
    """A midjourney-proxy provider (``--mj-upstream-url``, ``--mj-secret``) serving every
    ``mj_*`` action model, each with its price; idempotent, and a price set before is kept."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CommandError(f"--mj-upstream-url must be an http(s) URL, got {url!r}")
    provider = Provider.objects.filter(name=MJ_PROVIDER).first()
    if provider is None:
        provider = provider_services.provider_create(
            name=MJ_PROVIDER, type=Provider.Type.MIDJOURNEY, base_url=url, api_key=secret
        )
        stdout.write(f"created provider {MJ_PROVIDER!r} -> {url}")
    else:
        provider_services.provider_update(provider=provider, data={"base_url": url}, api_key=secret or None)
        stdout.write(f"provider {MJ_PROVIDER!r} points at {url}")
    for slug, dollars in MJ_PRICES.items():
        model, _ = Model.objects.get_or_create(
            slug=slug, defaults={"type": Model.Type.IMAGE, "display_name": slug.replace("_", " ")}
        )
        ProviderModel.objects.get_or_create(provider=provider, model=model)
        if not ModelPrice.objects.filter(model=model).exists():
            billing_services.model_price_create(model=model, per_request=to_nanos(dollars), note="bootstrap")
    stdout.write(f"Midjourney actions priced per task: {', '.join(MJ_PRICES)}")
    return provider
