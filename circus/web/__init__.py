"""circushttpd: the web console of one circusd or a fleet of them.

A client of circusd only (it never imports the arbiter): commands go out on each circusd's
control endpoint, events come in on its pub/sub endpoint, figures on circusd-stats's stats
endpoint when one runs. Layout:

``auth.py``     the login token, the optional password file, sessions and their CSRF tokens
``guard.py``    the middlewares every request passes: Host allow-list, authentication,
                CSRF and Origin, the security headers
``hub.py``      one :class:`~circus.web.hub.Endpoint` per circusd: connection, status,
                figures, events, output followers
``api.py``      the JSON API and the WebSocket feed
``pages.py``    the pages (Jinja2 templates, autoescaped) and the login form
``app.py``      the aiohttp application, put together from the above
``launch.py``   the ``circushttpd`` singleton watcher circusd runs with ``[circus] httpd``

The user documentation is docs/web.md.
"""

from __future__ import annotations
