"""gunicorn settings for the sensor API: ``gunicorn -c python:grscos.gunicorn_conf
grscos.webapi.wsgi:app`` (``gr-scos run`` does this). Each may be overridden on the
command line (``-b``, ``-w``).

It lives outside ``grscos.webapi`` on purpose: gunicorn's master imports it, and
the master must not import GNU Radio. Its threads and locks would be forked into
every worker, which then hangs at exit waiting on a lock that no thread holds.

Threaded workers: an archive download streams for minutes and must not hold a
whole worker process, and the API's own work is short database queries.
"""

import multiprocessing

from grscos import lifeline
from grscos.settings import Settings

# The same settings as the rest of the sensor (environment, then settings file).
_settings = Settings.load()
bind = _settings.api_bind
workers = _settings.api_workers or min(2 * multiprocessing.cpu_count() + 1, 9)
worker_class = "gthread"
threads = 4
# Downloads take as long as the client reads; workers still heartbeat while streaming.
timeout = 60
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then, so that no slow leak can grow without bound.
max_requests = 20000
max_requests_jitter = 2000
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
loglevel = _settings.log_level.lower()
# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn), which two
# sensors (or a sensor and a test run) would share and delete under each other.
control_socket_disable = True


def on_starting(_server) -> None:
    """Started by ``gr-scos run``: end with it, even when it is SIGKILLed."""
    lifeline.hold_if_asked()
