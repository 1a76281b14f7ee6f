"""The REST API refuses bad requests with the right status and a message, and changes nothing."""
import pytest

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
