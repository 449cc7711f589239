"""The console's index page names the providers that were disabled automatically."""

from django import template

from providers.models import Provider

register = template.Library()


@register.simple_tag
def auto_disabled_providers():
    return list(Provider.objects.filter(status=Provider.Status.AUTO_DISABLED).order_by("name"))
