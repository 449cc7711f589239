"""The operator's view of Midjourney tasks: filters by user, status, action, mode and
provider; a thumbnail (through the gateway when MJ_IMAGE_PROXY is on, else a link to the
upstream's image URL); "refresh from upstream" reads the selected unfinished tasks now. Everything is
read-only (amounts shown as money): tasks change through the upstream, the poller and
the refund rules only."""

from django.contrib import admin, messages
from django.utils.html import format_html

from billing.admin import ReadOnlyAdmin

from .models import MidjourneyTask
from .polling import midjourney_tasks_refresh
from .wire import image_link, thumbnail_url


def _link(task: MidjourneyTask):
    """Without the image proxy: a link to the upstream's image (the console's policy
    shows same-origin images only)."""
    link = image_link(task)
    if not link:
        return "—"
    return format_html('<a href="{}" rel="noreferrer noopener" target="_blank">open image</a>', link)


@admin.register(MidjourneyTask)
class MidjourneyTaskAdmin(ReadOnlyAdmin):
    list_display = (
        "thumbnail",
        "task_id",
        "user",
        "action",
        "mode",
        "status",
        "progress",
        "provider",
        "charged",
        "refunded",
        "submitted_at",
    )
    list_filter = (
        "status",
        "action",
        "mode",
        ("provider", admin.RelatedOnlyFieldListFilter),
        ("user", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("user", "provider")
    search_fields = ("task_id", "upstream_task_id", "prompt", "user__username")
    actions = ["refresh_from_upstream"]
    # the client's notifyHook may carry its own secret: shown by host only
    exclude = ("notify_hook",)
    readonly_fields = [f.name for f in MidjourneyTask._meta.fields if f.name != "notify_hook"] + [
        "notify_hook_host",
        "image",
    ]

    @admin.display(description="Image")
    def thumbnail(self, obj):
        url = thumbnail_url(obj)
        if not url:
            return _link(obj)
        return format_html(
            '<img src="{}" alt="{} {}" loading="lazy" width="64" height="64" style="object-fit:cover">',
            url,
            obj.action.lower(),
            obj.task_id,
        )

    @admin.display(description="Image")
    def image(self, obj):
        url = thumbnail_url(obj)
        if not url:
            return _link(obj)
        return format_html(
            '<a href="{0}"><img src="{0}" alt="task {1}" style="max-width:32rem"></a>', url, obj.task_id
        )

    @admin.display(description="notifyHook host")
    def notify_hook_host(self, obj):
        from yarl import URL

        if not obj.notify_hook:
            return "—"
        try:
            return URL(obj.notify_hook).host or "—"
        except ValueError:
            return "—"

    @admin.action(description="Refresh from upstream")
    def refresh_from_upstream(self, request, queryset):
        tasks = list(queryset)
        unfinished = [t for t in tasks if not t.final]
        updated = midjourney_tasks_refresh(tasks=unfinished)
        skipped = len(tasks) - len(unfinished)
        text = f"{updated} of {len(unfinished)} unfinished task(s) read from their providers."
        if skipped:
            text += f" {skipped} finished task(s) left as they are."
        self.message_user(request, text, messages.SUCCESS if updated == len(unfinished) else messages.WARNING)
