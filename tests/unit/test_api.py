"""The REST API refuses bad requests with the right status and a message, and changes nothing;
a slow request holds up no other."""
import threading
import urllib.request

import pytest
import yaml

from bench import generate
from tests.conftest import data_file
from vpcflow.harness.controller import ControllerProcess

pytestmark = pytest.mark.ops


@pytest.fixture(scope="module")
def ctl(tmp_path_factory):
    c = ControllerProcess(str(tmp_path_factory.mktemp("api")), data_file("two-hosts.yaml"), listen_host="127.0.0.1")
    c.start()
    yield c
    c.stop()


@pytest.mark.parametrize("method, path, token, raw, status, words", [
    ("GET", "/v1/switches", None, None, 401, "token"),
    ("GET", "/v1/switches", "wrong", None, 401, "token"),
    ("POST", "/v1/reload", "default", b"{not json", 400, "JSON"),
    ("POST", "/v1/reload", "default", b"[1, 2]", 400, "object"),
    ("GET", "/v1/nothing-here", "default", None, 404, "no route"),
    ("DELETE", "/v1/switches", "default", None, 405, "no route"),
])
def test_bad_requests(ctl, method, path, token, raw, status, words):
    generation = ctl.api("GET", "/v1/switches")[1]["generation"]
    got, body = ctl.api(method, path, token=token, raw=raw)
    assert got == status
    assert words in body["error"]
    assert ctl.api("GET", "/v1/switches")[1]["generation"] == generation


def test_metrics_need_no_token(ctl):
    status, text = ctl.api("GET", "/metrics", token=None)
    assert status == 200 and "vpcflow_model_generation" in text


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A controller of a deployment big enough that reading its file again takes seconds (10k
    interfaces), with no switch: a reload is the file read, checked and put in force."""
    work = tmp_path_factory.mktemp("api-big")
    path = work / "big.yaml"
    with open(path, "w") as f:
        yaml.dump(generate.sized("10k"), f, Dumper=yaml.CSafeDumper, sort_keys=False)
    c = ControllerProcess(str(work), str(path), listen_host="127.0.0.1")
    try:
        c.start(wait=False)
        c.wait_api(timeout=120)
        yield c
    finally:
        c.stop()


def test_reads_are_answered_while_a_reload_runs(big):
    """A reload of a big file (seconds) holds up neither a status read nor a metrics scrape on
    the metrics port: each request is served on its own."""
    done, answers = threading.Event(), {}

    def reload():
        try:
            answers["reload"] = big.api("POST", "/v1/reload", {}, timeout=120)
        finally:
            done.set()

    worker = threading.Thread(target=reload)
    worker.start()
    during = 0  # reads answered before the reload was
    try:
        while not done.is_set():
            status, body = big.api("GET", "/v1/switches", timeout=120)
            assert status == 200 and body["switches"]
            with urllib.request.urlopen(f"http://127.0.0.1:{big.metrics_port}/metrics", timeout=120) as resp:
                assert resp.status == 200 and b"vpcflow_model_generation" in resp.read()
            during += not done.is_set()
    finally:
        worker.join()
    assert answers["reload"][0] == 200, answers["reload"]
    assert during >= 3, f"only {during} reads answered while the reload ran"  # (one at a time: none)
