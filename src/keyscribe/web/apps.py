from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "keyscribe.web"
    label = "web"
    verbose_name = "keyscribe web"
    default_auto_field = "django.db.models.BigAutoField"
