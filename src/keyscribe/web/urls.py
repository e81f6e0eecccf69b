from django.urls import path, re_path

from keyscribe.web import views

urlpatterns = [
    path("", views.index, name="index"),
    path("upload", views.upload, name="upload"),
    path("jobs/", views.history, name="history"),
    path("jobs/<str:job_id>", views.job_page, name="job"),
    path("jobs/<str:job_id>/delete", views.delete_job, name="delete_job"),
    path("jobs/<str:job_id>/files/<str:kind>", views.download, name="download"),
    path("api/jobs", views.api_jobs, name="api_jobs"),
    path("api/jobs/<str:job_id>", views.api_job, name="api_job"),
    re_path(r"^static/vendor/(?P<package>[a-z]+)/(?P<path>[A-Za-z0-9#._/-]+)$", views.vendor, name="vendor"),
    re_path(r"^static/(?P<path>[A-Za-z0-9._/-]+)$", views.static, name="static"),
]

handler400 = "keyscribe.web.views.error_400"
handler404 = "keyscribe.web.views.error_404"
handler500 = "keyscribe.web.views.error_500"
