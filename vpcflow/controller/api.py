"""The REST API (JSON, bearer token) and GET /metrics, on one small WSGI app.

Every route reads or changes the Controller through its methods; a rejected request changes
nothing. Each request is served in a thread of its own: a slow one (a reload reading a big file,
drop counters waiting for every switch) holds up no read and no metrics scrape. Changes are made
one at a time, in the order they come. Errors: 400 malformed, 401 no valid token, 403 not an
attacher, 404 unknown id, 405 wrong method, 409 conflict.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from vpcflow.controller import metrics, nat_usage, records

LOG = logging.getLogger("vpcflow.api")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 500: "Internal Server Error", 501: "Not Implemented"}


def _json_body(environ):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(400, "bad Content-Length") from None
    raw = environ["wsgi.input"].read(length) if length else b""
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    return body


class Api:
    def __init__(self, ctl, conf, app):
        self.ctl = ctl
        self.conf = conf
        self.app = app
        # one change at a time: a remap id is taken from the count of remaps, and each change
        # starts from the model the one before it left
        self.changing = threading.Lock()
        self.routes = [
            ("GET", r"/v1/switches", self.switches),
            ("POST", r"/v1/reload", self.reload),
            ("GET", r"/v1/drops", self.drops),
            ("GET", r"/v1/nat", self.nat),
            ("GET", r"/v1/interfaces", self.interfaces),
            ("POST", r"/v1/interfaces/([^/]+)/attach", self.attach),
            ("POST", r"/v1/interfaces/([^/]+)/detach", self.detach),
            ("GET", r"/v1/elastic-ips", self.elastic_ips),
            ("POST", r"/v1/elastic-ips/([^/]+)/remap", self.remap_elastic_ip),
            ("GET", r"/v1/remaps", self.remaps),
            ("GET", r"/v1/remaps/([^/]+)", self.remap),
        ]

    def authorize(self, environ):
        token = self.conf.api_token
        given = environ.get("HTTP_AUTHORIZATION", "")
        if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ApiError(401, "missing or invalid bearer token")

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        try:
            if path == "/metrics" and method == "GET":
                return self._respond(start_response, 200, metrics.render(self.ctl, self.app),
                                     metrics.CONTENT_TYPE)
            status, body = self.dispatch(method, path, environ)
        except ApiError as e:
            status, body = e.status, {"error": e.message}
        except Exception:  # a bug must not take the controller down; the log names the request
            LOG.exception("API %s %s failed", method, path)
            status, body = 500, {"error": "internal error, see the controller log"}
        return self._respond(start_response, status, json.dumps(body, indent=1).encode() + b"\n",
                             "application/json")

    def dispatch(self, method, path, environ):
        allowed = False
        for m, pattern, handler in self.routes:
            match = re.fullmatch(pattern, path)
            if match is None:
                continue
            allowed = True
            if m != method:
                continue
            self.authorize(environ)
            if method != "POST":
                return 200, handler({}, *match.groups())
            body = _json_body(environ)
            with self.changing:
                return 200, handler(body, *match.groups())
        raise ApiError(405 if allowed else 404, f"no route {method} {path}")

    @staticmethod
    def _respond(start_response, status, payload: bytes, content_type):
        start_response(f"{status} {_REASONS.get(status, '')}",
                       [("Content-Type", content_type), ("Content-Length", str(len(payload)))])
        return [payload]

    # --- routes -------------------------------------------------------------------------------
    def switches(self, body):
        status = self.ctl.status()
        membership = getattr(self.app, "membership_status", None)  # store mode: the instances sharing the switches
        status.update(membership() if membership else {})
        return status

    def interfaces(self, body):
        dep = self.ctl.deployment
        return {"interfaces": {name: {"network": i.network, "ips": [str(ip) for ip in i.ips], "mac": i.mac,
                                      "attach_to": i.attach_to, "switch": _switch_of(dep, i.attach_to)}
                               for name, i in dep.interfaces.items()}}

    def attach(self, body, iface):
        remap_id = self.ctl.next_remap_id()
        return self._change(lambda dep: records.attach(dep, iface, body, remap_id, self.ctl.draining()))

    def elastic_ips(self, body):
        dep = self.ctl.deployment
        out = {}
        for e in dep.elastic_ips:
            instance = dep.interfaces[e.interface].attach_to
            out[str(e.ip)] = {"interface": e.interface, "instance": instance, "switch": _switch_of(dep, instance)}
        return {"elastic_ips": out}

    def remap_elastic_ip(self, body, ip):
        remap_id = self.ctl.next_remap_id()
        return self._change(lambda dep: records.remap_elastic_ip(dep, ip, body, remap_id, self.ctl.draining()))

    def remaps(self, body):
        return {"remaps": [r.public() for r in self.ctl.remaps.values()]}

    def remap(self, body, remap_id):
        r = self.ctl.remaps.get(remap_id)
        if r is None:
            raise ApiError(404, f"no remap {remap_id!r}")
        return r.public()

    def detach(self, body, iface):
        return self._change(lambda dep: records.detach(dep, iface, body))

    def _change(self, make):
        try:
            generation, remap = self.ctl.change(make)
        except records.RecordError as e:
            raise ApiError(e.status, e.message) from None
        self.app.sync_all(phased=True)
        return {"generation": generation, **({"remap": remap.public()} if remap else {})}

    def nat(self, body):
        return {"blocks": nat_usage.block_usage(self.ctl, getattr(self.app, "appctl_targets", {}))}

    def drops(self, body):
        return {"drops": self.app.drop_counters()}

    def reload(self, body):
        problems = self.app.reload()
        if problems:
            raise ApiError(400, "deployment file rejected, nothing changed: " + "; ".join(map(str, problems)))
        return {"generation": self.ctl.generation}


def _switch_of(dep, instance):
    """The switch an instance runs on; None for no instance (a detached interface)."""
    return dep.instances[instance].switch if instance else None


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per request (os-ken's hub runs native threads; green ones where it is told to
    and the standard library is patched)."""

    daemon_threads = True  # a request being answered does not hold up the controller's exit
    allow_reuse_address = True


class _Handler(WSGIRequestHandler):
    """An access line per request, at debug level."""

    def log_message(self, format, *args):
        LOG.debug("%s " + format, self.client_address[0], *args)


def serve(ctl, conf, app):
    """The API, and GET /metrics on its own port too (metrics_port 0: on the API port only)."""
    api = Api(ctl, conf, app)
    if conf.metrics_port:
        metrics_server = make_server(conf.metrics_host, conf.metrics_port, api, _Server, _Handler)
        LOG.info("metrics on %s:%d/metrics", conf.metrics_host, conf.metrics_port)
        threading.Thread(target=metrics_server.serve_forever, name="metrics", daemon=True).start()
    server = make_server(conf.api_host, conf.api_port, api, _Server, _Handler)
    LOG.info("REST API on %s:%d", conf.api_host, conf.api_port)
    server.serve_forever()
