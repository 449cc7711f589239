from django.apps import AppConfig


class JwtAuthConfig(AppConfig):
    name = "jwtauth"
    verbose_name = "API sessions (JWT)"
    default_auto_field = "django.db.models.BigAutoField"
